// paddle_kure custom operators, CPU kernels and registration.
//
//   kurtosis(X) -> Out (0-D, dtype of X), Stats (float64 [6], saved for backward)
//   kurtosis_grad(X, Stats, Out@GRAD) -> X@GRAD
//   kurtosis_decay(X; coeff, target, l2_coeff) -> Out
//       Out = coeff * d/dX (K(X) - target)^2 + l2_coeff * X, the gradient term
//       added by paddle_kure.KurtosisDecay.
//   kurtosis_decay_accumulate(X, Grad; coeff, target, l2_coeff) -> Grad (in place, CPU)
//       Grad += the same term: KurtosisDecay.apply_to_grads_ without allocating.
//
// Stats layout and the moment math: kurtosis_moments.h.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

#include "kurtosis_moments.h"
#include "output_pool.h"
#include "paddle/extension.h"

namespace {

using paddle_kure::CentralMoments;
using paddle_kure::KurtosisGrad;
using paddle_kure::KurtosisStats;

using paddle_kure::kStatsSize;
// Values per cache-resident block: where a block needs a first pass (its mean
// and range), the pass over its central sums reads it again from cache, so
// memory is read once.
constexpr int64_t kBlock = 2048;
// Below this many values per thread, starting a thread (about 40 us here)
// costs more than it saves (measured: 2 threads lose up to 4e5 values, win from 7e5).
constexpr int64_t kMinPerThread = 1 << 18;

int num_threads_for(int64_t n) {
  // Asked once: glibc reads /sys for it, about 5 us a call.
  static const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<int>(std::max<int64_t>(1, std::min(hw, n / kMinPerThread)));
}

// [begin, end) of thread t's contiguous share of n values; boundaries on
// multiples of 64 values keep every thread's vector loads aligned alike.
struct Range {
  int64_t begin, end;
};
Range share(int64_t n, int threads, int t) {
  const int64_t per = ((n + threads - 1) / threads + 63) / 64 * 64;
  return {std::min(n, t * per), std::min(n, (t + 1) * per)};
}

// Runs fn(t) for t in [0, threads), t = 0 on the calling thread.
template <typename Fn>
void run_threads(int threads, const Fn& fn) {
  if (threads <= 1) {
    fn(0);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (int t = 1; t < threads; ++t) pool.emplace_back([&fn, t] { fn(t); });
  fn(0);
  for (auto& th : pool) th.join();
}

// One-shot barrier: spins briefly, then yields (the other threads may share a core).
class Barrier {
 public:
  explicit Barrier(int threads) : waiting_(threads) {}
  void arrive_and_wait() {
    waiting_.fetch_sub(1, std::memory_order_acq_rel);
    for (int spin = 0; waiting_.load(std::memory_order_acquire) > 0; ++spin) {
      if (spin > 1000) std::this_thread::yield();
    }
  }

 private:
  std::atomic<int> waiting_;
};

// Eight-wide double vectors (GCC/Clang vector extension): one AVX-512
// register, two AVX2 or four SSE2 ones, whichever the clone below targets.
// Separate accumulators per lane break the floating-point dependency chains
// without reassociation (no -ffast-math), and give the same sums on every ISA.
typedef double double8 __attribute__((vector_size(64)));
typedef float float8 __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;

// Everything a multiversioned function calls must be inlined into it to be
// compiled for its ISA; lambdas need saying so too (one left out of line ran
// as baseline SSE2 code, 3x slower).
#define KURE_INLINE __attribute__((always_inline)) inline
#define KURE_LAMBDA_INLINE __attribute__((always_inline))

KURE_INLINE double8 load8(const float* x) {
  float8 v;
  std::memcpy(&v, x, sizeof v);
  return __builtin_convertvector(v, double8);
}
KURE_INLINE double8 load8(const double* x) {
  double8 v;
  std::memcpy(&v, x, sizeof v);
  return v;
}
KURE_INLINE void store8(float* out, double8 v) {
  const float8 f = __builtin_convertvector(v, float8);
  std::memcpy(out, &f, sizeof f);
}
KURE_INLINE void store8(double* out, double8 v) { std::memcpy(out, &v, sizeof v); }

KURE_INLINE double lane_sum(double8 v) {
  return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

// Moments of one block of n <= kBlock values in double: every float64 block,
// and the float32 blocks that float arithmetic cannot take.
template <typename T>
KURE_INLINE CentralMoments block_moments(const T* __restrict__ x, int64_t n) {
  // float32 deviations cannot overflow or underflow double's 4th powers
  // (3.4e38^4 and 1.4e-45^4 are doubles); float64 ones need units.
  constexpr bool kNeedsUnits = sizeof(T) > sizeof(float);
  const int64_t vec_end = n - n % (2 * kLanes);
  // Pass 1 over the block, from memory: the sum and, for float64, the range.
  double8 sum_a = {}, sum_b = {};
  double8 lo = {}, hi = {};
  lo += static_cast<double>(x[0]);
  hi = lo;
  for (int64_t i = 0; i < vec_end; i += 2 * kLanes) {
    const double8 a = load8(x + i), b = load8(x + i + kLanes);
    sum_a += a;
    sum_b += b;
    if (kNeedsUnits) {
      lo = a < lo ? a : lo;
      hi = a > hi ? a : hi;
      lo = b < lo ? b : lo;
      hi = b > hi ? b : hi;
    }
  }
  double total = lane_sum(sum_a + sum_b);
  double min = lo[0], max = hi[0];
  for (int j = 1; j < kLanes; ++j) {
    min = std::min(min, lo[j]);
    max = std::max(max, hi[j]);
  }
  for (int64_t i = vec_end; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    total += v;
    min = std::min(min, v);
    max = std::max(max, v);
  }
  CentralMoments m{};
  m.n = static_cast<double>(n);
  m.mean = total / m.n;
  if (kNeedsUnits) {
    // Units 2^exponent > the largest deviation from the mean: scaled deviations stay below 1.
    const double reach = std::max(max - m.mean, m.mean - min);
    if (reach > 0.0 && std::isfinite(reach)) m.exponent = std::ilogb(reach) + 1;
  }
  const double inv_unit = std::ldexp(1.0, -m.exponent);
  // Pass 2, from cache: central sums of the scaled deviations.
  double8 s2a = {}, s3a = {}, s4a = {}, s2b = {}, s3b = {}, s4b = {};
  for (int64_t i = 0; i < vec_end; i += 2 * kLanes) {
    double8 da = load8(x + i) - m.mean, db = load8(x + i + kLanes) - m.mean;
    if (kNeedsUnits) {
      da *= inv_unit;
      db *= inv_unit;
    }
    const double8 da2 = da * da, db2 = db * db;
    s2a += da2;
    s3a += da2 * da;
    s4a += da2 * da2;
    s2b += db2;
    s3b += db2 * db;
    s4b += db2 * db2;
  }
  m.M2 = lane_sum(s2a + s2b);
  m.M3 = lane_sum(s3a + s3b);
  m.M4 = lane_sum(s4a + s4b);
  for (int64_t i = vec_end; i < n; ++i) {
    const double d = (static_cast<double>(x[i]) - m.mean) * inv_unit;
    m.M2 += d * d;
    m.M3 += d * d * d;
    m.M4 += d * d * d * d;
  }
  return m;
}

// float32 blocks take their powers in float, 16 lanes to a register and no
// conversions per value; the sums still end in double. Deviations are taken
// from a float shift near the block mean (exact for values near it, so
// 1e4 + N(0, 1) loses nothing) and in units 2^e near their spread, so that
// their 4th powers stay within float's range.
typedef float float16 __attribute__((vector_size(64)));
constexpr int64_t kFloatLanes = 16;
// Values summed in float before joining the double sums: up to 32 terms per
// lane (a relative error of a few 1e-6 per run at worst, with no bias, and far
// less over many runs). Widening to double costs six vector operations per
// sum, so fewer, longer runs are faster (8 terms per lane took 1.5x longer).
constexpr int64_t kFloatRun = 32 * kFloatLanes;
// Units 2^e beyond this are not float numbers (subnormal data): double then.
constexpr int kMaxFloatExponent = 100;
// Units 2^e within 2^+-kPlainUnitReach of the data's spread are replaced by
// units of 1: powers of deviations up to 2^21 still fit a float, and the
// multiply by 2^-e (one of the four vector operations per value on the
// critical port) is skipped. Exact either way: the scaling is a power of two.
constexpr int kPlainUnitReach = 20;
KURE_INLINE int plain_if_near(int e) { return std::abs(e) <= kPlainUnitReach ? 0 : e; }

KURE_INLINE float16 load16(const float* x) {
  float16 v;
  std::memcpy(&v, x, sizeof v);
  return v;
}
KURE_INLINE void store16(float* out, float16 v) { std::memcpy(out, &v, sizeof v); }
// acc[0..1] += the two halves of v, widened to double
KURE_INLINE void widen_add(double8* acc, float16 v) {
  acc[0] += __builtin_convertvector(
      __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), double8);
  acc[1] += __builtin_convertvector(
      __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), double8);
}

// Where a float32 block's deviations are taken from (a float near its mean)
// and in what units (2^exponent). The previous block's frame usually fits the
// next block, which then needs one pass over its values instead of two.
struct FloatFrame {
  float shift = 0.0f;
  int exponent = 0;
  bool valid = false;
};

// Central moments of n float32 values from sums of powers of
// d = (x - shift) / 2^e taken in float. With check_fit (a frame carried over
// from another block), false unless the frame suits these values: shift within
// a quarter standard deviation of their mean (so the conversion to central sums
// below cancels at most a bit) and units within 2^20 of their spread.
template <bool kScaled>
KURE_INLINE bool float_central_moments_impl(const float* __restrict__ x, int64_t n, float shift,
                                            int e, bool check_fit, CentralMoments* out) {
  const float inv_unit = std::ldexp(1.0f, -e);
  const float shift_in_units = shift * inv_unit;  // exact: a power of two
  double8 s1[2] = {}, s2[2] = {}, s3[2] = {}, s4[2] = {};
  const int64_t vec_end = n - n % (2 * kFloatLanes);
  for (int64_t r = 0; r < vec_end; r += kFloatRun) {
    const int64_t run_end = std::min(r + kFloatRun, vec_end);
    float16 f1 = {}, f2 = {}, f3 = {}, f4 = {}, g1 = {}, g2 = {}, g3 = {}, g4 = {};
    for (int64_t i = r; i < run_end; i += 2 * kFloatLanes) {
      // x / 2^e - shift / 2^e rounds once, like (x - shift) / 2^e, and fuses to one FMA
      const float16 da = kScaled ? load16(x + i) * inv_unit - shift_in_units
                                 : load16(x + i) - shift;
      const float16 db = kScaled ? load16(x + i + kFloatLanes) * inv_unit - shift_in_units
                                 : load16(x + i + kFloatLanes) - shift;
      const float16 da2 = da * da, db2 = db * db;
      f1 += da;
      f2 += da2;
      f3 += da2 * da;
      f4 += da2 * da2;
      g1 += db;
      g2 += db2;
      g3 += db2 * db;
      g4 += db2 * db2;
    }
    widen_add(s1, f1 + g1);
    widen_add(s2, f2 + g2);
    widen_add(s3, f3 + g3);
    widen_add(s4, f4 + g4);
  }
  double p1 = lane_sum(s1[0] + s1[1]), p2 = lane_sum(s2[0] + s2[1]);
  double p3 = lane_sum(s3[0] + s3[1]), p4 = lane_sum(s4[0] + s4[1]);
  const double inv_unit_d = inv_unit;
  for (int64_t i = vec_end; i < n; ++i) {
    const double d = (static_cast<double>(x[i]) - shift) * inv_unit_d;
    p1 += d;
    p2 += d * d;
    p3 += d * d * d;
    p4 += d * d * d * d;
  }
  const double count = static_cast<double>(n);
  const double delta = p1 / count;
  const double delta2 = delta * delta;
  const double m2 = p2 / count - delta2;
  if (!std::isfinite(p4 + p3 + p2 + p1)) return false;
  if (check_fit && !(delta2 <= m2 / 16.0 && m2 >= 0x1p-40 && m2 <= 0x1p40)) return false;
  // From sums about the shift to central sums.
  CentralMoments m{};
  m.n = count;
  m.mean = shift + std::ldexp(delta, e);
  m.exponent = e;
  m.M2 = p2 - count * delta2;
  m.M3 = p3 - 3.0 * delta * p2 + 2.0 * count * delta2 * delta;
  m.M4 = p4 - 4.0 * delta * p3 + 6.0 * delta2 * p2 - 3.0 * count * delta2 * delta2;
  *out = m;
  return true;
}

KURE_INLINE bool float_central_moments(const float* __restrict__ x, int64_t n, float shift, int e,
                                       bool check_fit, CentralMoments* out) {
  return e == 0 ? float_central_moments_impl<false>(x, n, shift, e, check_fit, out)
                : float_central_moments_impl<true>(x, n, shift, e, check_fit, out);
}

// Moments of one block of n <= kBlock float32 values, powers in float, in
// the carried frame when it fits, else in one found by a first pass; the
// frame is then updated for the next block. False (nothing written) where
// float arithmetic does not fit: NaN/Inf, or units outside float's range;
// block_moments in double handles those.
KURE_INLINE bool block_moments_float(const float* __restrict__ x, int64_t n, FloatFrame* frame,
                                     CentralMoments* out) {
  CentralMoments m;
  if (!(frame->valid && float_central_moments(x, n, frame->shift, frame->exponent, true, &m))) {
    frame->valid = false;
    // Pass 1, from memory: sum (only to pick the shift) and range (for the units).
    const int64_t vec_end = n - n % (2 * kFloatLanes);
    float16 sum_a = {}, sum_b = {}, lo = {}, hi = {};
    lo += x[0];
    hi = lo;
    for (int64_t i = 0; i < vec_end; i += 2 * kFloatLanes) {
      const float16 a = load16(x + i), b = load16(x + i + kFloatLanes);
      sum_a += a;
      sum_b += b;
      lo = a < lo ? a : lo;
      hi = a > hi ? a : hi;
      lo = b < lo ? b : lo;
      hi = b > hi ? b : hi;
    }
    double total = 0.0;
    float min = lo[0], max = hi[0];
    for (int j = 0; j < kFloatLanes; ++j) {
      total += static_cast<double>(sum_a[j]) + static_cast<double>(sum_b[j]);
      min = std::min(min, lo[j]);
      max = std::max(max, hi[j]);
    }
    for (int64_t i = vec_end; i < n; ++i) {
      total += static_cast<double>(x[i]);
      min = std::min(min, x[i]);
      max = std::max(max, x[i]);
    }
    if (min == max) {  // a constant block: exact, no arithmetic needed
      *out = CentralMoments{};
      out->n = static_cast<double>(n);
      out->mean = min;
      return true;
    }
    const float shift = static_cast<float>(total / static_cast<double>(n));
    const double reach =
        std::max(static_cast<double>(max) - shift, shift - static_cast<double>(min));
    if (!(reach > 0.0 && std::isfinite(reach))) return false;
    // Units above the largest deviation: |d| <= 1, so d^4 cannot overflow.
    const int e = plain_if_near(std::ilogb(reach) + 1);
    if (e < -kMaxFloatExponent || e > kMaxFloatExponent) return false;
    if (!float_central_moments(x, n, shift, e, false, &m)) return false;
  }
  // The next block's frame: this mean, units about 8 standard deviations.
  const double m2_in_units = m.M2 / m.n;
  const int e =
      plain_if_near(m.exponent + (m2_in_units > 0.0 ? std::ilogb(m2_in_units) / 2 + 3 : 0));
  frame->valid = m2_in_units > 0.0 && e >= -kMaxFloatExponent && e <= kMaxFloatExponent;
  frame->shift = static_cast<float>(m.mean);
  frame->exponent = e;
  *out = m;
  return true;
}

template <typename T>
KURE_INLINE CentralMoments range_moments_impl(const T* x, int64_t n) {
  CentralMoments acc{};
  FloatFrame frame;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = std::min(kBlock, n - b);
    CentralMoments block;
    if (!(std::is_same<T, float>::value &&
          block_moments_float(reinterpret_cast<const float*>(x + b), len, &frame, &block))) {
      block = block_moments(x + b, len);
    }
    acc = paddle_kure::moments_merge(acc, block);
  }
  return acc;
}

