"""What a rule reads, declared on its class (`Rule.needs`, a tuple of `Need`), and the two checks
built on it: `Hook.add_rule` warns at once when the hook does not save it, and an evaluation that
found nothing to check is skipped with a reason naming what to add."""
from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..collections import WHOLE_VALUE_CATEGORIES
from ..layers import LayerInfo, display_kind

if TYPE_CHECKING:  # pragma: no cover
    from ..hook import Hook

#: what a collection's tensors are called in messages
_WHAT = {"outputs": "layer outputs", "inputs": "layer inputs", "gradients": "parameter gradients",
         "weights": "weights", "biases": "biases", "losses": "losses", "metrics": "metrics", "scalars": "scalars"}
#: collections the framework adapters fill (the Hook must include them); others are saved by hand
CAPTURED = frozenset({"weights", "biases", "gradients", "inputs", "outputs", "metrics", "attention", "feature_maps"})
#: an activation applied as a function is invisible to every adapter: what to write instead
INVISIBLE = ("an activation applied as a function inside forward/call (F.relu, torch.tanh, tf.nn.relu, "
             "F.Activation in hybrid_forward) is no layer and cannot be seen: make it a layer (nn.ReLU(), "
             "keras.layers.ReLU() or Activation('relu'), gluon nn.Activation('relu')), or pass tensor_regex")


class RuleNeedsWarning(UserWarning):
    """Hook.add_rule: the hook does not save what the rule reads (the rule would only skip)."""


@dataclass(frozen=True)
class Need:
    """One kind of tensor a rule reads.

    collection:  where such tensors are saved ("gradients", "outputs", "losses", or a collection of
                 your own, e.g. "labels")
    layer_kinds: for layer inputs/outputs, only those of layers of these kinds ("relu", "tanh";
                 see tensortap.layers), found through the layer classes the run records
    what:        how messages name them (default: made from the two above)
    full_values: the rule reads whole tensors (`value(step)`), so a hook that saves only reductions
                 of them leaves it nothing to check (Hook.add_rule warns); False for a rule that
                 reads only `reduction_value(step, name)`
    """

    collection: str
    layer_kinds: tuple[str, ...] = ()
    what: str = ""
    full_values: bool = True

    def __post_init__(self) -> None:
        kinds = (self.layer_kinds,) if isinstance(self.layer_kinds, str) else tuple(self.layer_kinds)
        object.__setattr__(self, "layer_kinds", kinds)

    @property
    def io(self) -> str:
        """"input" for collection "inputs", else "output"."""
        return "input" if self.collection == "inputs" else "output"

    def describe(self) -> str:
        """"the outputs of ReLU layers", "parameter gradients", "tensors of collection 'labels'"."""
        if self.what:
            return self.what
        if self.layer_kinds:
            return f"the {self.io}s of {' or '.join(display_kind(k) for k in self.layer_kinds)} layers"
        return _WHAT.get(self.collection, f"tensors of collection {self.collection!r}")

    def fix(self) -> str:
        """What to change in the training script so that these tensors are saved."""
        if self.collection == "losses":
            return ("add 'losses' to include_collections and record the loss (hook.record_loss(loss) or "
                    "hook.register_loss(loss_fn); Keras fit records it)")
        if self.collection == "scalars":
            return "save it with hook.save_scalar(name, value)"
        if self.collection in CAPTURED:
            return f"add {self.collection!r} to include_collections"
        return f"save them with hook.save_tensor(name, value, collections=[{self.collection!r}])"


Needs = tuple[Need, ...]


def as_needs(value: Need | Sequence[Need] | None) -> Needs:
    if value is None:
        return ()
    return (value,) if isinstance(value, Need) else tuple(value)


def _kinds_text(layers: dict[str, LayerInfo], limit: int = 6) -> str:
    """"Linear ×2, Sequential" for messages: the classes of the recorded layers."""
    counts = Counter(info.class_name.rsplit(".", 1)[-1] for info in layers.values())
    items = [f"{c} ×{n}" if n > 1 else c for c, n in counts.most_common()]
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _fused(layers: dict[str, LayerInfo], kinds: Sequence[str]) -> list[LayerInfo]:
    return [info for info in layers.values() if info.activation in kinds and info.kind not in kinds]


def why_missing(need: Need, trial, step: int) -> str:
    """Why `trial` holds nothing `need` names at `step`, and what to change: the reason of a
    skipped evaluation ("no saved tensor is the output of a ReLU layer; ...")."""
    kinds = " or ".join(display_kind(k) for k in need.layer_kinds)
    head = f"no saved tensor is the {need.io} of a {kinds} layer" if need.layer_kinds else \
        f"no {need.describe()} saved at this step"
    if not trial.tensor_names(collection=need.collection, step=step):
        if trial.tensor_names(collection=need.collection):
            return f"{head} (collection {need.collection!r} has none at this step; it has at others)"
        return f"{head}; {need.fix()}"
    if not need.layer_kinds:
        return head
    layers = trial.layers()
    if not layers:
        return (f"{head}: this run records no layer classes (saved by hand or by an older tensortap), so layers "
                "are found by name only; pass tensor_regex naming them")
    fused = _fused(layers, need.layer_kinds)
    if fused and need.io == "input":
        names = ", ".join(info.name for info in fused[:4])
        return (f"{head}: {kinds} is applied inside {len(fused)} layer(s) ({names}, e.g. Dense(activation=...)), "
                f"whose {kinds} inputs are never captured; use a separate activation layer")
    return f"{head} (the model's layers: {_kinds_text(layers)}); {INVISIBLE}"


