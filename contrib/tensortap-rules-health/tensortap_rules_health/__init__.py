"""Training-health rules for tensortap (Cockpit-style): gradient SNR, norm spikes, update trends."""
from .rules import GradientNormSpike, GradientSNR, UpdateSizeTrend

__version__ = "0.1.0"

__all__ = ["GradientSNR", "GradientNormSpike", "UpdateSizeTrend"]
__version__ = "0.1.0"