// Blocks of [begin, end): first, backwards, the last kRecentBytes, which the
// moments pass read last and are still in cache; then the rest forwards, the
// order in which the hardware prefetcher streams memory best (measured: a
// backwards walk over 40 MB took 4x longer).
constexpr int64_t kRecentBytes = int64_t{1} << 20;

template <typename T, typename Fn>
KURE_INLINE void for_blocks_cache_first(int64_t begin, int64_t end, Fn fn) {
  const int64_t recent_begin = std::max(begin, end - kRecentBytes / int64_t{sizeof(T)});
  for (int64_t block_end = end; block_end > recent_begin; block_end -= kBlock) {
    fn(std::max(recent_begin, block_end - kBlock), block_end);
  }
  for (int64_t b = begin; b < recent_begin; b += kBlock) fn(b, std::min(recent_begin, b + kBlock));
}

// out[i] = grad(x[i]) + l2 * x[i] for i in [begin, end), in double
// (out[i] += ... with kAccumulate).
template <bool kAccumulate, typename T>
KURE_INLINE void scaled_grad_range_impl(const T* __restrict__ x, T* __restrict__ out,
                                        int64_t begin, int64_t end, const KurtosisGrad& grad,
                                        double l2) {
  const double mean = grad.mean, inv_unit = grad.inv_unit, cubic = grad.cubic,
               linear = grad.linear, constant = grad.constant;
  for_blocks_cache_first<T>(begin, end, [&](int64_t b, int64_t block_end) KURE_LAMBDA_INLINE {
    const int64_t vec_end = b + (block_end - b) / kLanes * kLanes;
    for (int64_t i = b; i < vec_end; i += kLanes) {
      const double8 v = load8(x + i);
      const double8 d = (v - mean) * inv_unit;
      double8 term = (cubic * d * d + linear) * d + constant + l2 * v;
      if (kAccumulate) term += load8(out + i);
      store8(out + i, term);
    }
    for (int64_t i = vec_end; i < block_end; ++i) {
      const double v = static_cast<double>(x[i]);
      const double term = grad(v) + l2 * v;
      out[i] = static_cast<T>(kAccumulate ? term + static_cast<double>(out[i]) : term);
    }
  });
}

