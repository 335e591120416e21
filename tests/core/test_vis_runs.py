"""Real runs the visualizer, report and TensorBoard tests render, each captured through tt.Hook.

Builders are module functions (imported by test_vis_*.py, test_report*.py, test_tensorboard*.py);
the tests here check each run holds what the stored-data contracts promise.
"""
from __future__ import annotations

import os

import numpy as np

import tensortap as tt
from tensortap.explain import record_gradcam
from tensortap.rules import Rule
from tensortap.testing import NumpyMLP, make_data


EVERY_STEP = tt.SaveConfig(save_interval=1)


class LossAbove(Rule):
    """Fires while the loss is above `threshold` (a real rule evaluated live by the hook)."""

    name = "test_loss_above"

    def __init__(self, threshold: float = 1.0):
        super().__init__()
        self.threshold = float(threshold)

    def invoke_at_step(self, trial, step):
        if "loss" not in trial.tensor_names(step=step):
            return False
        v = float(trial.tensor("loss").value(step))
        return v > self.threshold, f"loss {v:.3f} > {self.threshold}"


def mlp_run(path: str, steps: int = 16, eval_every: int = 4, rule_threshold: float = 1.2,
            histograms: bool = False) -> str:
    """NumpyMLP trained `steps` steps (train mode) with eval steps between: weights, gradients,
    losses (train and eval), an accuracy scalar, and a live rule that fires while loss > threshold."""
    red = tt.ReductionConfig(reductions=["mean", "histogram"], histogram_bins=32) if histograms else None
    hook = tt.Hook(path, include_collections=["weights", "biases", "gradients", "losses", "scalars"],
                   reduction_config=red, save_config=tt.SaveConfig(save_interval=1))
    hook.add_rule(LossAbove(rule_threshold))
    model = NumpyMLP(seed=0)
    hook.register(model)
    hook.register_loss(model)
    x, y = make_data(320, seed=1)
    x, y, xe, ye = x[:256], y[:256], x[256:], y[256:]
    for i in range(steps):
        j = (i * 32) % 256
        model.train()
        model.train_step(x[j:j + 32], y[j:j + 32], lr=0.3)
        if (i + 1) % eval_every == 0:
            model.eval()
            out = model.forward(xe)
            model.loss(out, ye)
            hook.save_scalar("accuracy", float((out.argmax(1) == ye).mean()))
    hook.close()
    return path


def embedding_run(path: str, steps: int = 4, n: int = 120) -> str:
    """NumpyMLP hidden activations of a fixed labelled set, saved each step as an (N, 16) "latent"."""
    hook = tt.Hook(path, include_collections=["losses"], save_config=EVERY_STEP)
    model = NumpyMLP(n_in=8, n_hidden=16, n_out=4, seed=0)
    x, y = make_data(n, seed=5)
    for _ in range(steps):
        hook.begin_step(tt.modes.TRAIN)
        for _ in range(10):
            loss = model.train_step(x, y, lr=0.5)
        hook.record_loss(loss)
        h = np.maximum(x @ model.params["fc1.weight"].T + model.params["fc1.bias"], 0)
        hook.save_tensor("latent", h, collections=["embeddings"])
        hook.save_tensor("labels", y, collections=["labels"])
    hook.close()
    return path


HOT = (1, 2)  # the feature-map cell every synthetic Grad-CAM map peaks at (row, col) on a 4x4 map


def gradcam_run(path: str, steps: int = 3, batch: int = 3, size: int = 16) -> str:
    """Grad-CAM observations through record_gradcam: activations whose class-score gradient
    singles out cell HOT, growing over steps, over grey images with a bright square."""
    hook = tt.Hook(path, include_collections=["feature_maps", "losses"], save_config=EVERY_STEP)
    rng = np.random.default_rng(0)
    for s in range(steps):
        hook.begin_step(tt.modes.TRAIN)
        acts = rng.uniform(0.0, 0.1, (batch, 3, 4, 4)).astype(np.float32)
        acts[:, 0, HOT[0], HOT[1]] = 1.0 + s  # a feature that grows over training
        grads = np.zeros_like(acts)
        grads[:, 0] = 0.5  # the class score depends on channel 0 only
        images = np.full((batch, size, size, 3), 0.4, np.float32)
        images[:, 2:6, 2:6] = 1.0
        targets = np.arange(batch) % 2
        scores = np.linspace(0.5, 0.9, batch).astype(np.float32)
        record_gradcam(hook, "layer4", acts, grads, images, targets, scores)
        hook.record_loss(1.0 / (s + 1))
    hook.close()
    return path


