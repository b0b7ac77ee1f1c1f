// paddle_kure CUDA kernels and their launchers, free of Paddle: raw device
// pointers, an element count and a stream. kurtosis_op.cu wraps them as Paddle
// operators; tests/cuda/ builds them with nvcc alone and runs them on any GPU.
//
// This header carries its own moment math (it does not include
// kurtosis_moments.h), so the CPU and CUDA kernels can change independently.
//
// Design, for speed near the memory limit:
// - kurtosis and kurtosis_decay are one kernel launch each, at every size.
//   A tensor that fits one block runs as an ordinary launch; a larger one as a
//   cooperative launch of at most as many blocks as fit on the GPU at once,
//   with one grid-wide barrier between the moment pass and the gradient pass.
// - No division per element: each thread accumulates power sums of
//   d = x - c, where the shift c is one element of its block (the same c for
//   the whole block), so block sums are plain additions. Each block turns its
//   sums into central moments once, and blocks are combined with the pairwise
//   update of Chan et al. / Pebay (2008). Because c is one of the block's own
//   values, |mean - c|^2 <= n_block m2, which bounds the cancellation when the
//   sums are centred: 1e4 + N(0, 1) in float32 keeps full double precision,
//   where raw sums of x^k would lose all of it.
// - The gradient pass walks the tensor in the reverse order of the moment
//   pass, so its first reads hit the part of x still in L2.
// - float16 and bfloat16 are read as 16-bit values and accumulated in double,
//   like float32: half the bytes per element do not make a tensor smaller in
//   count (its power sums would drift in float just as float32's do), and on
//   data-centre GPUs (FP64 at half the FP32 rate) the conversion and 6 double
//   operations per element should stay behind memory (to be measured: the
//   float-to-double conversions are the tightest for 16-bit inputs). On GPUs
//   with slow FP64 (GeForce, 1/64 rate) the moment pass is compute-bound.
//
// Stats, the float64 [kStatsSize] buffer the forward pass saves for backward:
//   [mean, m2, m3, kurtosis, zero_gradient]
// with population moments m_k = (1/n) sum (x - mean)^k. zero_gradient is 1 when
// K does not depend on x: fewer than 2 values or zero variance (K is reported
// as 0, which no real tensor has) and n = 2 or 3, where K is the constant 1 or
// 1.5. NaN or Inf anywhere in x make every moment, K and the gradient NaN.
#pragma once

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace kure_cuda {

constexpr int kStatsSize = 5;
constexpr int kThreads = 256;
// 16-byte loads each thread keeps in flight.
constexpr int kUnroll = 4;
// A block is given at least this many 16-byte loads per thread: below it, more
// blocks cost more in merging than they gain in bandwidth.
constexpr int kMinLoadsPerThread = 4;
constexpr int kMaxBlocks = 4096;
constexpr int kMaxDevices = 64;

// Count, mean and central sums M_k = sum (x - mean)^k.
struct Moments {
  double n, mean, M2, M3, M4;
};

// Count and sums of d^k, d = x - shift.
struct PowerSums {
  double n, s1, s2, s3, s4;
};

struct Stats {
  double n, mean, m2, m3, kurtosis;
  bool zero_gradient;
};

namespace detail {

// The moment math is host-and-device so that tests/cuda can check it on the host.
#define KURE_HD __host__ __device__ __forceinline__

// Element conversions: every dtype is computed in double.
KURE_HD double to_double(double v) { return v; }
KURE_HD double to_double(float v) { return static_cast<double>(v); }
KURE_HD double to_double(__half v) {
  return static_cast<double>(__half2float(v));
}
KURE_HD double to_double(__nv_bfloat16 v) {
  return static_cast<double>(__bfloat162float(v));
}

template <typename T>
KURE_HD T from_double(double v);
template <>
KURE_HD double from_double<double>(double v) {
  return v;
}
template <>
KURE_HD float from_double<float>(double v) {
  return static_cast<float>(v);  // round to nearest
}
template <>
KURE_HD __half from_double<__half>(double v) {
  return __double2half(v);
}
template <>
KURE_HD __nv_bfloat16 from_double<__nv_bfloat16>(double v) {
  return __double2bfloat16(v);
}

// kVec elements loaded or stored as one access (16 bytes on the vector path).
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// Adds d's powers; the count is kept apart, in integers (s->n set at the end).
KURE_HD void add_powers(PowerSums* s, double d) {
  const double d2 = d * d;
  s->s1 += d;
  s->s2 += d2;
  s->s3 = std::fma(d2, d, s->s3);
  s->s4 = std::fma(d2, d2, s->s4);
}

KURE_HD PowerSums add(const PowerSums& a, const PowerSums& b) {
  return {a.n + b.n, a.s1 + b.s1, a.s2 + b.s2, a.s3 + b.s3, a.s4 + b.s4};
}

// Pairwise update of two disjoint sets' moments (Chan et al.; Pebay 2008).
KURE_HD Moments merge(const Moments& a, const Moments& b) {
  if (a.n == 0.0) return b;
  if (b.n == 0.0) return a;
  const double n = a.n + b.n;
  const double inv_n = 1.0 / n;
  const double wa = a.n * inv_n, wb = b.n * inv_n;
  const double d = b.mean - a.mean;
  const double d2 = d * d;
  const double cross = a.n * wb;  // na nb / n
  Moments r;
  r.n = n;
  r.mean = a.mean + d * wb;
  r.M2 = a.M2 + b.M2 + d2 * cross;
  r.M3 = a.M3 + b.M3 + d2 * d * cross * (wa - wb) + 3.0 * d * (wa * b.M2 - wb * a.M2);
  r.M4 = a.M4 + b.M4 + d2 * d2 * cross * (wa * wa - wa * wb + wb * wb) +
         6.0 * d2 * (wa * wa * b.M2 + wb * wb * a.M2) + 4.0 * d * (wa * b.M3 - wb * a.M3);
  return r;
}

// Central moments from power sums about the shift c (one division).
KURE_HD Moments centre(const PowerSums& s, double c) {
  Moments m{};
  if (s.n == 0.0) return m;
  const double delta = s.s1 / s.n;  // mean - c
  m.n = s.n;
  m.mean = c + delta;
  m.M2 = s.s2 - delta * s.s1;
  m.M3 = s.s3 - delta * (3.0 * s.s2 - 2.0 * delta * s.s1);
  m.M4 = s.s4 - delta * (4.0 * s.s3 - delta * (6.0 * s.s2 - 3.0 * delta * s.s1));
  // Rounding can leave a zero sum slightly negative; NaN must stay NaN.
  if (m.M2 < 0.0) m.M2 = 0.0;
  if (m.M4 < 0.0) m.M4 = 0.0;
  return m;
}

KURE_HD Stats finalize(const Moments& m) {
  Stats s;
  s.n = m.n;
  s.mean = m.mean;
  s.m2 = m.n > 0.0 ? m.M2 / m.n : 0.0;
  s.m3 = m.n > 0.0 ? m.M3 / m.n : 0.0;
  // A single NaN/Inf value is not degenerate: it makes the mean NaN, and K too.
  const bool degenerate = (m.n < 2.0 || s.m2 == 0.0) && std::isfinite(s.mean);
  // (m4 / m2) / m2: m2^2 underflows for tiny values.
  s.kurtosis = degenerate ? 0.0 : ((m.M4 / m.n) / s.m2) / s.m2;
  // For n = 2 and 3, K is 1 and 1.5 whatever x is (unless x holds NaN/Inf).
  const bool constant_k = !degenerate && (m.n == 2.0 || m.n == 3.0) && std::isfinite(s.kurtosis);
  if (constant_k) s.kurtosis = m.n == 2.0 ? 1.0 : 1.5;
  s.zero_gradient = degenerate || constant_k;
  return s;
}

__device__ __forceinline__ void store_stats(const Stats& s, double* dst) {
  dst[0] = s.mean;
  dst[1] = s.m2;
  dst[2] = s.m3;
  dst[3] = s.kurtosis;
  dst[4] = s.zero_gradient ? 1.0 : 0.0;
}

__device__ __forceinline__ Stats load_stats(const double* src, int64_t n) {
  return {static_cast<double>(n), src[0], src[1], src[2], src[3], src[4] != 0.0};
}

// factor * dK/dx + l2 * x, dK/dx_i = 4 / (n m2^2) ((x_i - mu)^3 - m3 - K m2 (x_i - mu)),
// as a cubic in d = x - mu.
struct ScaledGrad {
  double mean, cubic, linear, constant, l2;

  KURE_HD ScaledGrad(const Stats& s, double factor, double l2_coeff) {
    const double scale = s.zero_gradient ? 0.0 : factor * 4.0 / s.n / s.m2 / s.m2;
    mean = s.mean;
    cubic = scale;
    linear = -scale * s.kurtosis * s.m2;
    constant = -scale * s.m3;
    l2 = l2_coeff;
  }

  KURE_HD double operator()(double x) const {
    const double d = x - mean;
    return std::fma(std::fma(cubic * d, d, linear), d, constant) + l2 * x;
  }
};

template <typename V>
__device__ __forceinline__ V shfl_down(V v, int offset) {
  static_assert(sizeof(V) % sizeof(double) == 0, "V must be made of doubles");
  double* p = reinterpret_cast<double*>(&v);
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(V) / sizeof(double)); ++i) {
    p[i] = __shfl_down_sync(0xffffffffu, p[i], offset);
  }
  return v;
}

