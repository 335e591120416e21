"""The conformance suite every framework plugin passes, and the kit a plugin gives it.

Every kit builds the same model, fc1: Linear(8, 16) -> ReLU -> fc2: Linear(16, 4), trains it
with plain SGD on the same batches, and reports what the parameters and gradients were at
each step, taken by the kit itself (not through tensortap). The checks below then compare
names, steps and bit-exact values of what the Hook stored. A plugin's own tests run them all
with `check_kit(Kit(), tmp_dir)`; tensortap's tests/conformance runs them on every installed
plugin that names a kit (AdapterSpec.conformance).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from .numpy_mlp import NumpyMLP, make_data

#: steps every check trains, and the hook's save interval: steps 0, 3, 6, 9 are saved
N_STEPS = 10
INTERVAL = 3

N_IN, N_HIDDEN, N_OUT = 8, 16, 4


def batches(n_steps: int = 10, batch: int = 5, seed: int = 3) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The shared training data: n_steps (x float32 (batch, 8), y int64 (batch,)) pairs."""
    x, y = make_data(n_steps * batch, N_IN, N_OUT, seed)
    return [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(n_steps)]


class ConformanceKit:
    """Subclass per framework. `requires` lists modules that must import, else the suite skips."""

    framework: str = ""
    requires: Sequence[str] = ()

    def available(self) -> Tuple[bool, str]:
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        return (not missing, f"{self.framework}: not installed ({', '.join(missing)})" if missing else "")

    def param_names(self) -> Dict[str, str]:
        """canonical name ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias") -> framework name."""
        raise NotImplementedError

    def output_name(self, layer: str) -> str:
        """Tensor name of a layer's output ("fc1" or "fc2")."""
        raise NotImplementedError

    def make_model(self, seed: int = 0) -> Any:
        raise NotImplementedError

    def train(self, hook, model: Any, data: List[Tuple[np.ndarray, np.ndarray]], lr: float = 0.1) -> List[dict]:
        """Register `hook` on `model` (however the framework does it), train one step per batch,
        and return per step {"params": {fw_name: array used by the forward}, "grads": {fw_name: array},
        "loss": float} captured independently of tensortap."""
        raise NotImplementedError


class NumpyKit(ConformanceKit):
    framework = "numpy"

    def param_names(self) -> Dict[str, str]:
        return {k: k for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")}

    def output_name(self, layer: str) -> str:
        return f"{layer}/output_0"

    def make_model(self, seed: int = 0) -> NumpyMLP:
        return NumpyMLP(N_IN, N_HIDDEN, N_OUT, seed=seed)

    def train(self, hook, model: NumpyMLP, data, lr: float = 0.1) -> List[dict]:
        hook.register(model)
        hook.register_loss(model)
        snaps = []
        for x, y in data:
            params = {k: v.copy() for k, v in model.params.items()}
            out = model.forward(x)
            loss = model.loss(out, y)
            model.backward()
            snaps.append({"params": params, "grads": {k: v.copy() for k, v in model.grads.items()},
                          "loss": float(np.float32(loss))})
            model.sgd_step(lr)
        return snaps


# ---- the checks --------------------------------------------------------------------------------
def train(kit: ConformanceKit, run_dir: str, **hook_kwargs: Any) -> Tuple[List[dict], Any]:
    """Train the kit's model for N_STEPS with a Hook saving every INTERVAL steps; (snapshots, trial)."""
    import tensortap as tt

    model = kit.make_model(seed=0)
    hook = tt.Hook(run_dir, save_config=tt.SaveConfig(save_interval=INTERVAL), **hook_kwargs)
    snaps = kit.train(hook, model, batches(N_STEPS), lr=0.1)
    hook.close()
    return snaps, tt.create_trial(run_dir)


def check_names_steps_and_values(kit: ConformanceKit, run_dir: str) -> None:
    """Parameters, gradients, a layer output and the loss: stored under the framework's names, at
    the saved steps only, bit-exact as the forward pass used them (not views of live memory)."""
    import tensortap as tt

    snaps, trial = train(kit, run_dir, include_collections=["weights", "biases", "gradients", "losses", "outputs"])
    assert len(snaps) == N_STEPS
    assert trial.steps() == list(range(0, N_STEPS, INTERVAL))
    assert trial.steps(mode=tt.modes.TRAIN) == list(range(0, N_STEPS, INTERVAL))
    names = kit.param_names()
    assert set(names.values()) <= set(trial.tensor_names())
    assert set(trial.tensor_names(collection="weights")) == {names["fc1.weight"], names["fc2.weight"]}
    assert set(trial.tensor_names(collection="biases")) == {names["fc1.bias"], names["fc2.bias"]}
    assert set(trial.tensor_names(collection="gradients")) >= {f"gradients/{n}" for n in names.values()}
    for step in trial.steps():
        for fw_name in names.values():
            got = trial.tensor(fw_name).value(step)
            want = snaps[step]["params"][fw_name]
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want), f"{fw_name} at step {step} differs from what the forward used"
            g = trial.tensor(f"gradients/{fw_name}").value(step)
            assert np.array_equal(g, snaps[step]["grads"][fw_name]), f"gradient of {fw_name} at step {step}"
        losses = trial.tensor_names(collection="losses")
        assert losses, "no loss recorded"
        assert np.isclose(float(trial.tensor(losses[0]).value(step)), snaps[step]["loss"], rtol=1e-6)
    # weights change between saved steps (training happened, values are not views of the live params)
    w = names["fc1.weight"]
    assert not np.array_equal(trial.tensor(w).value(0), trial.tensor(w).value(INTERVAL))
    out = trial.tensor(kit.output_name("fc1")).value(0)
    assert out.shape == (5, 16)
    try:
        trial.tensor(w).value(1)
    except tt.StepNotFound:
        pass
    else:
        raise AssertionError(f"{w} has a value at step 1, which the hook does not save")