// The gradient polynomial for float arithmetic: d in units 2^k near the
// standard deviation (so d^3 stays a float for any element), the mean split in
// two floats (so x - mean keeps double precision where it matters).
struct FloatPolynomial {
  // mean_lo_in_units = mean_lo / 2^k: exact, so d = (x - mean_hi) / 2^k - mean_lo_in_units
  // (one FMA) rounds as ((x - mean_hi) - mean_lo) / 2^k does.
  float mean_hi, mean_lo_in_units, inv_unit, cubic, linear, constant, l2;
};

// False where some coefficient is not a comfortable float (subnormal or huge
// data, NaN): the double path takes those.
KURE_INLINE bool float_polynomial(const KurtosisGrad& grad, double m2, int exponent, double l2,
                                  FloatPolynomial* p) {
  // grad's d is (x - mean) / 2^exponent; here d' = (x - mean) / 2^k, d = d' 2^j
  const int near_sd = exponent + (m2 > 0.0 && std::isfinite(m2) ? std::ilogb(m2) / 2 : 0);
  const int k = plain_if_near(near_sd);
  const int j = k - exponent;
  const double r = std::ldexp(1.0, j);
  const double coefficients[] = {grad.cubic * r * r * r, grad.linear * r, grad.constant, l2};
  for (double c : coefficients) {
    const double a = std::fabs(c);
    if (!(a == 0.0 || (a >= 0x1p-100 && a <= 0x1p100))) return false;
  }
  if (k < -kMaxFloatExponent || k > kMaxFloatExponent || !std::isfinite(grad.mean)) return false;
  p->mean_hi = static_cast<float>(grad.mean);
  p->inv_unit = std::ldexp(1.0f, -k);
  p->mean_lo_in_units = static_cast<float>(grad.mean - p->mean_hi) * p->inv_unit;
  p->cubic = static_cast<float>(coefficients[0]);
  p->linear = static_cast<float>(coefficients[1]);
  p->constant = static_cast<float>(coefficients[2]);
  p->l2 = static_cast<float>(l2);
  return true;
}