// Reduces one value per thread with op, in a fixed order; every thread gets
// the result. Call at most once per V in a kernel (its shared memory is per V).
template <typename V, typename Op>
__device__ V block_reduce(V v, Op op) {
  __shared__ V warp_values[kThreads / 32];
  __shared__ V result;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, shfl_down(v, offset));
  if (lane == 0) warp_values[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? warp_values[lane] : V{};
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) v = op(v, shfl_down(v, offset));
    if (lane == 0) result = v;
  }
  __syncthreads();
  return result;
}

struct AddOp {
  __device__ PowerSums operator()(const PowerSums& a, const PowerSums& b) const {
    return add(a, b);
  }
};
struct MergeOp {
  __device__ Moments operator()(const Moments& a, const Moments& b) const {
    return merge(a, b);
  }
};

template <typename T>
struct FusedParams {
  double coeff, target, l2;  // kurtosis_decay only
  T* out;                    // kurtosis: K (0-D); kurtosis_decay: the gradient term
  double* stats;             // may be null for kurtosis_decay
  Moments* partials;         // one per block when gridDim.x > 1
};

// The moments of x, then (kDecay) out = 2 coeff (K - target) dK/dx + l2 x,
// or (!kDecay) out[0] = K. Launched cooperatively when gridDim.x > 1.
template <typename T, int kVec, bool kDecay>
__global__ void __launch_bounds__(kThreads)
    fused_kernel(const T* __restrict__ x, int64_t n, FusedParams<T> p) {
  using P = Pack<T, kVec>;
  const P* xv = reinterpret_cast<const P*>(x);
  const int64_t nv = n / kVec;
  const int64_t tail_begin = nv * kVec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t v0 = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;

  const int64_t block_begin = static_cast<int64_t>(blockIdx.x) * kThreads * kVec;
  const int64_t shift_index = block_begin < n ? block_begin : n - 1;
  const double c = to_double(x[shift_index]);
  PowerSums sums{};
  int64_t count = 0;
  int64_t v = v0;
  for (; v + (kUnroll - 1) * stride < nv; v += kUnroll * stride) {
    count += kUnroll * kVec;
    P in[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) in[u] = xv[v + u * stride];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) add_powers(&sums, to_double(in[u].v[k]) - c);
    }
  }
  for (; v < nv; v += stride) {
    count += kVec;
    const P in = xv[v];
#pragma unroll
    for (int k = 0; k < kVec; ++k) add_powers(&sums, to_double(in.v[k]) - c);
  }
  if (blockIdx.x == 0 && tail_begin + threadIdx.x < n) {
    count += 1;
    add_powers(&sums, to_double(x[tail_begin + threadIdx.x]) - c);
  }
  sums.n = static_cast<double>(count);
  const Moments block = centre(block_reduce(sums, AddOp{}), c);

  Moments total = block;
  if (gridDim.x > 1) {
    if (threadIdx.x == 0) p.partials[blockIdx.x] = block;
    cooperative_groups::this_grid().sync();
    if (!kDecay && blockIdx.x != 0) return;
    // Every block merges the partials in the same order: identical stats.
    Moments acc{};
    for (int i = threadIdx.x; i < static_cast<int>(gridDim.x); i += kThreads) {
      acc = merge(acc, p.partials[i]);
    }
    total = block_reduce(acc, MergeOp{});
  }
  const Stats s = finalize(total);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (p.stats != nullptr) store_stats(s, p.stats);
    if (!kDecay) p.out[0] = from_double<T>(s.kurtosis);
  }
  if (!kDecay) return;

  const ScaledGrad grad(s, 2.0 * p.coeff * (s.kurtosis - p.target), p.l2);
  P* outv = reinterpret_cast<P*>(p.out);
  if (v0 < nv) {
    v = v0 + (nv - 1 - v0) / stride * stride;  // this thread's last pack
    for (; v - (kUnroll - 1) * stride >= v0; v -= kUnroll * stride) {
      P in[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) in[u] = xv[v - u * stride];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        P o;
#pragma unroll
        for (int k = 0; k < kVec; ++k) o.v[k] = from_double<T>(grad(to_double(in[u].v[k])));
        outv[v - u * stride] = o;
      }
    }
    for (; v >= v0; v -= stride) {
      const P in = xv[v];
      P o;
#pragma unroll
      for (int k = 0; k < kVec; ++k) o.v[k] = from_double<T>(grad(to_double(in.v[k])));
      outv[v] = o;
    }
  }
  if (blockIdx.x == 0 && tail_begin + threadIdx.x < n) {
    const int64_t i = tail_begin + threadIdx.x;
    p.out[i] = from_double<T>(grad(to_double(x[i])));
  }
}

