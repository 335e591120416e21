"""smdebug's trial API over a tensortap run: `from tensortap.compat.smdebug.trials import create_trial`.

Steps are global unless a mode is given (smdebug's `mode=modes.GLOBAL`). Tensor names are
tensortap's ("fc1.weight", "gradients/fc1.weight", "fc1/output_0", "loss", "accuracy"); smdebug's
spellings of the same tensors ("gradient/Net_fc1.weight", "fc1_output_0",
"CrossEntropyLoss_output_0", "scalar/accuracy") are accepted by `tensor()` and matched by
`tensor_names(regex=...)` too. Missing data raises smdebug's exceptions
(TensorUnavailableForStep, StepUnavailable, NoMoreData, ...), which are tensortap's StepNotFound /
TensorNotFound as well.
"""
from __future__ import annotations

import bisect
import enum
import logging
import re
import time
from typing import Any, Callable, Dict, Iterable, List, NoReturn, Optional, Tuple

import numpy as np

from ...errors import ConfigError, StepNotFound, TensorNotFound
from ...modes import ModeKeys, to_mode
from .exceptions import (InvalidWorker, NoCounterpart, NoMoreData, StepNotYetAvailable, StepUnavailable,
                         TensorUnavailable, TensorUnavailableForStep)
from .reduction_config import ALLOWED_NORMS, ALLOWED_REDUCTIONS

log = logging.getLogger("tensortap")
#: seconds between looks at a live run while waiting for a step (smdebug: 2)
POLL_SECONDS = 0.5


class StepState(enum.Enum):
    UNAVAILABLE = 0
    AVAILABLE = 1
    NOT_YET_AVAILABLE = 2


def smdebug_name(name: str) -> str:
    """How smdebug spelled a tensortap tensor name (gradients/x -> gradient/x, layer/output_0 ->
    layer_output_0); parameters lose smdebug's "<ModelClass>_" prefix, which tensortap does not add."""
    if name.startswith("gradients/"):
        return "gradient/" + smdebug_name(name[len("gradients/"):])
    return re.sub(r"/(input|output)_(\d+)$", r"_\1_\2", name)


#: smdebug's name of a registered loss module's output: its class name, "_output_0"
_LOSS_SPELLING = re.compile(r"\w*Loss_output_0")
#: a word a regex writes before "_": perhaps the model's or a loss's class, which smdebug put in names
_CLASS_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*(?=_)")


def _class_spellings(pattern: "re.Pattern", spellings: List[str], is_loss: bool) -> List[str]:
    """More smdebug spellings of a tensor to try `pattern` on: the run records neither the model's
    class ("Net_fc1.weight") nor a loss module's ("CrossEntropyLoss_output_0"), so the class
    names the regex itself writes are put in front; a loss also tries the bare "Loss_output_0"
    (matched by ".*Loss_output", "output_0")."""
    words = set(_CLASS_WORD.findall(pattern.pattern))
    out = []
    for sp in spellings:
        head, tail = ("gradient/", sp[len("gradient/"):]) if sp.startswith("gradient/") else ("", sp)
        out += [f"{head}{w}_{tail}" for w in words]
    if is_loss:
        out += [f"{w}_output_0" for w in words if w.endswith("Loss")] + ["Loss_output_0"]
    return out


def _tt_mode(mode) -> Optional[ModeKeys]:
    m = to_mode(mode)
    return None if m in (None, ModeKeys.GLOBAL) else m


def _flatten(items) -> List[Any]:
    out: List[Any] = []
    for it in items:
        if isinstance(it, (list, tuple)):
            out += _flatten(it)
        else:
            out.append(it)
    return out


def _numpy_reduction(name: str, value: np.ndarray, abs: bool) -> Any:
    """smdebug's reduction of a raw value (when the reduction itself was not saved); norms are of
    the flattened tensor."""
    if name not in ALLOWED_REDUCTIONS and name not in ALLOWED_NORMS:
        raise ConfigError(f"invalid reduction {name!r}: use one of {', '.join(ALLOWED_REDUCTIONS + ALLOWED_NORMS)}")
    a = np.absolute(value) if abs else np.asarray(value)
    if name in ALLOWED_NORMS:
        return np.linalg.norm(np.ravel(a).astype(np.float64), ord=int(name[1]))
    named: Dict[str, Callable[..., Any]] = {"min": np.amin, "max": np.amax, "variance": np.var}
    fn = named.get(name) or getattr(np, name)
    return fn(a)