TOKENS = ["[CLS]", "<script>", "alert(1)", "</script>", "the", "cat", "&amp;", "[SEP]"]


def attention_run(path: str, steps: int = 3, layers: int = 3, heads: int = 2, batch: int = 2) -> str:
    """Softmax(QK^T / sqrt(d)) self-attention of a tiny numpy encoder whose projections change
    every step; tokens include HTML-looking strings. Layers named so natural sort matters."""
    hook = tt.Hook(path, include_collections=["attention", "losses"], save_config=EVERY_STEP)
    rng = np.random.default_rng(0)
    seq, d = len(TOKENS), 8
    emb = rng.standard_normal((batch, seq, d))
    wq = rng.standard_normal((layers, heads, d, d)) * 0.5
    wk = rng.standard_normal((layers, heads, d, d)) * 0.5
    for s in range(steps):
        hook.begin_step(tt.modes.TRAIN)
        h = emb
        for li in range(layers):
            q = np.einsum("bsd,hde->bhse", h, wq[li] * (1 + s))
            k = np.einsum("bsd,hde->bhse", h, wk[li] * (1 + s))
            logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
            att = np.exp(logits - logits.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            name = f"attention/encoder.layer{li * 5}"  # layer0, layer5, layer10: natural order != text order
            hook.save_tensor(name, att.astype(np.float32), collections=["attention"])
            h = np.tanh(att.mean(1) @ h)
        hook.save_tensor("attention/tokens", np.array([TOKENS] * batch), collections=["attention"])
        hook.record_loss(float(1.0 / (s + 1)))
    hook.close()
    return path


def pruning_run(path: str, iterations: int = 5) -> str:
    """Prune hidden units of a trained NumpyMLP by |activation x gradient|, one unit group per
    iteration, saving pruning/params, pruning/size_mb, pruning/accuracy."""
    hook = tt.Hook(path, include_collections=["scalars", "losses"], save_config=EVERY_STEP)
    model = NumpyMLP(n_in=8, n_hidden=32, n_out=4, seed=0)
    x, y = make_data(256, seed=1)
    for _ in range(100):
        model.train_step(x, y, lr=0.5)
    alive = np.ones(32, bool)
    for _ in range(iterations):
        hook.begin_step(tt.modes.TRAIN)
        for _ in range(10):
            model.train_step(x, y, lr=0.2)
            model.params["fc1.weight"][~alive] = 0
            model.params["fc1.bias"][~alive] = 0
        out = model.forward(x)
        acc = float((out.argmax(1) == y).mean())
        hook.record_loss(model.loss(out, y))
        n_params = int(alive.sum() * (8 + 1) + alive.sum() * 4 + 4)
        hook.save_scalar("pruning/params", n_params)
        hook.save_scalar("pruning/size_mb", n_params * 4 / 1e6)
        hook.save_scalar("pruning/accuracy", acc)
        model.backward()
        z1 = x @ model.params["fc1.weight"].T + model.params["fc1.bias"]
        taylor = np.abs((np.maximum(z1, 0) * (model.grads["fc1.bias"][None] + 1e-12)).mean(0))
        taylor[~alive] = np.inf
        alive[np.argsort(taylor)[:6]] = False
    hook.close()
    return path


# ---- the runs hold what the contracts promise ---------------------------------------------------

def test_mlp_run_has_modes_scalars_and_fired_rule(tmp_path):
    t = tt.create_trial(mlp_run(str(tmp_path / "r"), steps=8))
    assert t.steps(mode="eval") and t.steps(mode="train")
    assert "accuracy" in t.tensor_names(collection="scalars")
    assert any(r["fired"] for r in t.rule_results())


def test_attention_and_gradcam_runs_follow_the_storage_contract(tmp_path):
    a = tt.create_trial(attention_run(str(tmp_path / "a"), steps=1))
    v = a.tensor("attention/encoder.layer0").value(0)
    assert v.shape == (2, 2, len(TOKENS), len(TOKENS)) and np.allclose(v.sum(-1), 1, atol=1e-5)
    assert list(a.tensor("attention/tokens").value(0)[0]) == TOKENS
    g = tt.create_trial(gradcam_run(str(tmp_path / "g"), steps=1))
    cam = g.tensor("gradcam/layer4/cam").value(0)
    assert np.unravel_index(cam[0].argmax(), cam[0].shape) == HOT
    assert os.path.isdir(str(tmp_path / "g"))
