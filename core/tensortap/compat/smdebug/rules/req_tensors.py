"""smdebug's RequiredTensors: what a rule declares it reads at a step (`self.req_tensors.add(name,
steps=[...])`), fetched before invoke_at_step so a missing value skips the step."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from ..exceptions import TensorUnavailable


class RequiredTensorsForTrial:
    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self._tensor_steps: Dict[str, List[int]] = {}
        self._tensors: Dict[str, Any] = {}

    def _add_steps_for_tensor(self, name: str, steps: Iterable[int]) -> None:
        self._tensor_steps.setdefault(name, []).extend(steps)
        if name not in self._tensors:
            self._tensors[name] = self.trial.tensor(name)

    def add(self, name: str, steps: Iterable[int], should_match_regex: bool = False) -> None:
        steps = list(steps)
        if should_match_regex:
            for n in self.trial.tensor_names(regex=[name]):
                self._add_steps_for_tensor(n, steps)
        else:
            if not self.trial.has_tensor(name):
                raise TensorUnavailable(name)
            self._add_steps_for_tensor(name, steps)

    def get_tensor_steps(self, name: str) -> List[int]:
        return self._tensor_steps[name]

    def get_names(self):
        return self._tensor_steps.keys()

    def get(self):
        return self._tensors.values()

    def clear(self) -> None:
        self._tensor_steps.clear()
        self._tensors.clear()

    def fetch(self) -> None:
        """Wait for the steps and read every value once: a missing one raises the smdebug exception."""
        steps = sorted({s for ss in self._tensor_steps.values() for s in ss})
        if steps:
            self.trial.wait_for_steps(steps)
        for name, ss in self._tensor_steps.items():
            t = self._tensors[name]
            for s in ss:
                t.value(s)


class RequiredTensors:
    """Per trial (the rule's base trial and its other trials)."""

    def __init__(self, base_trial: Any, other_trials: Optional[List[Any]] = None) -> None:
        self.base_trial = base_trial
        self._per_trial: Dict[int, RequiredTensorsForTrial] = {}
        for t in [base_trial] + list(other_trials or []):
            if t is not None:
                self._per_trial[id(t)] = RequiredTensorsForTrial(t)

    def _for(self, trial: Any) -> RequiredTensorsForTrial:
        trial = self.base_trial if trial is None else trial
        if trial is None:
            raise RuntimeError("this rule has no trial yet: it gets one when it is evaluated "
                               "(invoke_rule, hook.add_rule, `tensortap rules run`)")
        got = self._per_trial.get(id(trial))
        if got is None:
            got = self._per_trial[id(trial)] = RequiredTensorsForTrial(trial)
        return got

    def add(self, name: str, steps: Iterable[int], trial: Any = None, should_match_regex: bool = False) -> None:
        self._for(trial).add(name, steps, should_match_regex=should_match_regex)

    def get_tensor_steps(self, name: str, trial: Any = None) -> List[int]:
        return self._for(trial).get_tensor_steps(name)

    def get_names(self, trial: Any = None):
        return self._for(trial).get_names()

    def get(self, trial: Any = None):
        return self._for(trial).get()

    def clear(self) -> None:
        for r in self._per_trial.values():
            r.clear()

    def fetch(self) -> None:
        for r in self._per_trial.values():
            r.fetch()
