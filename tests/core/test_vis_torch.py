"""Visualizers on data the PyTorch plugin captured while a small model really trained:
Grad-CAM recorded during training (collection "feature_maps") and attention of a Transformer."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch", reason="needs torch for real captured Grad-CAM and attention")
pytest.importorskip("tensortap_torch", reason="needs the tensortap-torch plugin installed")

import tensortap as tt  # noqa: E402
from tensortap.export import export_tensorboard  # noqa: E402


def _images(n: int, rng) -> tuple:
    """Grey 16x16 images with a bright square on the left (class 0) or the right (class 1)."""
    x = rng.uniform(0.0, 0.2, (n, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 2, n)
    for i, c in enumerate(y):
        r = rng.integers(2, 10)
        x[i, :, r:r + 5, (1 if c == 0 else 10):(6 if c == 0 else 15)] = 1.0
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, stride=2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    path = str(tmp_path_factory.mktemp("torch") / "cnn")
    hook = tt.Hook(path, include_collections=["feature_maps", "losses"], save_config=tt.SaveConfig(save_interval=3))
    hook.register(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    rng = np.random.default_rng(0)
    for _ in range(9):
        x, y = _images(16, rng)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hook.record_loss(loss)
    hook.close()
    return path


def test_gradcam_of_a_training_torch_cnn(cnn_run, tmp_path):
    trial = tt.create_trial(cnn_run)
    layers = [n for n in trial.tensor_names(regex="^gradcam/.*/cam$")]
    assert layers, trial.tensor_names()
    vis = tt.vis.get("gradcam")()
    assert vis.applies_to(trial)
    steps = trial.tensor(layers[0]).steps()
    assert steps == [0, 3, 6]
    grid = np.asarray(Image.open(vis.render(trial, str(tmp_path / "g.png"), max_images=2, cell=64)))
    assert grid.shape[:2] == (4 + 2 * (28 + 64 + 4), 4 + 3 * (64 + 4))
    assert grid.reshape(-1, grid.shape[-1])[:, :3].std(axis=0).min() > 10  # colourful, not blank
    gif = Image.open(vis.render(trial, str(tmp_path / "g.gif")))
    assert gif.n_frames == 3
    counts = export_tensorboard(trial, str(tmp_path / "tb"))
    assert counts["train"]["images"] == 3 and counts["train"]["scalars"] >= 3


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    vocab = ["[CLS]", "<b>", "the", "cat", "sat", "on", "mat", "[SEP]", "a", "dog"]
    emb = torch.nn.Embedding(len(vocab), 16)
    layer = torch.nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    head = torch.nn.Linear(16, 2)
    model = torch.nn.Sequential(emb, enc)
    path = str(tmp_path_factory.mktemp("torch") / "tr")
    hook = tt.Hook(path, include_collections=["attention", "losses"], save_config=tt.SaveConfig(save_interval=2))
    hook.register(model)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.1)
    rng = np.random.default_rng(0)
    for _ in range(6):
        ids = torch.from_numpy(rng.integers(0, len(vocab), (3, 8)))
        y = (ids == 3).any(1).long()
        loss = torch.nn.functional.cross_entropy(head(model(ids)[:, 0]), y)
        if hook.saving:
            hook.save_tensor("attention/tokens", np.array([[vocab[i] for i in row] for row in ids.numpy()]),
                             collections=["attention"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        hook.record_loss(loss)
    hook.close()
    return path


def test_head_view_of_a_training_torch_transformer(transformer_run, tmp_path):
    trial = tt.create_trial(transformer_run)
    names = [n for n in trial.tensor_names(collection="attention") if n != "attention/tokens"]
    assert len(names) == 2, trial.tensor_names()
    out = tt.vis.get("attention")().render(trial, str(tmp_path / "h.html"))
    src = open(out, encoding="utf-8").read()
    data = json.loads(re.search(r'<script id="tt-data" type="application/json">(.*?)</script>', src, re.S).group(1))
    assert data["heads"] == 2 and data["steps"] == [0, 2, 4] and len(data["layers"]) == 2
    assert data["examples"] == [0, 1, 2] and "<b>" not in src.split("<script")[1]
    grid = Image.open(tt.vis.get("attention")().render(trial, str(tmp_path / "h.png")))
    assert grid.size[0] > 200
