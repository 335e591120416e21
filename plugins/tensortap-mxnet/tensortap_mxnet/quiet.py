"""Suspend tensortap's own hooks while tensortap itself runs a model (Grad-CAM, attention maps): the
one quiet context of tensortap.capture, named as this plugin's modules use it."""
from tensortap.capture import is_quiet as suspended
from tensortap.capture import quiet

__all__ = ["quiet", "suspended"]
