"""smdebug's profiler has no counterpart in tensortap: importing this module says so."""
from .exceptions import NoCounterpart

raise NoCounterpart("smdebug.profiler has no counterpart in tensortap: tensortap captures tensors, not system or "
                    "framework metrics. Use torch.profiler, the TensorFlow profiler or MXNet's profiler instead.")
