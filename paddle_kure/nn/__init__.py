"""Layers: PACT (and, from paddle_kure.nn.quantizers, transformer quantizers)."""
from .pact import PACT, calibrate_pact, pact
from .quantizers import (ActivationFakeQuant, IRNetBinarizer, QuantLinear, SignBinarizer, WeightFakeQuant,
                         quantize_linears)
