"""Plugin-registered vector reductions (tensortap.VectorReduction) of torch tensors, where they live.

A reduction's torch implementation runs on the tensor's device under no_grad and returns a small
1-D tensor (e.g. one value per channel); only that vector crosses to the host. On a CUDA device
the copy is queued (pinned memory, an event) and the Hook collects it before the step is written:
the training thread never waits for the GPU. A value held for its gradient (`Held`) is the tensor
itself, not a copy; if the user's code changed it in place before the gradient came, the
reduction is refused (reported) rather than computed on the changed values.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from tensortap.vector_reductions import VectorReduction, as_vector

from .convert import plain, to_numpy


class Held:
    """A captured tensor kept for its gradient: the tensor (detached, no copy) and its version."""

    __slots__ = ("tensor", "version")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor.detach()
        self.version = tensor._version

    def get(self, what: str) -> torch.Tensor:
        if self.tensor._version != self.version:
            raise RuntimeError(f"the tensor changed in place after it was captured (e.g. an in-place op such as "
                               f"ReLU(inplace=True) after it), so {what} would use changed values; not saved at "
                               "this step: capture the output of the in-place op instead")
        return self.tensor


class DeviceVector:
    """A reduction's vector on an accelerator, copied to the host without a sync; done()/result()."""

    __slots__ = ("event", "host", "name", "source")

    def __init__(self, name: str, vec: torch.Tensor) -> None:
        self.name = name
        self.event: Optional[Any] = None
        self.source: Optional[torch.Tensor] = None
        if vec.is_cuda:
            self.host = torch.empty(vec.shape, dtype=torch.float64, pin_memory=True)
            self.host.copy_(vec.double(), non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:  # other accelerators: the copy when the Hook asks for it
            self.host = None
            self.source = vec

    def done(self) -> bool:
        return self.event.query() if self.event is not None else True

    def result(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
            return as_vector(self.name, self.host.numpy().copy())
        return as_vector(self.name, self.source.double().cpu().numpy())


def reduce_vector(reduction: VectorReduction, tensors: Sequence[Any]) -> Any:
    """`reduction` of `tensors` (a value or a `Held` value, then its gradient): with the reduction's
    torch implementation where they live, else its numpy one on host copies."""
    ts = [t.get(f"reduction {reduction.name!r}") if isinstance(t, Held) else t for t in tensors]
    fn = reduction.implementation("torch")
    if fn is None or not all(isinstance(t, torch.Tensor) for t in ts):
        return reduction.compute_numpy([t if isinstance(t, np.ndarray) else to_numpy(t) for t in ts])
    with torch.no_grad():
        vec = fn(*[plain(t) for t in ts])
    if not isinstance(vec, torch.Tensor):
        return as_vector(reduction.name, vec)
    if vec.dim() != 1:
        raise ValueError(f"reduction {reduction.name!r} (torch) must return a 1-D vector, returned shape "
                         f"{tuple(vec.shape)}")
    if vec.device.type == "cpu":
        return vec.detach().to(torch.float64).numpy().copy()
    return DeviceVector(reduction.name, vec.detach())