// kL2: whether l2 != 0; kScaled: whether the units are not 1 (each saves a
// vector operation of six).
template <bool kAccumulate, bool kL2, bool kScaled>
KURE_INLINE void float_grad_range(const float* __restrict__ x, float* __restrict__ out,
                                  int64_t begin, int64_t end, const FloatPolynomial& p) {
  for_blocks_cache_first<float>(begin, end, [&](int64_t b, int64_t block_end) KURE_LAMBDA_INLINE {
    const int64_t vec_end = b + (block_end - b) / kFloatLanes * kFloatLanes;
    for (int64_t i = b; i < vec_end; i += kFloatLanes) {
      const float16 v = load16(x + i);
      const float16 d = kScaled ? (v - p.mean_hi) * p.inv_unit - p.mean_lo_in_units
                                : (v - p.mean_hi) - p.mean_lo_in_units;
      float16 term = (p.cubic * (d * d) + p.linear) * d + p.constant;
      if (kL2) term += p.l2 * v;
      if (kAccumulate) term += load16(out + i);
      store16(out + i, term);
    }
    for (int64_t i = vec_end; i < block_end; ++i) {
      const float d = (x[i] - p.mean_hi) * p.inv_unit - p.mean_lo_in_units;
      float term = (p.cubic * (d * d) + p.linear) * d + p.constant;
      if (kL2) term += p.l2 * x[i];
      out[i] = kAccumulate ? term + out[i] : term;
    }
  });
}