class Trial:
    """smdebug's Trial over a tensortap trial (a finished or live run)."""

    def __init__(self, trial: Any, name: Optional[str] = None) -> None:
        self._t = trial
        self.name = name or getattr(trial, "name", None)
        self.path = getattr(trial, "path", None)
        self.logger = log
        self._aliases: Optional[Tuple[Any, Dict[str, List[str]], Dict[str, str], List[str]]] = None

    @property
    def tensortap_trial(self):
        """The tensortap trial underneath (tt.Trial API)."""
        return self._t

    # ---- freshness -------------------------------------------------------------------------
    def maybe_refresh(self, name: Optional[str] = None) -> None:
        self._t.refresh()

    refresh = maybe_refresh

    @property
    def loaded_all_steps(self) -> bool:
        return bool(self._t.is_complete())

    @property
    def num_workers(self) -> int:
        return len(self._t.workers())

    @property
    def last_complete_step(self) -> int:
        s = self._t.steps()
        return s[-1] if s and self._t.is_complete() else -1

    # ---- names -----------------------------------------------------------------------------
    def _names_cache(self) -> Tuple[Any, Dict[str, List[str]], Dict[str, str], List[str]]:
        """(key, tensortap name -> its smdebug spellings, a spelling -> the tensortap name, the
        losses), made again when the run gained tensors."""
        names = self._t.tensor_names()
        key = tuple(names)
        if self._aliases is None or self._aliases[0] != key:
            colls = self._t.collections()
            scalars = set(colls.get("scalars", ()))
            spell = {n: [smdebug_name(n)] + ([f"scalar/{n}"] if n in scalars else []) for n in names}
            self._aliases = (key, spell, {a: n for n, al in spell.items() for a in al}, list(colls.get("losses", ())))
        return self._aliases

    def _resolve(self, name: str) -> Optional[str]:
        """A tensortap name for `name`, which may be smdebug's spelling of it."""
        if self._t.has_tensor(name):
            return name
        _, _, aliases, losses = self._names_cache()
        if name in aliases:
            return aliases[name]
        if _LOSS_SPELLING.fullmatch(name) and losses:  # "CrossEntropyLoss_output_0": the run's loss
            if len(losses) > 1:
                raise ConfigError(f"{name!r} is smdebug's name of a loss module's output, and this run holds "
                                  f"{len(losses)} losses ({', '.join(losses)}; tensortap names them in the order "
                                  "they were registered, without the loss class): use one of those names")
            return losses[0]
        m = re.match(r"^(gradient/)?[A-Za-z_][A-Za-z0-9]*_(.+)$", name)  # smdebug's "<ModelClass>_" prefix
        if m:
            return aliases.get((m.group(1) or "") + m.group(2))
        return None

    def has_tensor(self, tname: str) -> bool:
        try:
            return self._resolve(tname) is not None
        except ConfigError:  # a loss spelling that names one of several losses: there is one
            return True

    def tensor(self, tname: str) -> "Tensor":
        real = self._resolve(tname)
        if real is None:
            self.maybe_refresh()
            real = self._resolve(tname)
        if real is None:
            raise TensorUnavailable(tname)
        return Tensor(self, real)

    def tensor_names(self, show_prefixed_tensors: bool = False, *, step: Optional[int] = None,
                     mode=ModeKeys.GLOBAL, regex=None, collection=None) -> List[str]:
        """Names of saved tensors, by step, mode, collection or regex (one of the last two, as in smdebug)."""
        if regex is not None and collection is not None:
            raise ValueError("Only one of `regex` or `collection` can be passed to this method")
        m = _tt_mode(mode)
        coll = getattr(collection, "name", collection)
        names = self._t.tensor_names(collection=coll, step=step, mode=m)
        if regex is not None:
            pats = [re.compile(r) for r in _flatten([regex])]
            _, spell, _, losses = self._names_cache()

            def matches(p: "re.Pattern", n: str) -> bool:
                known = spell.get(n) or [smdebug_name(n)]
                return any(p.search(t) for t in [n, *known, *_class_spellings(p, known, n in losses)])

            names = [n for n in names if any(matches(p, n) for p in pats)]
            if not names:
                log.warning("No tensors matching the regex pattern:%s given were saved", regex)
        elif collection is not None and not names:
            log.warning("No tensors from the collection %s were saved", coll)
        return sorted(names)

    # ---- steps -----------------------------------------------------------------------------
    def steps(self, mode=ModeKeys.GLOBAL, show_incomplete_steps: bool = False) -> List[int]:
        return self._t.steps(mode=_tt_mode(mode))

    def workers(self) -> List[str]:
        return self._t.workers()

    def global_step(self, mode, mode_step: int) -> Optional[int]:
        if _tt_mode(mode) is None:
            return mode_step
        return self._t.global_step(_tt_mode(mode), mode_step)

    def mode_modestep(self, global_step: int) -> Tuple[Optional[ModeKeys], Optional[int]]:
        return self._t.mode(global_step), self._t.mode_step(global_step)

    def mode_step(self, global_step: int) -> Optional[int]:
        return self._t.mode_step(global_step)

    def mode(self, global_step: int) -> Optional[ModeKeys]:
        return self._t.mode(global_step)

    def modes(self) -> List[ModeKeys]:
        return [m for m in (ModeKeys.TRAIN, ModeKeys.EVAL, ModeKeys.PREDICT) if self._t.steps(mode=m)]

    def collections(self) -> Dict[str, "CollectionView"]:
        return {n: CollectionView(n, names) for n, names in self._t.collections().items()}

    def collection(self, coll_name: str) -> "CollectionView":
        return CollectionView(coll_name, self._t.collections().get(coll_name, []))

    def has_passed_step(self, step: int, mode=ModeKeys.GLOBAL) -> StepState:
        """AVAILABLE (saved), UNAVAILABLE (never will be: a later step exists or the run ended),
        NOT_YET_AVAILABLE (a live run has not reached it)."""
        steps = self.steps(mode)
        i = bisect.bisect_left(steps, step)
        if i < len(steps) and steps[i] == step:
            return StepState.AVAILABLE
        if i < len(steps) or self.loaded_all_steps:
            return StepState.UNAVAILABLE
        return StepState.NOT_YET_AVAILABLE

    def wait_for_steps(self, required_steps: Iterable[int], mode=ModeKeys.GLOBAL) -> None:
        """Wait until each step is saved; StepUnavailable for a step that never will be, NoMoreData
        for one beyond the end of a finished run."""
        for step in required_steps:
            while True:
                state = self.has_passed_step(step, mode)
                if state == StepState.AVAILABLE:
                    break
                if state == StepState.UNAVAILABLE:
                    steps = self.steps(mode)
                    last = steps[-1] if steps else -1
                    if step < last:
                        raise StepUnavailable(step, to_mode(mode) or ModeKeys.GLOBAL)
                    raise NoMoreData(step, to_mode(mode) or ModeKeys.GLOBAL, last)
                time.sleep(POLL_SECONDS)
                self.maybe_refresh()

    def next_step(self, step: int, mode=ModeKeys.GLOBAL) -> Optional[int]:
        """The first saved step >= `step` (None if there is none yet)."""
        steps = self.steps(mode)
        i = bisect.bisect_left(steps, step)
        return steps[i] if i < len(steps) else None

    # ---- what smdebug offered for specific collections ----------------------------------------
    def inputs(self, step: int, mode=ModeKeys.GLOBAL) -> List[np.ndarray]:
        return [self.tensor(n).value(step, mode) for n in self.tensor_names(step=step, mode=mode, collection="inputs")]

    def labels(self, step: int, mode=ModeKeys.GLOBAL) -> List[np.ndarray]:
        return [self.tensor(n).value(step, mode) for n in self.tensor_names(step=step, mode=mode, regex="labels*")]

    def predictions(self, step: int, mode=ModeKeys.GLOBAL) -> List[np.ndarray]:
        return [self.tensor(n).value(step, mode) for n in self.tensor_names(step=step, mode=mode, regex="predictions*")]

    def __repr__(self) -> str:
        return f"<smdebug-compatible Trial over {self._t!r}>"


