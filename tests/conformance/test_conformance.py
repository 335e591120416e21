"""Every framework plugin passes the same checks: same model, same data, bit-exact values.

Kits come from the registered adapters (AdapterSpec.conformance), so a new framework plugin
is checked by installing it: nothing here names a framework.
"""
from __future__ import annotations

import numpy as np
import pytest

import tensortap as tt
from tensortap.plugins import get_registry
from tensortap.reductions import reduce_numpy
from tensortap.testing.conformance import batches

N_STEPS = 10
INTERVAL = 3


def _kits():
    out = []
    for name, spec in sorted(get_registry().adapters.items()):
        if spec.conformance:
            out.append(pytest.param(spec, id=name))
    return out


@pytest.fixture(params=_kits())
def kit(request):
    spec = request.param
    try:
        kit_cls = spec.load_conformance()
    except ImportError as e:
        pytest.skip(f"{spec.name}: {e}")
    k = kit_cls()
    ok, why = k.available()
    if not ok:
        pytest.skip(why)
    return k


def _train(kit, run_dir, **hook_kwargs):
    model = kit.make_model(seed=0)
    hook = tt.Hook(run_dir, save_config=tt.SaveConfig(save_interval=INTERVAL), **hook_kwargs)
    snaps = kit.train(hook, model, batches(N_STEPS), lr=0.1)
    hook.close()
    return snaps, tt.create_trial(run_dir)


def test_names_steps_and_bit_exact_values(kit, tmp_path):
    snaps, trial = _train(kit, str(tmp_path / "run"),
                          include_collections=["weights", "biases", "gradients", "losses", "outputs"])
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
    with pytest.raises(tt.StepNotFound):
        trial.tensor(w).value(1)


def test_reductions_match_numpy_reference(kit, tmp_path):
    rc = tt.ReductionConfig(reductions=["min", "max", "mean", "std", "l1", "l2", "nan_count", "histogram"])
    snaps, trial = _train(kit, str(tmp_path / "run"), include_collections=["weights", "gradients"],
                          reduction_config=rc)
    names = kit.param_names()
    for step in trial.steps():
        want = reduce_numpy(snaps[step]["params"][names["fc1.weight"]], rc.reductions, rc.histogram_bins)
        t = trial.tensor(names["fc1.weight"])
        with pytest.raises(tt.StepNotFound, match="only reductions"):
            t.value(step)
        for r in ("min", "max", "mean", "std", "l1", "l2", "nan_count"):
            assert np.isclose(t.reduction_value(step, r), float(want[r]), rtol=1e-5, atol=1e-7), r
        counts, edges = t.reduction_value(step, "histogram")
        assert counts.sum() == snaps[step]["params"][names["fc1.weight"]].size
        assert len(edges) == len(counts) + 1


def test_nothing_saved_on_unsaved_steps(kit, tmp_path):
    snaps, trial = _train(kit, str(tmp_path / "run"), include_collections=["weights"])
    for step in range(N_STEPS):
        if step % INTERVAL:
            assert step not in trial.steps()