// fn(std::true_type) or fn(std::false_type): a run-time flag as a template argument.
template <typename Fn>
KURE_INLINE void with_flag(bool flag, const Fn& fn) {
  if (flag) {
    fn(std::true_type{});
  } else {
    fn(std::false_type{});
  }
}

// The hot loops, compiled for AVX-512 (x86-64-v4), AVX2+FMA (x86-64-v3) and
// baseline x86-64; the loader picks the best the CPU has (GCC function
// multiversioning), so one wheel runs on any x86-64 CPU at its best speed.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define KURE_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KURE_MULTIVERSION
#endif

KURE_MULTIVERSION CentralMoments range_moments(const float* x, int64_t n) {
  return range_moments_impl(x, n);
}
KURE_MULTIVERSION CentralMoments range_moments(const double* x, int64_t n) {
  return range_moments_impl(x, n);
}
// accumulate: out += the term instead of out = the term
KURE_MULTIVERSION void scaled_grad_range(const float* x, float* out, int64_t begin, int64_t end,
                                         const KurtosisGrad& grad, const KurtosisStats& s,
                                         double l2, bool accumulate) {
  FloatPolynomial p;
  if (float_polynomial(grad, s.m2, s.exponent, l2, &p)) {
    with_flag(accumulate, [&](auto acc) KURE_LAMBDA_INLINE {
      with_flag(p.l2 != 0.0f, [&](auto l2) KURE_LAMBDA_INLINE {
        with_flag(p.inv_unit != 1.0f, [&](auto scaled) KURE_LAMBDA_INLINE {
          float_grad_range<decltype(acc)::value, decltype(l2)::value, decltype(scaled)::value>(
              x, out, begin, end, p);
        });
      });
    });
  } else {
    accumulate ? scaled_grad_range_impl<true>(x, out, begin, end, grad, l2)
               : scaled_grad_range_impl<false>(x, out, begin, end, grad, l2);
  }
}
KURE_MULTIVERSION void scaled_grad_range(const double* x, double* out, int64_t begin, int64_t end,
                                         const KurtosisGrad& grad, const KurtosisStats&,
                                         double l2, bool accumulate) {
  accumulate ? scaled_grad_range_impl<true>(x, out, begin, end, grad, l2)
             : scaled_grad_range_impl<false>(x, out, begin, end, grad, l2);
}

