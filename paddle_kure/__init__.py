"""paddle_kure: make PaddlePaddle models survive low-precision deployment.

Kurtosis regularization (KURE) with a fused C++/CUDA operator, selective KURE for
pretrained models, PACT and quantization-aware training with PaddleSlim,
gradual magnitude pruning, and transformer quantization/binarization.
"""
from .ops import kurtosis, kurtosis_decay_grad, load_library
from .regularizer import KurtosisDecay

__version__ = "0.1.0"

# Registers the custom operators now, so saved models using them load in this process.
load_library()

__all__ = ["KurtosisDecay", "kurtosis", "kurtosis_decay_grad", "load_library"]
