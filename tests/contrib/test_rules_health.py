"""tensortap-rules-health, installed like a user installs it (pip install -e), found through its
entry point; each rule fires on a numpy MLP trained into the pathology and stays quiet otherwise."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import pytest

import tensortap as tt
from tensortap.testing import NumpyMLP, make_data

pytest.importorskip("tensortap_rules_health", reason="pip install -e contrib/tensortap-rules-health")


def train(run_dir, steps=40, lr=0.1, noise_labels=False, batch=64, change: Optional[Callable] = None,
          lr_at: Optional[Callable] = None):
    model = NumpyMLP(seed=0)
    hook = tt.Hook(run_dir, include_collections=["weights", "gradients", "losses"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    hook.register_loss(model)
    x, y = make_data(512, seed=1)
    rng = np.random.default_rng(0)
    for i in range(steps):
        xb, yb = x[:batch].copy(), y[:batch]
        if noise_labels:  # fresh inputs with labels that mean nothing: gradients are pure noise
            xb, yb = x[rng.integers(0, len(x), batch)], rng.integers(0, 4, batch)
        if change is not None:
            xb = change(i, xb)
        model.train_step(xb, yb, lr=lr_at(i) if lr_at else lr)
    hook.close()
    return tt.create_trial(run_dir)


def fired(rule, trial):
    return [r for r in tt.invoke_rule(rule, trial) if r.fired]


def test_discovered_through_the_entry_point():
    from tensortap.plugins import get_registry

    reg = get_registry()
    for name in ("gradient_snr", "gradient_norm_spike", "update_size_trend"):
        assert name in tt.rules.list()
        assert reg.owner[("rules", name)].distribution == "tensortap-rules-health"
        assert tt.rules.get(name).__module__ == "tensortap_rules_health.rules"


def test_gradient_snr(tmp_path):
    noisy = train(str(tmp_path / "noisy"), noise_labels=True, lr=0.05)
    got = fired(tt.rules.get("gradient_snr")(), noisy)
    # the untrained model first moves its logits consistently; once that is done the noise dominates
    assert got and 9 <= got[0].step <= 25, got[0].step
    assert "gradients/fc1.weight" in got[0].values["snr"]
    clean = train(str(tmp_path / "clean"), lr=0.05)
    res = tt.invoke_rule(tt.rules.get("gradient_snr")(), clean)
    assert not [r for r in res if r.fired] and any(not r.skipped for r in res)


def test_gradient_norm_spike(tmp_path):
    def bad_batch(i, x):
        return x * 50 if i == 25 else x
    trial = train(str(tmp_path / "spike"), change=bad_batch)
    got = fired(tt.rules.get("gradient_norm_spike")(), trial)
    assert got and got[0].step == 25 and "x median" in got[0].message
    trial = train(str(tmp_path / "calm"))
    assert not fired(tt.rules.get("gradient_norm_spike")(), trial)


def test_update_size_trend(tmp_path):
    trial = train(str(tmp_path / "warmup"), steps=30, lr_at=lambda i: 1e-3 * 1.5 ** i)
    got = fired(tt.rules.get("update_size_trend")(), trial)
    assert got and 10 <= got[0].step <= 15
    trial = train(str(tmp_path / "steady"), steps=30)
    res = tt.invoke_rule(tt.rules.get("update_size_trend")(), trial)
    assert not [r for r in res if r.fired] and any(not r.skipped for r in res)