CentralMoments merge_all(const std::vector<CentralMoments>& partial) {
  CentralMoments total{};
  for (const auto& p : partial) total = paddle_kure::moments_merge(total, p);
  return total;
}

template <typename T>
KurtosisStats cpu_stats(const T* x, int64_t n) {
  const int threads = num_threads_for(n);
  std::vector<CentralMoments> partial(threads);
  run_threads(threads, [&](int t) {
    const Range r = share(n, threads, t);
    partial[t] = range_moments(x + r.begin, r.end - r.begin);
  });
  return paddle_kure::kurtosis_stats(merge_all(partial));
}

// out[i] = factor * dK/dx_i (backward of kurtosis)
template <typename T>
void cpu_scaled_grad(const T* x, T* out, int64_t n, const KurtosisStats& s, double factor) {
  const KurtosisGrad grad(s, factor);
  const int threads = num_threads_for(n);
  run_threads(threads, [&](int t) {
    const Range r = share(n, threads, t);
    scaled_grad_range(x, out, r.begin, r.end, grad, s, 0.0, false);
  });
}

// out = coeff * d/dx (K(x) - target)^2 + l2 * x (out += ... when accumulate):
// each thread takes the moments of its share, all wait for all, then each
// writes the output for the same share, so both passes start threads once.
template <typename T>
void cpu_kurtosis_decay(const T* x, T* out, int64_t n, double coeff, double target, double l2,
                        bool accumulate) {
  const int threads = num_threads_for(n);
  std::vector<CentralMoments> partial(threads);
  Barrier all_moments_done(threads);
  run_threads(threads, [&](int t) {
    const Range r = share(n, threads, t);
    partial[t] = range_moments(x + r.begin, r.end - r.begin);
    if (threads > 1) all_moments_done.arrive_and_wait();
    const KurtosisStats s = paddle_kure::kurtosis_stats(merge_all(partial));
    // d/dx (K - target)^2 = 2 (K - target) dK/dx
    const KurtosisGrad grad(s, 2.0 * coeff * (s.kurtosis - target));
    scaled_grad_range(x, out, r.begin, r.end, grad, s, l2, accumulate);
  });
}

