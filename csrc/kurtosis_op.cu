// paddle_kure custom operators, CUDA kernels (registered in kurtosis_op.cc).
//
// Moments: each thread pushes its grid-stride elements into a CentralMoments
// (double), blocks merge them in shared memory, and one final block merges the
// per-block partials and writes Stats (kurtosis_moments.h). The
// gradient kernel reads Stats from device memory, so no host sync is needed.
// float16/bfloat16 inputs are converted to float and accumulated in double.
#include <algorithm>

#include "kurtosis_moments.h"
#include "paddle/extension.h"

namespace {

using paddle_kure::CentralMoments;
using paddle_kure::KurtosisStats;

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;
using paddle_kure::kStatsSize;

template <typename T>
__device__ __forceinline__ double to_double(T v) {
  return static_cast<double>(static_cast<float>(v));
}
template <>
__device__ __forceinline__ double to_double<double>(double v) {
  return v;
}

// Tree reduction of one CentralMoments per thread; result in shared[0].
__device__ void block_merge(CentralMoments* shared) {
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      shared[threadIdx.x] =
          paddle_kure::moments_merge(shared[threadIdx.x], shared[threadIdx.x + stride]);
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void partial_moments_kernel(const T* x, int64_t n, CentralMoments* partial) {
  __shared__ CentralMoments shared[kThreads];
  CentralMoments acc{};
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    paddle_kure::moments_push(&acc, to_double(x[i]));
  }
  shared[threadIdx.x] = acc;
  __syncthreads();
  block_merge(shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

// One block: merges the partials, writes Stats and, when out != nullptr, K as T.
template <typename T>
__global__ void finalize_moments_kernel(const CentralMoments* partial, int count,
                                        double* stats, T* out) {
  __shared__ CentralMoments shared[kThreads];
  CentralMoments acc{};
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    acc = paddle_kure::moments_merge(acc, partial[i]);
  }
  shared[threadIdx.x] = acc;
  __syncthreads();
  block_merge(shared);
  if (threadIdx.x == 0) {
    const KurtosisStats s = paddle_kure::kurtosis_stats(shared[0]);
    paddle_kure::store_stats(s, stats);
    if (out != nullptr) *out = static_cast<T>(s.kurtosis);
  }
}

// out[i] = factor * dK/dx_i + l2 * x[i], where factor is grad_out[0] when
// grad_out is given (kurtosis backward) and 2 coeff (K - target) otherwise.
template <typename T>
__global__ void scaled_grad_kernel(const T* x, const double* stats, const T* grad_out,
                                   double coeff, double target, double l2, int64_t n,
                                   T* out) {
  const KurtosisStats s = paddle_kure::load_stats(stats, static_cast<double>(n));
  const double factor =
      grad_out != nullptr ? to_double(*grad_out) : 2.0 * coeff * (s.kurtosis - target);
  const paddle_kure::KurtosisGrad grad(s, factor);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double xi = to_double(x[i]);
    out[i] = static_cast<T>(grad(xi) + l2 * xi);
  }
}

int blocks_for(int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(kMaxBlocks, (n + kThreads - 1) / kThreads)));
}

// Computes Stats (and K into out, if given) on x's stream.
template <typename T>
void launch_moments(const paddle::Tensor& x, paddle::Tensor* stats, T* out) {
  const int64_t n = x.numel();
  const int blocks = blocks_for(n);
  auto partial = paddle::empty({static_cast<int64_t>(blocks * sizeof(CentralMoments))},
                               paddle::DataType::UINT8, x.place());
  auto* partial_ptr = reinterpret_cast<CentralMoments*>(partial.data<uint8_t>());
  partial_moments_kernel<T><<<blocks, kThreads, 0, x.stream()>>>(x.data<T>(), n, partial_ptr);
  finalize_moments_kernel<T><<<1, kThreads, 0, x.stream()>>>(partial_ptr, blocks,
                                                               stats->data<double>(), out);
}

}  // namespace

std::vector<paddle::Tensor> kurtosis_cuda_forward(const paddle::Tensor& x) {
  auto out = paddle::empty({}, x.dtype(), x.place());
  auto stats = paddle::empty({kStatsSize}, paddle::DataType::FLOAT64, x.place());
  PD_DISPATCH_FLOATING_AND_HALF_TYPES(x.dtype(), "kurtosis_cuda", ([&] {
    launch_moments<data_t>(x, &stats, out.data<data_t>());
  }));
  return {out, stats};
}

paddle::Tensor kurtosis_cuda_backward(const paddle::Tensor& x, const paddle::Tensor& stats,
                                      const paddle::Tensor& grad_out) {
  auto grad_x = paddle::empty(x.shape(), x.dtype(), x.place());
  const int64_t n = x.numel();
  PD_DISPATCH_FLOATING_AND_HALF_TYPES(x.dtype(), "kurtosis_grad_cuda", ([&] {
    scaled_grad_kernel<data_t><<<blocks_for(n), kThreads, 0, x.stream()>>>(
        x.data<data_t>(), stats.data<double>(), grad_out.data<data_t>(), 0.0, 0.0, 0.0, n,
        grad_x.data<data_t>());
  }));
  return grad_x;
}

paddle::Tensor kurtosis_decay_cuda(const paddle::Tensor& x, double coeff, double target,
                                   double l2_coeff) {
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  auto stats = paddle::empty({kStatsSize}, paddle::DataType::FLOAT64, x.place());
  const int64_t n = x.numel();
  PD_DISPATCH_FLOATING_AND_HALF_TYPES(x.dtype(), "kurtosis_decay_cuda", ([&] {
    launch_moments<data_t>(x, &stats, static_cast<data_t*>(nullptr));
    scaled_grad_kernel<data_t><<<blocks_for(n), kThreads, 0, x.stream()>>>(
        x.data<data_t>(), stats.data<double>(), nullptr, coeff, target, l2_coeff, n,
        out.data<data_t>());
  }));
  return out;
}
