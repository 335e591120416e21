"""What the pruning demo's capture saves on disk at a realistic size: a ResNet-18 (torchvision's
layout: 7x7 stem, 4 stages of 2 BasicBlocks, 64-512 channels, 11.2 M parameters) on 224x224 images,
batch 4. The Taylor importance per channel (capture="reductions") against the feature maps and their
gradients the same ranking needs otherwise (capture="tensors"), per saved step, measured on disk."""
from __future__ import annotations

from tests.conftest import require

require("torch", "tensortap_torch", "tensortap_pruning")

import os  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import tensortap as tt  # noqa: E402
from examples.common.cnn import BasicBlock  # noqa: E402
from tensortap_pruning import TaylorPruner, count_params  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BATCH, SIZE = 4, 224


class ResNet18(nn.Module):
    """torchvision's resnet18 layout with the demo's BasicBlock (a ReLU module per feature map)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, w in enumerate((64, 128, 256, 512)):
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w)))
            cin = w
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _run_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _train(run: str, capture: str, steps: int = 3) -> list:
    """`steps` SGD steps saving the pruner's capture at every one; the run's bytes on disk after each."""
    torch.manual_seed(0)
    model = ResNet18()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(BATCH, 3, SIZE, SIZE, generator=g), torch.randint(0, 10, (BATCH,), generator=g)
    pruner = TaylorPruner(model, x[:1], filters_per_iteration=16, capture_interval=1, capture=capture)
    hook = pruner.attach(tt.Hook(run, include_collections=pruner.collections()))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sizes = []
    for _ in range(steps):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        assert hook.flush()  # this step is on disk
        sizes.append(_run_bytes(run))
    hook.close()
    assert hook.errors == [] and count_params(model) > 11_000_000
    return sizes


def test_importance_vectors_take_over_1000x_fewer_bytes_per_step_than_the_tensors(tmp_path):
    red_run, raw_run = str(tmp_path / "reductions"), str(tmp_path / "tensors")
    red, raw = _train(red_run, "reductions"), _train(raw_run, "tensors")
    per_step_red, per_step_raw = red[2] - red[1], raw[2] - raw[1]  # a steady step, past the first's definitions

    # both runs hold what the ranking needs, at every step: no saving comes from data left out
    tr_red, tr_raw = tt.create_trial(red_run), tt.create_trial(raw_run)
    assert tr_red.steps() == tr_raw.steps() == [0, 1, 2]
    taps = sorted(tr_red.tensor_names(collection="pruning_taps"))
    assert len(taps) >= 17 and sorted(n for n in tr_raw.tensor_names(collection="pruning_taps")
                                      if not n.startswith("gradients/")) == taps
    expected_raw = 0
    for name in taps:
        fmap = tr_raw.tensor(name).value(2)
        grad = tr_raw.tensor(f"gradients/{name}").value(2)
        assert fmap.shape == grad.shape and fmap.shape[0] == BATCH
        vec = tr_red.tensor(name).reduction_value(2, "taylor")
        assert vec.shape == (fmap.shape[1],) and np.isfinite(vec).all() and vec.max() > 0
        expected_raw += fmap.nbytes + grad.nbytes
    assert per_step_raw >= expected_raw  # the tensors run writes every byte of every map and gradient

    ratio = per_step_raw / per_step_red
    print(f"bytes per saved step: tensors {per_step_raw:,}, taylor vectors {per_step_red:,}: {ratio:,.0f}x")
    assert ratio >= 1000, (per_step_raw, per_step_red)