// Large CPU outputs come from a pool of buffers reused by size (output_pool.h);
// the pool outlives every tensor, so it is never destroyed.
constexpr size_t kPooledBytes = size_t{1} << 20;
constexpr size_t kMaxIdleBytes = size_t{256} << 20;
paddle_kure::OutputPool& output_pool() {
  static auto* pool = new paddle_kure::OutputPool(kPooledBytes, kMaxIdleBytes);
  return *pool;
}

template <typename T>
paddle::Tensor cpu_output_like(const paddle::Tensor& x) {
  const size_t bytes = static_cast<size_t>(x.numel()) * sizeof(T);
  if (!output_pool().pools(bytes)) return paddle::empty(x.shape(), x.dtype(), x.place());
  return paddle::from_blob(output_pool().acquire(bytes), x.shape(), x.dtype(),
                           phi::DataLayout::NCHW, x.place(),
                           [bytes](void* data) { output_pool().release(data, bytes); });
}

void check_floating(const paddle::Tensor& x, const char* op) {
  const auto dt = x.dtype();
  const bool ok = dt == paddle::DataType::FLOAT32 || dt == paddle::DataType::FLOAT64 ||
                  (x.is_gpu() && (dt == paddle::DataType::FLOAT16 ||
                                  dt == paddle::DataType::BFLOAT16));
  PD_CHECK(ok, op,
           ": input must be float32 or float64 (float16/bfloat16 on GPU), got ",
           phi::DataTypeToString(dt));
  // Static graphs learn the size only when they run: an empty tensor has no kurtosis.
  PD_CHECK(x.numel() > 0, op, ": input tensor is empty (0 elements); kurtosis needs at least one");
}

}  // namespace

#ifdef PADDLE_KURE_WITH_CUDA
std::vector<paddle::Tensor> kurtosis_cuda_forward(const paddle::Tensor& x);
paddle::Tensor kurtosis_cuda_backward(const paddle::Tensor& x, const paddle::Tensor& stats,
                                      const paddle::Tensor& grad_out);
paddle::Tensor kurtosis_decay_cuda(const paddle::Tensor& x, double coeff, double target,
                                   double l2_coeff);
#define KURE_DISPATCH_GPU(call) \
  if (x.is_gpu()) return call;
#else
#define KURE_DISPATCH_GPU(call) \
  PD_CHECK(!x.is_gpu(), "paddle_kure was built without CUDA; move the tensor to CPU");
#endif

std::vector<paddle::Tensor> KurtosisForward(const paddle::Tensor& x) {
  check_floating(x, "kurtosis");
  KURE_DISPATCH_GPU(kurtosis_cuda_forward(x));
  auto out = paddle::empty({}, x.dtype(), x.place());
  auto stats = paddle::empty({kStatsSize}, paddle::DataType::FLOAT64, x.place());
  PD_DISPATCH_FLOATING_TYPES(x.dtype(), "kurtosis_cpu", ([&] {
    const KurtosisStats s = cpu_stats(x.data<data_t>(), x.numel());
    paddle_kure::store_stats(s, stats.data<double>());
    *out.data<data_t>() = static_cast<data_t>(s.kurtosis);
  }));
  return {out, stats};
}