def check_reductions(kit: ConformanceKit, run_dir: str) -> None:
    """With a ReductionConfig, reductions instead of the values, agreeing with numpy's."""
    import tensortap as tt
    from tensortap.reductions import reduce_numpy

    rc = tt.ReductionConfig(reductions=("min", "max", "mean", "std", "l1", "l2", "nan_count", "histogram"))
    snaps, trial = train(kit, run_dir, include_collections=["weights", "gradients"], reduction_config=rc)
    names = kit.param_names()
    for step in trial.steps():
        want = reduce_numpy(snaps[step]["params"][names["fc1.weight"]], rc.reductions, rc.histogram_bins)
        t = trial.tensor(names["fc1.weight"])
        try:
            t.value(step)
        except tt.StepNotFound as e:
            assert "only reductions" in str(e), str(e)
        else:
            raise AssertionError(f"{names['fc1.weight']} at step {step} holds its value; only reductions were "
                                 "asked for")
        for r in ("min", "max", "mean", "std", "l1", "l2", "nan_count"):
            assert np.isclose(t.reduction_value(step, r), float(want[r]), rtol=1e-5, atol=1e-7), r
        counts, edges = t.reduction_value(step, "histogram")
        assert counts.sum() == snaps[step]["params"][names["fc1.weight"]].size
        assert len(edges) == len(counts) + 1


def check_unsaved_steps(kit: ConformanceKit, run_dir: str) -> None:
    """Nothing is written on the steps the save config skips."""
    snaps, trial = train(kit, run_dir, include_collections=["weights"])
    for step in range(N_STEPS):
        if step % INTERVAL:
            assert step not in trial.steps()


CHECKS: Tuple[Callable[[ConformanceKit, str], None], ...] = (
    check_names_steps_and_values, check_reductions, check_unsaved_steps)


def check_kit(kit: ConformanceKit, tmp_dir: Any) -> None:
    """Run every check on `kit`, each in a new run under `tmp_dir` (AssertionError on the first
    that fails; a kit whose framework is not installed raises RuntimeError saying so)."""
    ok, why = kit.available()
    if not ok:
        raise RuntimeError(why)
    for check in CHECKS:
        check(kit, os.path.join(os.fspath(tmp_dir), check.__name__))