// grad_x = grad_out[0] * dK/dx from saved stats (the kurtosis backward).
template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    grad_kernel(const T* __restrict__ x, int64_t n, const double* __restrict__ stats,
                const T* __restrict__ grad_out, T* __restrict__ grad_x) {
  using P = Pack<T, kVec>;
  const ScaledGrad grad(load_stats(stats, n), to_double(grad_out[0]), 0.0);
  const P* xv = reinterpret_cast<const P*>(x);
  P* gv = reinterpret_cast<P*>(grad_x);
  const int64_t nv = n / kVec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; v < nv;
       v += stride) {
    const P in = xv[v];
    P o;
#pragma unroll
    for (int k = 0; k < kVec; ++k) o.v[k] = from_double<T>(grad(to_double(in.v[k])));
    gv[v] = o;
  }
  const int64_t i = nv * kVec + static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (blockIdx.x == 0 && i < n) grad_x[i] = from_double<T>(grad(to_double(x[i])));
}

// Blocks of this kernel that can be resident at once on the current device
// (the most a cooperative launch may have), cached per device.
template <typename Kernel>
cudaError_t resident_blocks(Kernel kernel, std::atomic<int>* cache, int* blocks) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  if (device < kMaxDevices && (*blocks = cache[device].load(std::memory_order_relaxed)) > 0) {
    return cudaSuccess;
  }
  int per_sm = 0, sms = 0;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  *blocks = std::max(1, std::min(per_sm * sms, kMaxBlocks));
  if (device < kMaxDevices) cache[device].store(*blocks, std::memory_order_relaxed);
  return cudaSuccess;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks worth launching for n elements, packs of kVec.
