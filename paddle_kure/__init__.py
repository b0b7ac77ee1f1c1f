"""paddle_kure: make PaddlePaddle models survive low-precision deployment.

Kurtosis regularization (KURE) with a fused C++/CUDA operator, selective KURE for
pretrained models, PACT and quantization-aware training with PaddleSlim,
gradual magnitude pruning, and transformer quantization/binarization.

The KURE surface: :class:`KurtosisDecay` (the regularizer), :func:`plan_kure` /
:func:`attach_kure` (choose tensors, attach it), :class:`KurtosisLoss` / :class:`Kure`
(a loss term), ``paddle_kure.quant.prepare_qat(kure=...)`` and its static counterpart
``paddle_kure.quant.static.add_kurtosis_regularization``. The application wing
(``paddle_kure.apps``: the run pipeline, the studies, the kurtosis report) is built
on this core and never imported by it.
"""
import warnings

from ._environment import VERSION as __version__, build_info, check_paddle

with warnings.catch_warnings():
    # Importing Paddle warns that ccache (a compiler cache for building C++ extensions) is
    # missing; nothing is built here, so the warning only confuses users of the package.
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
    # A clear message, before anything imports paddle, when Paddle is missing or too old.
    check_paddle()
    import paddle  # noqa: F401

from .losses import ActivationKurtosis, Kure, KurtosisLoss  # noqa: E402
from .ops import kurtosis, kurtosis_decay_grad, load_library  # noqa: E402
from .regularizer import KurtosisDecay  # noqa: E402
from .selection import KurePlan, attach_kure, plan_kure  # noqa: E402

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