class CollectionView:
    """A collection as a trial reads it: its name and the tensors saved in it."""

    def __init__(self, name: str, tensor_names: Iterable[str]) -> None:
        self.name = name
        self.tensor_names = set(tensor_names)
        self.include_regex: List[str] = []

    def __repr__(self) -> str:
        return f"<class Collection: name={self.name}>"


class Tensor:
    """smdebug's Tensor: value / values / reduction_value / steps / workers / prev_steps."""

    def __init__(self, trial: Trial, name: str) -> None:
        self.trial = trial
        self.name = name
        self.original_name = None
        self._t = trial.tensortap_trial.tensor(name)

    def _raise(self, e: Exception, step: int, mode) -> NoReturn:
        """A tensortap StepNotFound/TensorNotFound as the smdebug exception for the same case."""
        m = to_mode(mode) or ModeKeys.GLOBAL
        state = self.trial.has_passed_step(step, mode)
        if state == StepState.NOT_YET_AVAILABLE:
            raise StepNotYetAvailable(step, m) from None
        if state == StepState.UNAVAILABLE:
            raise StepUnavailable(step, m) from None
        raise TensorUnavailableForStep(self.name, step, m, has_reductions="only reductions" in str(e)) from None

    def steps(self, mode=ModeKeys.GLOBAL, show_incomplete_steps: bool = False) -> List[int]:
        return self._t.steps(mode=_tt_mode(mode))

    def value(self, step_num: int, mode=ModeKeys.GLOBAL, worker: Optional[str] = None) -> np.ndarray:
        try:
            return self._t.value(step_num, mode=_tt_mode(mode), worker=worker)
        except ConfigError:
            raise InvalidWorker(worker) from None
        except (StepNotFound, TensorNotFound) as e:
            self._raise(e, step_num, mode)

    def values(self, mode=ModeKeys.GLOBAL, worker: Optional[str] = None) -> Dict[int, np.ndarray]:
        return self._t.values(mode=_tt_mode(mode), worker=worker)

    def shape(self, step_num: int, mode=ModeKeys.GLOBAL, worker: Optional[str] = None) -> Tuple[int, ...]:
        return tuple(self.value(step_num, mode, worker).shape)

    def reduction_value(self, step_num: int, reduction_name: str, mode=ModeKeys.GLOBAL,
                        worker: Optional[str] = None, abs: bool = False) -> Any:
        """A saved reduction; else computed from the saved value, as smdebug did."""
        saved = "abs_" + reduction_name if abs and reduction_name in ("min", "max", "mean") else reduction_name
        if not abs or saved != reduction_name or reduction_name in ALLOWED_NORMS:
            try:
                return self._t.reduction_value(step_num, saved, mode=_tt_mode(mode), worker=worker)
            except (StepNotFound, TensorNotFound):
                pass
        return _numpy_reduction(reduction_name, self.value(step_num, mode, worker), abs)

    def reduction_values(self, step_num: int, mode=ModeKeys.GLOBAL, worker: Optional[str] = None
                         ) -> Dict[Tuple[str, bool], Any]:
        """{(name, abs): value} of the reductions saved at that step."""
        try:
            got = self._t.reduction_values(step_num, mode=_tt_mode(mode), worker=worker)
        except (StepNotFound, TensorNotFound) as e:
            self._raise(e, step_num, mode)
        return {(n[4:], True) if n.startswith("abs_") else (n, False): v for n, v in got.items()}

    def workers(self, step_num: int, mode=ModeKeys.GLOBAL) -> List[str]:
        got = self._t.workers(step_num, mode=_tt_mode(mode))
        if not got:
            raise TensorUnavailableForStep(self.name, step_num, to_mode(mode) or ModeKeys.GLOBAL)
        return got

    def prev_steps(self, step: int, n: Optional[int] = None, mode=ModeKeys.GLOBAL) -> List[int]:
        steps = self.steps(mode)
        prev = steps[:bisect.bisect_right(steps, step)]
        return prev[-n:] if n else prev

    def __repr__(self) -> str:
        return f"<Tensor {self.name!r}>"


def as_trial(trial: Any) -> Trial:
    """A compat Trial for a compat Trial, a tensortap trial, or a run path."""
    if isinstance(trial, Trial):
        return trial
    if isinstance(trial, str) or hasattr(trial, "__fspath__"):
        return create_trial(str(trial))
    return Trial(trial)


def create_trial(path: str, name: Optional[str] = None, profiler: bool = False, output_dir: Optional[str] = None,
                 **kwargs: Any) -> Trial:
    """Open a run (local path or fsspec URL such as s3://...) with smdebug's trial API."""
    if profiler:
        raise NoCounterpart("create_trial(..., profiler=True): smdebug's profiler has no counterpart in tensortap "
                            "(use torch.profiler or the TensorFlow profiler)")
    from ...trial import create_trial as tt_create_trial

    path = str(path).strip()
    return Trial(tt_create_trial(path), name=name)