template <int kVec>
int64_t useful_blocks(int64_t n) {
  return std::max<int64_t>(1, ceil_div(n, static_cast<int64_t>(kThreads) * kVec * kMinLoadsPerThread));
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T, int kVec, bool kDecay>
cudaError_t launch_fused(const T* x, int64_t n, FusedParams<T> p, cudaStream_t stream) {
  static std::atomic<int> cache[kMaxDevices];
  auto* kernel = fused_kernel<T, kVec, kDecay>;
  int resident = 0;
  cudaError_t err = resident_blocks(kernel, cache, &resident);
  if (err != cudaSuccess) return err;
  const int blocks = static_cast<int>(std::min<int64_t>(useful_blocks<kVec>(n), resident));
  if (blocks == 1) {
    kernel<<<1, kThreads, 0, stream>>>(x, n, p);
    return cudaGetLastError();
  }
  if (p.partials == nullptr) return cudaErrorInvalidValue;
  void* args[] = {&x, &n, &p};
  return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), blocks, kThreads,
                                     args, 0, stream);
}

template <typename T, bool kDecay>
cudaError_t dispatch_fused(const T* x, int64_t n, const FusedParams<T>& p, cudaStream_t stream) {
  if (x == nullptr || p.out == nullptr || n < 1 || (!kDecay && p.stats == nullptr)) {
    return cudaErrorInvalidValue;
  }
  constexpr int kVec = 16 / sizeof(T);
  // The 16-byte path needs x (and the output it writes) 16-byte aligned.
  if (aligned16(x) && (!kDecay || aligned16(p.out))) {
    return launch_fused<T, kVec, kDecay>(x, n, p, stream);
  }
  return launch_fused<T, 1, kDecay>(x, n, p, stream);
}

