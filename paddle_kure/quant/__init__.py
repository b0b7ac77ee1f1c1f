"""Quantization: QAT through PaddleSlim with KURE and PACT, PTQ, export, inference.

See README.md in this directory.
"""
from .config import KureConfig, PACTConfig, QuantAwareConfig
from .dygraph import apply_kure, export_quantized, post_training_quantize, prepare_qat
from .inference import InferenceModel
from . import static  # paddle_kure.quant.static: Program passes

__all__ = [
    "InferenceModel",
    "KureConfig",
    "PACTConfig",
    "QuantAwareConfig",
    "apply_kure",
    "export_quantized",
    "post_training_quantize",
    "prepare_qat",
]
