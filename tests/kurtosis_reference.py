"""Independent references for the kurtosis tests: scipy for K, central differences for gradients."""
import numpy as np
import scipy.optimize
import scipy.stats


def kurtosis(x):
    return float(scipy.stats.kurtosis(np.asarray(x, dtype=np.float64).ravel(), fisher=False))


def numerical_grad(f, x, eps=1e-6):
    """Central-difference gradient of scalar f at x (float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f(x)
        flat[i] = old - eps
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def kure_term(w, coeff, target, l2_coeff=0.0):
    """coeff * d/dw (K(w) - target)^2 + l2_coeff * w, by central differences."""
    return coeff * numerical_grad(lambda v: (kurtosis(v) - target) ** 2, w) + l2_coeff * np.asarray(w, np.float64)


def kurtosis_longdouble(x):
    """K = m4 / m2^2 in numpy long double (x86-64: 80-bit, exponent range 1e+-4932),
    where the 4th powers of any float64 deviation are finite and nonzero."""
    d = np.asarray(x, dtype=np.longdouble).ravel()
    d = d - d.mean()
    m2 = np.mean(d * d)
    return np.mean(d**4) / m2 / m2


def kure_term_longdouble(w, coeff, target, l2_coeff=0.0):
    """coeff * d/dw (K(w) - target)^2 + l2_coeff * w from the closed form
    dK/dw_i = 4 / (n m2^2) ((w_i - mu)^3 - m3 - K m2 (w_i - mu)), in long double."""
    x = np.asarray(w, dtype=np.longdouble)
    d = x - x.mean()
    m2, m3 = np.mean(d * d), np.mean(d**3)
    k = np.mean(d**4) / m2 / m2
    dk = 4 / (x.size * m2 * m2) * (d**3 - m3 - k * m2 * d)
    return 2 * coeff * (k - target) * dk + l2_coeff * x


# Kurtoses of 13 tensors where the log-MAD rule's default (3.5 robust std) decides: 12.0 lies
# 3.1 robust std above the median (kept; a default of 3 would flag it) and 18.4 lies 4.1 above (flagged;
# a default of 5 would keep it). Both are over twice the median, so the min_ratio guard does not decide.
KURTOSES_NEAR_LOG_MAD_DEFAULT = [1.9, 2.2, 2.5, 2.75, 2.95, 3.15, 3.4, 3.6, 4.0, 4.5, 5.3, 12.0, 18.4]


def log_mad_z_scores(values):
    """Robust z-scores of log10(values): (log - median) / (1.4826 * MAD)."""
    logs = np.log10(np.asarray(values, dtype=np.float64))
    median = np.median(logs)
    return (logs - median) / (1.4826 * np.median(np.abs(logs - median)))


def array_with_kurtosis(target, shape, rng, large=2):
    """A zero-mean array of ``shape`` with kurtosis ``target``: ``large`` entries +-c, the rest +-1,
    c solved by root finding on the scipy kurtosis (1 < target < size / large)."""
    size = int(np.prod(shape))

    def values(c):
        half_large, half_small = large // 2, (size - large) // 2
        return np.array([c] * half_large + [-c] * half_large + [1.0] * half_small + [-1.0] * half_small)

    c = scipy.optimize.brentq(lambda c: kurtosis(values(c)) - target, 1.0, 1e3)
    return rng.permutation(values(c)).reshape(shape)