template <typename T, int kVec>
cudaError_t launch_grad(const T* x, int64_t n, const double* stats, const T* grad_out,
                        T* grad_x, cudaStream_t stream) {
  static std::atomic<int> cache[kMaxDevices];
  auto* kernel = grad_kernel<T, kVec>;
  int resident = 0;
  cudaError_t err = resident_blocks(kernel, cache, &resident);
  if (err != cudaSuccess) return err;
  const int blocks = static_cast<int>(std::min<int64_t>(useful_blocks<kVec>(n), resident));
  kernel<<<blocks, kThreads, 0, stream>>>(x, n, stats, grad_out, grad_x);
  return cudaGetLastError();
}

#undef KURE_HD

}  // namespace detail

// Bytes of device workspace kurtosis() and kurtosis_decay() need for n elements
// (0 when one block does it all).
inline size_t workspace_bytes(int64_t n) {
  if (n <= static_cast<int64_t>(kThreads) * kMinLoadsPerThread) return 0;
  return sizeof(Moments) * static_cast<size_t>(std::min<int64_t>(detail::ceil_div(n, kThreads), kMaxBlocks));
}

// K of x[0..n) into out[0] (dtype T) and the Stats into stats (device, kStatsSize
// doubles). T: double, float, __half or __nv_bfloat16. workspace: device memory
// of workspace_bytes(n) bytes (unused and may be null when that is 0).
template <typename T>
cudaError_t kurtosis(const T* x, int64_t n, T* out, double* stats, void* workspace,
                     cudaStream_t stream) {
  detail::FusedParams<T> p{0.0, 0.0, 0.0, out, stats, static_cast<Moments*>(workspace)};
  return detail::dispatch_fused<T, false>(x, n, p, stream);
}

// out[i] = coeff * d/dx_i (K(x) - target)^2 + l2 * x[i], the fused KURE
// gradient term, in one launch; the Stats go to stats unless it is null.
template <typename T>
cudaError_t kurtosis_decay(const T* x, int64_t n, double coeff, double target, double l2, T* out,
                           double* stats, void* workspace, cudaStream_t stream) {
  detail::FusedParams<T> p{coeff, target, l2, out, stats, static_cast<Moments*>(workspace)};
  return detail::dispatch_fused<T, true>(x, n, p, stream);
}

// grad_x = grad_out[0] * dK/dx, from the Stats kurtosis() saved; grad_out is a
// device pointer to one T.
template <typename T>
cudaError_t kurtosis_grad(const T* x, int64_t n, const double* stats, const T* grad_out,
                          T* grad_x, cudaStream_t stream) {
  if (x == nullptr || stats == nullptr || grad_out == nullptr || grad_x == nullptr || n < 1) {
    return cudaErrorInvalidValue;
  }
  constexpr int kVec = 16 / sizeof(T);
  if (detail::aligned16(x) && detail::aligned16(grad_x)) {
    return detail::launch_grad<T, kVec>(x, n, stats, grad_out, grad_x, stream);
  }
  return detail::launch_grad<T, 1>(x, n, stats, grad_out, grad_x, stream);
}

}  // namespace kure_cuda
