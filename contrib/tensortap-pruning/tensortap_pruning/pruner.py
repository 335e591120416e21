"""TaylorPruner: iterative filter pruning of a PyTorch model driven by a tensortap run.

Each iteration the user fine-tunes with a tt.Hook attached, which computes the chosen importance
(importance.py: Taylor by default, or filter L1 norm, BatchNorm scale, random) as it captures:
one small vector per tapped tensor per saved step, on the tensor's device, instead of the tensor.
Then `record(accuracy)` saves pruning/params, pruning/size_mb, pruning/accuracy (the
`pruning_accuracy` rule checks the accuracy) and `prune()` reads the vectors back through
tt.create_trial, ranks every channel, removes the least important ones across their whole
channel group, and re-attaches the hook. Rebuild the optimizer after `prune()`: the parameters
are new objects. `capture="tensors"` keeps the old way (whole feature maps and their gradients,
the Taylor criterion computed from them when ranking) to check the two agree.
"""
from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensortap as tt
import torch
import torch.nn as nn

from .graph import BATCH_NORMS, CONVS, ChannelGroup, analyse
from .importance import CRITERIA, REDUCTION_OF, seed_random
from .rule import PruningAccuracy
from .scalars import SCALARS
from .surgery import count_params, plan_removal, remove_channels, size_mb
from .taylor import l2_normalise, layer_scores_from_trial

NEVER = tt.SaveConfigMode(start_step=2 ** 62)


@dataclass
class PruneStep:
    """What one `prune()` call removed."""

    iteration: int
    removed: Dict[str, int]             # group label -> channels removed
    params_before: int
    params_after: int
    ranked_steps: List[int] = field(default_factory=list)
    channels: Dict[str, List[int]] = field(default_factory=dict)  # group label -> indices removed (before removal)


