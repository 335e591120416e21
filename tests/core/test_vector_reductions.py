"""Plugin-registered vector reductions (tt.VectorReduction, hook tensortap_register_reductions),
framework-free: a plugin installed as a third party installs one registers a reduction of a value
and one of a value and its gradient; the numpy MLP's run stores one vector per step each, equal to
what the conformance kit's own snapshots give, and never the tensors."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import tensortap as tt
from tensortap.errors import ConfigError
from tensortap.plugins import reload_registry
from tensortap.testing import NumpyKit, batches
from tests.core.test_plugins import install

PLUGIN = textwrap.dedent('''
    import numpy as np
    import tensortap

    def row_l1(w):
        return np.abs(w).sum(axis=1)

    def row_taylor(w, g):
        return np.abs((w * g).sum(axis=1))

    @tensortap.hookimpl
    def tensortap_register_reductions():
        return [tensortap.VectorReduction("row_l1", row_l1, description="L1 norm of each row"),
                tensortap.VectorReduction("row_taylor", "ttvecplugin:row_taylor", inputs=("value", "gradient"))]
''')


@pytest.fixture
def vec_plugin(tmp_path, monkeypatch):
    install(tmp_path, "tt-vec", "ttvecplugin", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = reload_registry()
    yield reg
    monkeypatch.undo()
    sys.modules.pop("ttvecplugin", None)
    reload_registry()


def test_vectors_of_a_value_and_of_a_value_with_its_gradient(vec_plugin, tmp_path):
    assert vec_plugin.owner[("reductions", "row_taylor")].distribution == "tt-vec"
    coll = tt.Collection("rows", include_regex=[r"^fc1\.weight$"], categories=("weights", "gradients"),
                         reduction_config=tt.ReductionConfig(reductions=["row_l1", "row_taylor", "l2"]))
    hook = tt.Hook(str(tmp_path / "run"), include_collections=[coll], save_config=tt.SaveConfig(save_interval=2))
    kit = NumpyKit()
    model = kit.make_model()
    snaps = kit.train(hook, model, batches(6))
    model.forward(batches(1)[0][0])  # a step with no backward pass: its gradient never comes
    hook.close()
    assert not hook.errors
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.tensor_names() == ["fc1.weight"]  # neither the weight nor its gradient stored
    t = trial.tensor("fc1.weight")
    assert t.steps() == [0, 2, 4, 6]
    for s in (0, 2, 4):
        w, g = snaps[s]["params"]["fc1.weight"].astype(np.float64), snaps[s]["grads"]["fc1.weight"].astype(np.float64)
        assert t.reduction_names(s) == ["l2", "row_l1", "row_taylor"]
        np.testing.assert_allclose(t.reduction_value(s, "row_l1"), np.abs(w).sum(1), rtol=1e-6)
        np.testing.assert_allclose(t.reduction_value(s, "row_taylor"), np.abs((w * g).sum(1)), rtol=1e-6)
        assert t.reduction_value(s, "l2") == pytest.approx(np.sqrt((w * w).sum()), rel=1e-6)
        assert list(t.reduction_values(s)) == ["l2", "row_l1", "row_taylor"]
    assert t.reduction_names(6) == ["l2", "row_l1"]  # the value alone: computed; with its gradient: dropped
    with pytest.raises(tt.StepNotFound, match="only reductions"):
        t.value(0)


def test_unknown_reduction_names_the_registered_ones(vec_plugin):
    with pytest.raises(ConfigError, match=r"unknown reduction 'row_l2'.*row_l1"):
        tt.ReductionConfig(reductions=["row_l2"])


def test_a_bad_spec_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="inputs must be one of"):
        tt.VectorReduction("x", "m:f", inputs=("gradient",))
    with pytest.raises(ConfigError, match="built-in reduction"):
        tt.VectorReduction("l2", "m:f")
    with pytest.raises(ConfigError, match="'module:function'"):
        tt.VectorReduction("x", "no_colon")