std::vector<paddle::Tensor> KurtosisBackward(const paddle::Tensor& x,
                                             const paddle::Tensor& stats,
                                             const paddle::Tensor& grad_out) {
  KURE_DISPATCH_GPU(std::vector<paddle::Tensor>{kurtosis_cuda_backward(x, stats, grad_out)});
  paddle::Tensor grad_x;
  PD_DISPATCH_FLOATING_TYPES(x.dtype(), "kurtosis_grad_cpu", ([&] {
    grad_x = cpu_output_like<data_t>(x);
    const KurtosisStats s = paddle_kure::load_stats(stats.data<double>(), x.numel());
    const double g = static_cast<double>(*grad_out.data<data_t>());
    cpu_scaled_grad(x.data<data_t>(), grad_x.data<data_t>(), x.numel(), s, g);
  }));
  return {grad_x};
}

std::vector<paddle::Tensor> KurtosisDecay(const paddle::Tensor& x, float coeff, float target,
                                          float l2_coeff) {
  check_floating(x, "kurtosis_decay");
  KURE_DISPATCH_GPU(std::vector<paddle::Tensor>{kurtosis_decay_cuda(x, coeff, target, l2_coeff)});
  paddle::Tensor out;
  PD_DISPATCH_FLOATING_TYPES(x.dtype(), "kurtosis_decay_cpu", ([&] {
    out = cpu_output_like<data_t>(x);
    cpu_kurtosis_decay(x.data<data_t>(), out.data<data_t>(), x.numel(), coeff, target, l2_coeff,
                       false);
  }));
  return {out};
}

// grad += the KurtosisDecay term of x, in place (CPU): no tensor allocated.
void KurtosisDecayAccumulate(const paddle::Tensor& x, paddle::Tensor& grad, float coeff,
                             float target, float l2_coeff) {
  check_floating(x, "kurtosis_decay_accumulate");
  PD_CHECK(x.is_cpu() && grad.is_cpu(), "kurtosis_decay_accumulate: CPU tensors only");
  PD_CHECK(grad.dtype() == x.dtype() && grad.numel() == x.numel(),
           "kurtosis_decay_accumulate: grad must match x in dtype and size");
  PD_DISPATCH_FLOATING_TYPES(x.dtype(), "kurtosis_decay_accumulate_cpu", ([&] {
    cpu_kurtosis_decay(x.data<data_t>(), grad.data<data_t>(), x.numel(), coeff, target,
                       l2_coeff, true);
  }));
}

std::vector<std::vector<int64_t>> KurtosisInferShape(const std::vector<int64_t>&) {
  return {{}, {kStatsSize}};
}

std::vector<paddle::DataType> KurtosisInferDtype(const paddle::DataType& x_dtype) {
  return {x_dtype, paddle::DataType::FLOAT64};
}

std::vector<std::vector<int64_t>> SameShape(const std::vector<int64_t>& x_shape) {
  return {x_shape};
}

std::vector<paddle::DataType> SameDtype(const paddle::DataType& x_dtype) { return {x_dtype}; }

PD_BUILD_OP(kurtosis)
    .Inputs({"X"})
    .Outputs({"Out", "Stats"})
    .SetKernelFn(PD_KERNEL(KurtosisForward))
    .SetInferShapeFn(PD_INFER_SHAPE(KurtosisInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(KurtosisInferDtype));

PD_BUILD_GRAD_OP(kurtosis)
    .Inputs({"X", "Stats", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .SetKernelFn(PD_KERNEL(KurtosisBackward));

PD_BUILD_OP(kurtosis_decay)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"coeff: float", "target: float", "l2_coeff: float"})
    .SetKernelFn(PD_KERNEL(KurtosisDecay))
    .SetInferShapeFn(PD_INFER_SHAPE(SameShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameDtype));

PD_BUILD_OP(kurtosis_decay_accumulate)
    .Inputs({"X", "Grad"})
    .Outputs({"GradOut"})
    .Attrs({"coeff: float", "target: float", "l2_coeff: float"})
    .SetInplaceMap({{"Grad", "GradOut"}})
    .SetKernelFn(PD_KERNEL(KurtosisDecayAccumulate));
