"""What the trainer callbacks share: attaching the hook to the trainer's model, stopping every
process together, recording what the trainer logs, and token strings read from a batch."""
from __future__ import annotations

import functools
import logging
import numbers
from typing import Any, Callable, Iterable, List, Mapping, Optional, Set, Tuple, TypeVar

import torch

from tensortap.errors import ConfigError

from ..util import dist_info, unwrap

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("tensortap")
_warned: Set[str] = set()


def guarded(method: F) -> F:
    """A trainer callback method whose failure inside tensortap is reported (once per method) and
    swallowed: training goes on. The user's own configuration errors (tt.ConfigError) still raise."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            if method.__qualname__ not in _warned:
                _warned.add(method.__qualname__)
                log.warning("tensortap: %s failed: %s: %s (training continues; not reported again)",
                            method.__qualname__, type(e).__name__, e)
            return None

    return run  # type: ignore[return-value]


def attach_model(hook: Any, model: Any) -> None:
    """Register the trainer's model with the hook, unless it is already the hook's model (wrappers
    such as DDP or torch.compile are looked through)."""
    adapter = hook.adapter
    if model is None or (adapter is not None and adapter.model is not None and unwrap(adapter.model) is unwrap(model)):
        return
    hook.register(model)


def includes(hook: Any, collection: str) -> bool:
    return any(c.name == collection for c in hook.collections)


def as_number(value: Any) -> Optional[Any]:
    """A logged value as something save_scalar takes (a number or a one-element tensor), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return value.detach().reshape(())
    return None


def record_logged(hook: Any, values: Mapping[str, Any], skip: Iterable[str] = ()) -> None:
    """Save what the trainer logged at the current step: names with "loss" in collection "losses",
    other numbers in "metrics" (each only when the hook includes that collection). Saved every time
    they are logged (as save_scalar does), whatever the save interval."""
    want_l, want_m = includes(hook, "losses"), includes(hook, "metrics")
    skipped = set(skip)
    for name, value in values.items():
        num = as_number(value)
        if num is None or name in skipped:
            continue
        coll = "losses" if "loss" in name.lower() else "metrics"
        if (want_l if coll == "losses" else want_m):
            hook.save_scalar(name, num, collection=coll)


class StopVote:
    """Stopping agreed by every process: at each optimizer step's end every process contributes its
    wish (0/1) to an all-reduce started then and read at the next step's end, so no process leaves the
    loop alone (DDP would wait forever) and none waits on the vote. One process: the wish itself."""

    def __init__(self) -> None:
        self._pending: Optional[Tuple[Any, torch.Tensor]] = None

    def decide(self, wish: bool) -> bool:
        if dist_info()[1] <= 1:
            return wish
        import torch.distributed as dist

        agreed = self.finish()
        t = torch.tensor([1.0 if wish else 0.0], device=_collective_device())
        self._pending = (dist.all_reduce(t, op=dist.ReduceOp.MAX, async_op=True), t)
        return agreed

    def finish(self) -> bool:
        """Wait for the vote in flight (at the end of training); True if some process wished to stop."""
        if self._pending is None:
            return False
        work, t = self._pending
        self._pending = None
        work.wait()
        return bool(t.item() > 0)


def _collective_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class Stopper:
    """Turns the hook's stop requests into the trainer's own stop flag, the same on every process."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self.vote = StopVote()
        self.reason: Optional[str] = None

    def at_step_end(self) -> bool:
        """True when training should stop now (after this optimizer step); says why once."""
        reason = self.hook.take_stop_request()
        if reason is not None and self.reason is None:
            self.reason = reason
        if not self.vote.decide(reason is not None):
            return False
        why = self.reason or "another process's rule asked to stop"
        log.warning("tensortap: stopping training after step %s: %s", self.hook.mode_step, why)
        return True


def token_strings(tokenizer: Any, ids: Any) -> Optional[List[List[str]]]:
    """Token strings of a (batch, seq) tensor of token ids, by `tokenizer.convert_ids_to_tokens`."""
    if tokenizer is None or not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
        return None
    return [list(map(str, tokenizer.convert_ids_to_tokens(row))) for row in ids.detach().cpu().tolist()]


class TokenFeed:
    """Gives the hook the token strings of each step that saves attention, from the batch's input_ids."""

    def __init__(self, hook: Any, tokenizer: Any) -> None:
        self.hook, self.tokenizer = hook, tokenizer
        self._done_at: Optional[int] = None

    def offer(self, ids: Any) -> None:
        hook = self.hook
        if self.tokenizer is None or not hook.wants("attention") or self._done_at == hook.step:
            return
        tokens = token_strings(self.tokenizer, ids)
        if tokens is not None:
            self._done_at = hook.step
            hook.set_tokens(tokens)
