"""paddle_kure: make PaddlePaddle models survive low-precision deployment.

Kurtosis regularization (KURE) with a fused C++/CUDA operator, selective KURE for
pretrained models, PACT and quantization-aware training with PaddleSlim,
gradual magnitude pruning, and transformer quantization/binarization.
"""
from ._environment import build_info, check_paddle

# A clear message, before anything imports paddle, when Paddle is missing or too old.
check_paddle()

from .losses import ActivationKurtosis, Kure, KurtosisLoss  # noqa: E402
from .ops import kurtosis, kurtosis_decay_grad, load_library  # noqa: E402
from .regularizer import KurtosisDecay  # noqa: E402
from .selection import KurePlan, attach_kure, plan_kure  # noqa: E402

__version__ = "0.1.0"

# Registers the custom operators now, so saved models using them load in this process.
load_library()

__all__ = [
    "ActivationKurtosis",
    "Kure",
    "KurePlan",
    "KurtosisDecay",
    "KurtosisLoss",
    "attach_kure",
    "build_info",
    "kurtosis",
    "kurtosis_decay_grad",
    "load_library",
    "plan_kure",
]
