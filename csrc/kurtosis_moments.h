// Moment math shared by the CPU (kurtosis_op.cc) and CUDA (kurtosis_op.cu) kernels.
//
// Central moments are accumulated in double and combined with the pairwise
// update of Chan et al. / Pebay (2008), so that a tensor whose mean is far
// larger than its spread (1e4 + N(0, 1) in float32) keeps full precision:
// no raw power sums of x are ever formed.
//
// Kurtosis is scale-invariant, but (x - mean)^4 is not representable for every
// double: 1e100 * N(0, 1) overflows to inf and 1e-100 * N(0, 1) underflows to 0.
// The central sums are therefore kept in units of a power of two, 2^exponent,
// chosen so that the scaled deviations stay below 1: scaling by a power of two
// is exact, so nothing is lost where no scaling was needed.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define KURE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define KURE_HOST_DEVICE inline
#endif

namespace paddle_kure {

// Count, mean and central sums M_k = sum ((x - mean) / 2^exponent)^k of a set of values.
// A plain aggregate (zeroed by `CentralMoments m{}`, exponent 0) so CUDA shared memory can hold it.
struct CentralMoments {
  double n;
  double mean;
  double M2;
  double M3;
  double M4;
  int exponent;
};

// Adds one value (the n = 1 case of moments_merge, written out), in the
// accumulator's current units: it never rescales, so it suits values whose
// deviations fit the accumulator's exponent (any float32/float16 value at exponent 0).
KURE_HOST_DEVICE void moments_push(CentralMoments* a, double x) {
  const double n1 = a->n;
  const double n = n1 + 1.0;
  const double delta = ldexp(x - a->mean, -a->exponent);
  const double delta_n = delta / n;
  const double delta_n2 = delta_n * delta_n;
  const double term1 = delta * delta_n * n1;
  a->mean += ldexp(delta_n, a->exponent);
  a->M4 += term1 * delta_n2 * (n * n - 3.0 * n + 3.0) + 6.0 * delta_n2 * a->M2 -
           4.0 * delta_n * a->M3;
  a->M3 += term1 * delta_n * (n - 2.0) - 3.0 * delta_n * a->M2;
  a->M2 += term1;
  a->n = n;
}

// Combines the moments of two disjoint sets. The result's exponent covers both
// inputs' and the distance between their means, so the merge cannot overflow.
KURE_HOST_DEVICE CentralMoments moments_merge(const CentralMoments& a,
                                              const CentralMoments& b) {
  if (a.n == 0.0) return b;
  if (b.n == 0.0) return a;
  const double mean_gap = b.mean - a.mean;
  int e = a.exponent > b.exponent ? a.exponent : b.exponent;
  // (mean_gap - mean_gap == 0: finite and not NaN, in host and device code alike.)
  if (mean_gap != 0.0 && mean_gap - mean_gap == 0.0) {
    const int gap_e = ilogb(mean_gap) + 1;  // |mean_gap| < 2^gap_e
    e = gap_e > e ? gap_e : e;
  }
  // Both inputs in units of 2^e (factors <= 1: tiny contributions may underflow, harmlessly).
  const double ra = ldexp(1.0, a.exponent - e), rb = ldexp(1.0, b.exponent - e);
  const double ra2 = ra * ra, rb2 = rb * rb;
  const double a2 = a.M2 * ra2, a3 = a.M3 * ra2 * ra, a4 = a.M4 * ra2 * ra2;
  const double b2 = b.M2 * rb2, b3 = b.M3 * rb2 * rb, b4 = b.M4 * rb2 * rb2;

  CentralMoments r{};
  r.n = a.n + b.n;
  r.exponent = e;
  const double delta = ldexp(mean_gap, -e);
  const double d_n = delta / r.n;
  const double d2 = delta * delta;
  const double na_nb = a.n * b.n;
  r.mean = a.mean + b.n * (mean_gap / r.n);
  r.M2 = a2 + b2 + d2 * na_nb / r.n;
  r.M3 = a3 + b3 + d2 * d_n * na_nb * (a.n - b.n) / r.n + 3.0 * d_n * (a.n * b2 - b.n * a2);
  r.M4 = a4 + b4 + d2 * d_n * d_n * na_nb * (a.n * a.n - a.n * b.n + b.n * b.n) / r.n +
         6.0 * d_n * d_n * (a.n * a.n * b2 + b.n * b.n * a2) + 4.0 * d_n * (a.n * b3 - b.n * a3);
  return r;
}

// What the kurtosis and its gradient need: population moments m_k = M_k / n,
// in units of 2^exponent (the kurtosis is unitless).
struct KurtosisStats {
  double n;
  double mean;
  double m2;
  double m3;
  double kurtosis;
  // True for fewer than 2 values or zero variance: K is reported as 0 (a value
  // no real tensor has, K >= 1) and the gradient is 0. NaN/Inf inputs make the
  // moments NaN, which is not degenerate, so NaN propagates.
  bool degenerate;
  int exponent;
};

KURE_HOST_DEVICE KurtosisStats kurtosis_stats(const CentralMoments& m) {
  KurtosisStats s;
  s.n = m.n;
  s.mean = m.mean;
  s.exponent = m.exponent;
  s.m2 = m.n > 0.0 ? m.M2 / m.n : 0.0;
  s.m3 = m.n > 0.0 ? m.M3 / m.n : 0.0;
  s.degenerate = m.n < 2.0 || s.m2 == 0.0;
  // (m4 / m2) / m2 rather than m4 / m2^2: m2^2 may underflow when one outlier sets the units.
  s.kurtosis = s.degenerate ? 0.0 : ((m.M4 / m.n) / s.m2) / s.m2;
  return s;
}

// The Stats tensor that the forward op saves for backward: float64
// [mean, m2, m3, kurtosis, degenerate (0 or 1), exponent]; n comes from the input.
constexpr int kStatsSize = 6;

KURE_HOST_DEVICE void store_stats(const KurtosisStats& s, double* dst) {
  dst[0] = s.mean;
  dst[1] = s.m2;
  dst[2] = s.m3;
  dst[3] = s.kurtosis;
  dst[4] = s.degenerate ? 1.0 : 0.0;
  dst[5] = static_cast<double>(s.exponent);
}

KURE_HOST_DEVICE KurtosisStats load_stats(const double* src, double n) {
  KurtosisStats s;
  s.n = n;
  s.mean = src[0];
  s.m2 = src[1];
  s.m3 = src[2];
  s.kurtosis = src[3];
  s.degenerate = src[4] != 0.0;
  s.exponent = static_cast<int>(src[5]);
  return s;
}

// factor * dK/dx_i, with dK/dx_i = 4 / (n m2^2) ((x_i - mu)^3 - m3 - K m2 (x_i - mu)),
// as the cubic polynomial in the scaled deviation d = (x_i - mu) / 2^exponent
// that the kernels evaluate per element (dK/dx carries one more 1 / 2^exponent).
// Zero everywhere for a degenerate tensor.
struct KurtosisGrad {
  double mean, inv_unit, cubic, linear, constant;

  KURE_HOST_DEVICE KurtosisGrad(const KurtosisStats& s, double factor) {
    inv_unit = ldexp(1.0, -s.exponent);
    const double scale =
        s.degenerate ? 0.0 : factor * 4.0 * inv_unit / (s.n * s.m2 * s.m2);
    mean = s.mean;
    cubic = scale;
    linear = -scale * s.kurtosis * s.m2;
    constant = -scale * s.m3;
  }

  KURE_HOST_DEVICE double operator()(double x) const {
    const double d = (x - mean) * inv_unit;
    return (cubic * d * d + linear) * d + constant;
  }
};

}  // namespace paddle_kure
