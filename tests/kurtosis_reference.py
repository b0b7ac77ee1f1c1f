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
