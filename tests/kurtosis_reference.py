"""Independent references for the kurtosis tests: scipy for K, central differences for gradients."""
import numpy as np
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