def nothing_checked(needs: Needs, trial, step: int) -> str:
    """The reason of an evaluation that checked no tensor, from what the rule declares it reads."""
    if not needs:
        return "found no tensor to check (trial.tensor_names(step=...) lists what was saved at a step)"
    return "; ".join(dict.fromkeys(why_missing(n, trial, step) for n in needs))


# ---- Hook.add_rule --------------------------------------------------------------------------------
def _saves(hook: Hook, collection: str) -> bool:
    """Could the hook save tensors of `collection`? (True for collections it cannot know about:
    a collection of the user's own is filled by save_tensor whatever the hook includes)."""
    if collection == "scalars" or collection not in hook.registry.collections:
        return True  # save_scalar saves whatever the hook includes; so does save_tensor for unknown names
    return any(c.wants_category(collection) for c in hook.collections)


def _only_reductions(hook: Hook, collection: str) -> tuple[str, ...]:
    """The reductions the hook saves of `collection` when it saves no whole tensor of it (every
    collection of the hook that could take them has a reduction_config without save_raw_tensor);
    () when whole tensors can be saved."""
    if collection in WHOLE_VALUE_CATEGORIES:
        return ()  # always stored whole
    configs = [c.reduction_config or hook.reduction_config for c in hook.collections if c.wants_category(collection)]
    if not configs or any(rc is None or rc.save_raw_tensor for rc in configs):
        return ()  # saved by hand (save_tensor keeps values), or some collection keeps whole tensors
    return tuple(dict.fromkeys(str(r) for rc in configs if rc is not None for r in rc.reductions))


class NeedsCheck:
    """For each rule added to a hook: warn once (RuleNeedsWarning, and an event in the run) when the
    hook does not save what the rule reads. Collections are checked at add_rule; layer kinds once
    the model's layers are known, at the next saved step (Keras builds and names its layers in the
    first step)."""

    def __init__(self, hook: Hook) -> None:
        self.hook = hook
        self.waiting: list[Any] = []  # rules whose layer kinds are checked at the next saved step
        self.notes: list[str] = []  # warnings given before the run had a writer: recorded at the next saved step

    @property
    def pending(self) -> bool:
        """Something to do at the next saved step."""
        return bool(self.waiting or self.notes)

    def _warn(self, rule, text: str, stacklevel: int) -> None:
        msg = f"tensortap: {text}"
        warnings.warn(msg, RuleNeedsWarning, stacklevel=stacklevel + 1)
        self.notes.append(msg)
        if self.hook.writer is not None:
            self._record()

    def _record(self) -> None:
        """The warnings as events in the run (`tensortap ls` and the report show them)."""
        notes, self.notes = self.notes, []
        for msg in notes:
            self.hook._report_event("rule_needs", msg)

    def added(self, rule) -> None:
        needs = as_needs(rule.requirements())
        if not needs:
            return
        have = [n for n in needs if _saves(self.hook, n.collection)]
        if not have:
            what = " or ".join(n.describe() for n in needs)
            fixes = " or ".join(dict.fromkeys(n.fix() for n in needs))
            self._warn(rule, f"rule {rule.name} reads {what}, which this hook does not save: {fixes}", stacklevel=3)
            return
        whole = [n for n in have if not (n.full_values and _only_reductions(self.hook, n.collection))]
        if not whole:
            what = " or ".join(n.describe() for n in have)
            reds = (", ".join(dict.fromkeys(r for n in have for r in _only_reductions(self.hook, n.collection)))
                    or "none")
            colls = " or ".join(repr(n.collection) for n in have)
            self._warn(rule, f"rule {rule.name} reads whole tensors ({what}), but this hook saves only their "
                       f"reductions ({reds}): set save_raw_tensor=True in the hook's reduction_config "
                       f"(tt.ReductionConfig(reductions=[...], save_raw_tensor=True)), or give collection {colls} "
                       "its own tt.ReductionConfig(save_raw_tensor=True)", stacklevel=3)
            return
        if any(n.layer_kinds for n in whole):
            self.waiting.append(rule)

    def step_saved(self) -> None:
        self._record()
        waiting, self.waiting = self.waiting, []
        layers = self.hook.layers
        if not layers:  # no adapter described its layers (saved by hand, the numpy test adapter): no opinion
            return
        for rule in waiting:
            needs = [n for n in as_needs(rule.requirements()) if _saves(self.hook, n.collection)]
            if any(not n.layer_kinds for n in needs):
                continue  # it can check something else
            if any(info.kind_of(n.io) in n.layer_kinds for n in needs for info in layers.values()):
                continue
            what = " or ".join(n.describe() for n in needs)
            fused = [info.name for n in needs if n.io == "input" for info in _fused(layers, n.layer_kinds)]
            why = (f"{', '.join(fused[:4])} apply the activation inside the layer (activation=...), so its input is "
                   "never captured: use a separate activation layer" if fused else INVISIBLE)
            self._warn(rule, f"rule {rule.name} reads {what}, but the registered model has no such layer tensortap "
                       f"can see (its layers: {_kinds_text(layers)}); {why}", stacklevel=4)
        self._record()
