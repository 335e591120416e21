"""tensortap-pruning's dependency analysis and surgery on models built like torchvision's
mobilenet_v2 (depthwise convs, inverted residuals), densenet (concatenation), googlenet (inception
branches concatenated) and vgg (hidden Linear layers), plus grouped convs and LayerNorm: every
group is pruned, the model keeps its output shape and trains, and (the strong check) the pruned
model computes exactly what the original computes with the removed channels zeroed."""
from __future__ import annotations

from tests.conftest import require

require("torch", "tensortap_pruning")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from examples.common import archs  # noqa: E402
from tensortap_pruning import analyse, count_params, params_removed, remove_channels  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = {
    "mobilenet_v2": lambda: archs.MobileNetV2(10, width=0.25),
    "densenet": lambda: archs.DenseNet(10, width=0.25, blocks=(2, 3, 2)),
    "googlenet": lambda: archs.GoogLeNet(10, width=0.125),
    "vgg": lambda: archs.VGG(10, width=0.125, hidden=24, pool=2),
    "resnext": lambda: archs.ResNeXtLike(10),
}
SIZE = {"googlenet": 64}


def _x(name: str, n: int = 3) -> torch.Tensor:
    s = SIZE.get(name, 32)
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(0))


def _drop(g) -> list:
    """About a third of the group's channels, equally many from each grouped-conv block."""
    block = g.size // g.slots
    k = max(1, block // 3)
    return [j * block + i for j in range(g.slots) for i in range(1, 1 + 3 * k, 3) if i < block][:k * g.slots]


def _noisy_stats(model: nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def _silence(model: nn.Module, g, idx) -> None:
    """Zero the contribution of channels `idx` of group `g`: their filters in every producer and
    depthwise conv, and their scale and shift in every norm (so they are exactly 0 downstream)."""
    mods = dict(model.named_modules())
    with torch.no_grad():
        for name in g.producers + g.depthwise + g.norms:
            m, rows = mods[name], [g.offset.get(name, 0) + i for i in idx]
            m.weight[rows] = 0
            if m.bias is not None:
                m.bias[rows] = 0


def test_groups_found_on_each_architecture():
    found = {}
    for name, make in MODELS.items():
        groups = analyse(make(), _x(name))
        found[name] = (sum(g.prunable for g in groups), len(groups), [g.frozen for g in groups if not g.prunable])
    # mobilenet_v2: every inverted residual's expansion group carries its depthwise conv; only the
    # classifier's output is frozen
    assert found["mobilenet_v2"][0] == found["mobilenet_v2"][1] - 1, found["mobilenet_v2"]
    for name in ("densenet", "googlenet", "vgg", "resnext"):
        assert found[name][0] == found[name][1] - 1, (name, found[name])
        assert found[name][2] == ["reaches the model output"]


def test_depthwise_concat_and_hidden_linear_are_followed():
    mb = {tuple(g.producers): g for g in analyse(MODELS["mobilenet_v2"](), _x("mobilenet_v2"))}
    exp = mb[("features.2.conv.0.0",)]  # block 2's 1x1 expansion
    assert exp.depthwise == ["features.2.conv.1.0"] and exp.norms == ["features.2.conv.0.1", "features.2.conv.1.1"]
    assert exp.conv_consumers == ["features.2.conv.2"]
    assert exp.rank_taps == ["features.2.conv.0.2", "features.2.conv.1.2"]
    dn = {tuple(g.producers): g for g in analyse(MODELS["densenet"](), _x("densenet"))}
    g = dn[("features.denseblock1.denselayer1.conv2",)]  # concatenated after conv0's channels
    c0 = dn[("features.conv0",)].size
    assert g.offset["features.denseblock1.denselayer2.norm1"] == c0
    assert "features.transition1.2" in g.conv_consumers and g.offset["features.transition1.0"] == c0
    vgg = {tuple(g.producers): g for g in analyse(MODELS["vgg"](), _x("vgg"))}
    assert vgg[("classifier.0",)].prunable and vgg[("classifier.0",)].linear_consumers == [("classifier.3", 1)]
    assert vgg[("features.25",)].linear_consumers == [("classifier.0", 4)]  # flatten of a 2x2 map
    rx = {tuple(g.producers): g for g in analyse(MODELS["resnext"](), _x("resnext"))}
    assert rx[("block1.conv1",)].slots == 4 and rx[("block1.conv2",)].slots == 4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pruned_model_computes_what_the_silenced_original_computes(name):
    model = MODELS[name]().eval()
    _noisy_stats(model)
    x = _x(name)
    groups = [g for g in analyse(model, x) if g.prunable]
    plan = {g.gid: _drop(g) for g in groups}
    for g in groups:
        _silence(model, g, plan[g.gid])
    with torch.no_grad():
        want = model(x)
    before = count_params(model)
    predicted = 0
    for g in groups:
        predicted += params_removed(model, g, len(plan[g.gid]))
        remove_channels(model, g, plan[g.gid])
    assert before - count_params(model) == predicted
    assert count_params(model) < 0.75 * before
    with torch.no_grad():
        got = model(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    model.train()  # and it trains
    F.cross_entropy(model(x), torch.tensor([0, 1, 2])).backward()


def test_layernorm_and_hidden_linear_are_pruned():
    model = archs.LayerNormMLP()
    x = torch.randn(4, 3, 16, 16)
    groups = {tuple(g.producers): g for g in analyse(model, x)}
    h1 = groups[("fc1",)]
    assert h1.prunable and h1.norms == ["ln1"] and h1.linear_consumers == [("fc2", 1)]
    remove_channels(model, h1, [0, 5, 9])
    remove_channels(model, groups[("fc2",)], [1, 2])
    assert model.ln1.normalized_shape == (29,) and model.ln1.weight.shape == (29,)
    assert model.fc2.weight.shape == (30, 29)
    assert model.ln2.weight.shape == (30,) and model.head.weight.shape == (10, 30)
    out = model(x)
    assert out.shape == (4, 10)
    out.sum().backward()


def test_grouped_conv_refuses_unequal_blocks():
    model = archs.ResNeXtLike()
    g = next(g for g in analyse(model, _x("resnext")) if g.producers == ["block1.conv1"])
    with pytest.raises(ValueError, match="equally many"):
        remove_channels(model, g, [0])
    remove_channels(model, g, [0, 4, 8, 12])  # one per block of 4
    assert model.block1.conv2.weight.shape == (16, 3, 3, 3) and model(_x("resnext")).shape == (3, 10)
