"""Entry point of the tensortap-rules-health distribution (group "tensortap")."""
import tensortap

from .rules import GradientNormSpike, GradientSNR, UpdateSizeTrend


@tensortap.hookimpl
def tensortap_register_rules():
    return [GradientSNR, GradientNormSpike, UpdateSizeTrend]