class TaylorPruner:
    """Rank and remove channels of `model` by the importance `criterion` ("taylor", "l1", "bn_scale",
    "random"; importance.py) that the Hook computes while capturing.

    >>> pruner = TaylorPruner(model, example_batch, filters_per_iteration=8, min_accuracy=0.9)
    >>> hook = pruner.make_hook("runs/prune")          # or add pruner.collections() to your own hook
    >>> while not pruner.stopped:
    ...     fine_tune(model, make_optimizer(model)); pruner.record(evaluate(model))
    ...     if not pruner.stopped: pruner.prune()
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, filters_per_iteration: int = 8,
                 min_accuracy: Optional[float] = None, min_channels: int = 2, capture_interval: int = 1,
                 criterion: str = "taylor", capture: str = "reductions", seed: int = 0) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {criterion!r}")
        if capture not in ("reductions", "tensors") or (capture == "tensors" and criterion != "taylor"):
            raise ValueError(f"capture must be 'reductions' (the importance computed while capturing) or, for "
                             f"criterion 'taylor' only, 'tensors' (whole feature maps and gradients); got {capture!r}")
        if filters_per_iteration < 1:
            raise ValueError(f"filters_per_iteration must be >= 1, got {filters_per_iteration}")
        if capture_interval < 1:
            raise ValueError(f"capture_interval must be >= 1, got {capture_interval}")
        self.model = model
        self.example_input = example_input
        self.filters_per_iteration = int(filters_per_iteration)
        self.min_channels = int(min_channels)
        self.capture_interval = int(capture_interval)
        self.criterion, self.capture = criterion, capture
        if criterion == "random":
            seed_random(seed)
        self.groups: List[ChannelGroup] = analyse(model, example_input)
        if not any(g.prunable for g in self.groups):
            raise ValueError("no prunable channel group found: " +
                             "; ".join(f"{g.producers or g.taps}: {g.frozen}" for g in self.groups))
        self.rule = PruningAccuracy(min_accuracy) if min_accuracy is not None else None
        self.hook: Optional[tt.Hook] = None
        self.iteration = 0
        self.history: List[dict] = []
        self.prune_steps: List[PruneStep] = []
        self.best_state: Optional[dict] = None
        self.stopped = False
        self.stop_reason = ""
        self._last_ranked_step = -1

    # ---- configuration -------------------------------------------------------------------
    @property
    def tap_layers(self) -> List[str]:
        """Layers whose output (and its gradient) the Taylor criterion needs."""
        return [t for g in self.groups if g.prunable for t in g.rank_taps]

    def sources(self, g: ChannelGroup) -> List[Tuple[str, int]]:
        """(stored tensor name, offset of the group's channels in it) the criterion ranks `g` by:
        feature maps (taylor, random), producer weights (l1) or norm weights (bn_scale)."""
        if self.criterion in ("taylor", "random"):
            return [(f"{t}/output_0", 0) for t in g.rank_taps]
        if self.criterion == "l1":
            return [(f"{p}.weight", 0) for p in g.producers]
        mods = dict(self.model.named_modules())
        return [(f"{n}.weight", g.offset.get(n, 0)) for n in g.norms
                if getattr(mods.get(n), "weight", None) is not None]

    def collections(self) -> List[tt.Collection]:
        """The collections to add to a tt.Hook: the importance of the tapped tensors (training
        steps only, every `capture_interval` steps) and the pruning scalars."""
        names = sorted({src for g in self.groups if g.prunable for src, _ in self.sources(g)})
        pattern = "|".join(re.escape(n) for n in names)
        save = tt.SaveConfig({tt.modes.TRAIN: tt.SaveConfigMode(save_interval=self.capture_interval),
                              tt.modes.EVAL: NEVER, tt.modes.PREDICT: NEVER})
        if self.capture == "tensors":
            taps = tt.Collection("pruning_taps", include_regex=(rf"^(?:gradients/)?(?:{pattern})$",), save_config=save,
                                 categories=("outputs", "gradients"),
                                 description="feature maps ranked by tensortap-pruning, and their gradients")
        else:
            red = REDUCTION_OF[self.criterion]
            cats = {"taylor": ("outputs", "gradients"), "random": ("outputs",)}.get(self.criterion, ("weights",))
            taps = tt.Collection("pruning_taps", include_regex=(rf"^(?:{pattern})$",), save_config=save,
                                 categories=cats, reduction_config=tt.ReductionConfig(reductions=(red,)),
                                 description=f"{red} importance per channel of the tensors tensortap-pruning ranks")
        scalars = tt.Collection("pruning", include_regex=(r"^pruning/",), save_config=tt.SaveConfig(save_interval=1),
                                categories=("scalars",), description="params, size_mb, accuracy per pruning iteration")
        return [taps, scalars]

    def make_hook(self, out_dir, extra_collections: Sequence = ("losses",)) -> tt.Hook:
        """A tt.Hook capturing what the pruner needs (plus `extra_collections`), registered on the model."""
        hook = tt.Hook(out_dir, include_collections=list(extra_collections) + self.collections(),
                       save_config=tt.SaveConfig(save_interval=10))
        return self.attach(hook)

    def attach(self, hook: tt.Hook) -> tt.Hook:
        """Use `hook` (it must include `collections()`); registers it on the model and adds the rule."""
        self.hook = hook
        hook.register(self.model)
        if self.rule is not None:
            hook.add_rule(self.rule, action="stop_training")
        return hook

    # ---- each iteration ------------------------------------------------------------------
    def record(self, accuracy: float, wait_seconds: float = 30.0) -> dict:
        """Save pruning/params, pruning/size_mb, pruning/accuracy at the hook's current step;
        keep a copy of the model while accuracy meets the floor; stop once the rule fires."""
        hook = self._need_hook()
        row = {"iteration": self.iteration, "params": count_params(self.model), "size_mb": size_mb(self.model),
               "accuracy": float(accuracy), "channels": self.channel_counts()}
        hook.save_scalar(SCALARS["params"], np.int64(row["params"]))
        hook.save_scalar(SCALARS["size_mb"], np.float64(row["size_mb"]))
        hook.save_scalar(SCALARS["accuracy"], np.float64(row["accuracy"]))
        step = hook.step
        row["step"] = step
        hook.flush()
        self.history.append(row)
        if self.rule is None or accuracy >= self.rule.threshold:
            self.best_state = copy.deepcopy(self.model.state_dict())
        if self.rule is not None:
            deadline = time.monotonic() + wait_seconds
            while step not in self.rule.seen and time.monotonic() < deadline:
                time.sleep(0.02)
            if step in self.rule.fired_at:
                self.stopped = True
                self.stop_reason = f"rule {self.rule.name}: accuracy {accuracy:.4f} < {self.rule.threshold:g}"
            elif step not in self.rule.seen and accuracy < self.rule.threshold:  # rule thread too slow
                self.stopped = True
                self.stop_reason = f"accuracy {accuracy:.4f} < {self.rule.threshold:g} (rule not evaluated in time)"
        return row

    def rank(self) -> Dict[int, np.ndarray]:
        """The importance of every channel of every prunable group, from the steps captured since the
        last prune: each tapped tensor's vectors averaged over those steps (l1, bn_scale: the last
        step's), L2-normalised per tensor, then averaged over the group's tensors."""
        hook = self._need_hook()
        hook.flush()
        trial = tt.create_trial(hook.out_dir)
        steps = [s for s in trial.steps() if s > self._last_ranked_step]
        scores = self._tensor_scores(trial, steps)
        if not scores:
            raise RuntimeError(
                f"no {REDUCTION_OF[self.criterion]} importance captured in {hook.out_dir} since step "
                f"{self._last_ranked_step}: train at least one step with the hook attached (and capture_interval "
                "small enough) before prune()")
        self._ranked_steps = steps
        out: Dict[int, np.ndarray] = {}
        for g in self.groups:
            if not g.prunable:
                continue
            got = [l2_normalise(v[off:off + g.size]) for src, off in self.sources(g)
                   for v in (scores.get(src),) if v is not None and len(v[off:off + g.size]) == g.size]
            if got:
                out[g.gid] = np.mean(got, axis=0)
        return out

    def _tensor_scores(self, trial, steps: Sequence[int]) -> Dict[str, np.ndarray]:
        """Stored tensor name -> its importance vector averaged over `steps`."""
        if self.capture == "tensors":
            by_layer = layer_scores_from_trial(trial, self.tap_layers, steps)
            return {f"{layer}/output_0": v for layer, v in by_layer.items()}
        red, want = REDUCTION_OF[self.criterion], set(steps)
        out: Dict[str, np.ndarray] = {}
        for g in self.groups:
            for src, _ in (self.sources(g) if g.prunable else ()):
                if src in out or not trial.has_tensor(src):
                    continue
                t = trial.tensor(src)
                vecs = [v for s in t.steps() if s in want
                        for v in (t.reduction_values(s).get(red),) if isinstance(v, np.ndarray)]
                if self.criterion in ("l1", "bn_scale"):
                    vecs = vecs[-1:]  # magnitudes: the weights as they are now
                if vecs and all(len(v) == len(vecs[-1]) for v in vecs):
                    out[src] = np.mean(vecs, axis=0)
        return out

    def prune(self, n: Optional[int] = None) -> PruneStep:
        """Remove the `n` (default filters_per_iteration) least important channels, then re-attach the hook."""
        hook = self._need_hook()
        scores = self.rank()
        by_id = {g.gid: g for g in self.groups}
        plan = plan_removal(scores, by_id, n or self.filters_per_iteration, self.min_channels)
        before = count_params(self.model)
        removed, channels = {}, {}
        for gid, idx in plan.items():
            remove_channels(self.model, by_id[gid], idx)
            removed[self.label(by_id[gid])] = len(idx)
            channels[self.label(by_id[gid])] = sorted(int(i) for i in idx)
        after = count_params(self.model)
        self._last_ranked_step = max(self._ranked_steps) if self._ranked_steps else hook.step
        hook.register(self.model)  # the parameters are new objects: re-attach
        step = PruneStep(self.iteration, removed, before, after, list(self._ranked_steps), channels)
        self.prune_steps.append(step)
        self.iteration += 1
        if not removed:
            self.stopped = True
            self.stop_reason = f"nothing left to prune (min_channels={self.min_channels})"
        return step

    def run(self, fine_tune: Callable[[nn.Module], None], evaluate: Callable[[nn.Module], float],
            max_iterations: int = 10) -> List[dict]:
        """The whole loop: fine_tune(model) (through the hook), record(evaluate(model)), prune(), until
        the rule stops it or `max_iterations` prunes are done; restores the last model meeting the floor."""
        for _ in range(max_iterations + 1):
            try:
                fine_tune(self.model)
            except tt.StopTraining as e:
                self.stopped, self.stop_reason = True, self.stop_reason or str(e)
                break
            self.record(evaluate(self.model))
            if self.stopped or len(self.prune_steps) >= max_iterations:
                break
            self.prune()
        return self.history

    # ---- helpers -------------------------------------------------------------------------
    def channel_counts(self) -> Dict[str, int]:
        return {self.label(g): g.size for g in self.groups if g.prunable}

    @staticmethod
    def label(g: ChannelGroup) -> str:
        return g.producers[0] if len(g.producers) == 1 else f"{g.producers[0]}+{len(g.producers) - 1}"

    def restore_best(self) -> nn.Module:
        """A copy of the model as it was at the last iteration whose accuracy met the floor."""
        if self.best_state is None:
            raise RuntimeError("no iteration met the accuracy floor")
        m = copy.deepcopy(self.model)
        mods = dict(m.named_modules())
        for key, val in self.best_state.items():  # shapes differ after pruning: set tensors directly
            mod_name, _, attr = key.rpartition(".")
            mod = mods[mod_name]
            if isinstance(getattr(mod, attr), nn.Parameter):
                setattr(mod, attr, nn.Parameter(val.clone()))
            else:
                setattr(mod, attr, val.clone())
        for mod in m.modules():
            _sync_sizes(mod)
        return m

    def _need_hook(self) -> tt.Hook:
        if self.hook is None:
            raise RuntimeError("attach a hook first: pruner.make_hook(out_dir) or pruner.attach(hook)")
        return self.hook


def _sync_sizes(mod: nn.Module) -> None:
    if isinstance(mod, CONVS):
        out, per_in = mod.weight.shape[:2]
        if mod.groups > 1 and per_in == 1 and mod.groups == mod.in_channels == mod.out_channels:
            mod.groups = out  # a depthwise conv follows its channels
        mod.out_channels, mod.in_channels = out, per_in * mod.groups
    elif isinstance(mod, BATCH_NORMS):
        mod.num_features = mod.weight.shape[0] if mod.weight is not None else mod.running_mean.shape[0]
    elif isinstance(mod, nn.LayerNorm) and mod.weight is not None:
        mod.normalized_shape = (mod.weight.shape[0],)
    elif isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = mod.weight.shape
