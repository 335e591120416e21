"""The built-in rules: smdebug's whole rule set, open, registered as a plugin like any third party's.

One module per family: gradients (and weights), losses, activations, tensors, data, training."""
from __future__ import annotations

from ...hookspecs import hookimpl
from .activations import DeadRelu, SaturatedActivation
from .data import CheckInputImages, ClassImbalance, Confusion, NlpSequenceRatio
from .gradients import ExplodingTensor, PoorWeightInitialization, VanishingGradient, WeightUpdateRatio
from .losses import LossNotDecreasing, Overfit, Overtraining
from .tensors import AllZero, SimilarAcrossRuns, TensorVariance, UnchangedTensor
from .training import StalledTraining

BUILTIN_RULES: list = [
    VanishingGradient, ExplodingTensor, LossNotDecreasing, Overfit, Overtraining, DeadRelu,
    PoorWeightInitialization, SaturatedActivation, WeightUpdateRatio, AllZero, UnchangedTensor,
    TensorVariance, ClassImbalance, Confusion, CheckInputImages, NlpSequenceRatio, SimilarAcrossRuns,
    StalledTraining,
]


@hookimpl
def tensortap_register_rules():
    return list(BUILTIN_RULES)
