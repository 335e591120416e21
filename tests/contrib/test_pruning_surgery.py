"""tensortap-pruning: channel groups and surgery on real torch models (no hook needed here)."""
from __future__ import annotations

from tests.conftest import require

require("torch", "tensortap_pruning")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from examples.common.cnn import BasicBlock as Block  # noqa: E402
from tensortap_pruning import analyse, count_params, params_removed, plan_removal, remove_channels  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.b1 = Block(8, 8)
        self.b2 = Block(8, 12, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.b2(self.b1(self.relu(self.bn(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


class TinyAlex(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, 1, 1)
        self.c2 = nn.Conv2d(6, 10, 3, 1, 1)
        self.fc1 = nn.Linear(10 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


def _x(n=4):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _by_producer(groups):
    return {tuple(g.producers): g for g in groups}


def test_resnet_groups_keep_residual_channels_aligned():
    groups = _by_producer(analyse(TinyResNet(), _x()))
    trunk1 = groups[("stem", "b1.conv2")]        # stem and block 1's conv2 feed the same residual sum
    assert trunk1.prunable and sorted(trunk1.norms) == ["b1.bn2", "bn"]
    assert sorted(trunk1.conv_consumers) == ["b1.conv1", "b2.conv1", "b2.downsample.0"]
    assert trunk1.rank_taps == ["relu", "b1.relu2"]
    trunk2 = groups[("b2.downsample.0", "b2.conv2")]
    assert trunk2.linear_consumers == [("fc", 1)] and trunk2.prunable
    assert groups[("b1.conv1",)].conv_consumers == ["b1.conv2"]
    assert groups[("b1.conv1",)].rank_taps == ["b1.relu1"]


def test_functional_relu_and_view_flatten_are_followed():
    groups = _by_producer(analyse(TinyAlex(), _x()))
    assert groups[("c1",)].conv_consumers == ["c2"]
    assert groups[("c2",)].linear_consumers == [("fc1", 16)]
    # functional relus are not modules: the conv output itself is what gets ranked
    assert groups[("c2",)].rank_taps == ["c2"]


def test_unknown_ops_and_the_output_freeze_groups():
    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(3, 4, 3, padding=1)
            self.c = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return self.c(self.a(x)[:, :2]), self.b(x)

    groups = _by_producer(analyse(Split(), _x()))
    assert not groups[("a",)].prunable and "getitem" in groups[("a",)].frozen
    assert not groups[("c",)].prunable and "output" in groups[("c",)].frozen
    assert "output" in groups[("b",)].frozen


def _hand_count_resnet(c_stem: int, c_b1: int, c_b2: int, c_b2in: int) -> int:
    """Parameters of TinyResNet with trunk widths (stem/b1 = c_stem, b2 = c_b2) and internal widths."""
    n = 3 * c_stem * 9 + 2 * c_stem                      # stem + bn
    n += c_stem * c_b1 * 9 + 2 * c_b1 + c_b1 * c_stem * 9 + 2 * c_stem   # b1
    n += c_stem * c_b2in * 9 + 2 * c_b2in + c_b2in * c_b2 * 9 + 2 * c_b2 + c_stem * c_b2 + 2 * c_b2  # b2
    return n + c_b2 * 5 + 5


@pytest.mark.parametrize("drop_trunk1,drop_b1,drop_trunk2", [(2, 3, 4), (5, 0, 1), (0, 7, 0)])
def test_resnet_param_count_matches_the_arithmetic(drop_trunk1, drop_b1, drop_trunk2):
    model = TinyResNet()
    assert count_params(model) == _hand_count_resnet(8, 8, 12, 12)
    groups = _by_producer(analyse(model, _x()))
    for key, n in ((("stem", "b1.conv2"), drop_trunk1), (("b1.conv1",), drop_b1),
                   (("b2.downsample.0", "b2.conv2"), drop_trunk2)):
        g = groups[key]
        predicted = params_removed(model, g, n)
        before = count_params(model)
        assert remove_channels(model, g, list(range(n))) == predicted == before - count_params(model)
    assert count_params(model) == _hand_count_resnet(8 - drop_trunk1, 8 - drop_b1, 12 - drop_trunk2, 12)
    out = model(_x(3))
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    model.train()
    F.cross_entropy(model(_x(3)), torch.tensor([0, 1, 2])).backward()  # backward works too


def _silence(model: nn.Module, group, idx) -> None:
    """Make channels `idx` of `group` exactly zero after their batch-norms (or convs)."""
    mods = dict(model.named_modules())
    with torch.no_grad():
        for name in group.producers:
            mods[name].weight[idx] = 0
            if mods[name].bias is not None:
                mods[name].bias[idx] = 0
        for name in group.norms:
            mods[name].weight[idx] = 0
            mods[name].bias[idx] = 0


@pytest.mark.parametrize("make", [TinyResNet, TinyAlex])
def test_pruned_model_computes_what_the_silenced_original_computes(make):
    """Removing channels that contribute exactly zero must not change the output: the surgery
    cut the right slices from every producer, norm and consumer (conv and flattened linear)."""
    torch.manual_seed(1)
    model = make().eval()
    x = _x(5)
    with torch.no_grad():  # give batch-norms non-trivial statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    groups = [g for g in analyse(model, x) if g.prunable]
    plan = {g.gid: [i for i in range(g.size) if i % 3 == 1] for g in groups}
    for g in groups:
        _silence(model, g, plan[g.gid])
    with torch.no_grad():
        want = model(x)
    for g in groups:
        remove_channels(model, g, plan[g.gid])
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_plan_respects_min_channels_and_picks_the_lowest():
    model = TinyAlex()
    groups = {g.gid: g for g in analyse(model, _x()) if g.prunable}
    g1, g2 = sorted(gid for gid, g in groups.items() if g.producers[0] in ("c1", "c2"))  # (fc1 is a group too)
    scores = {g1: [0.9, 0.1, 0.8, 0.05, 0.7, 0.6], g2: [0.5] * 9 + [0.01]}
    plan = plan_removal(scores, groups, 3, min_channels=2)
    assert plan == {g1: [3, 1], g2: [9]}
    plan = plan_removal(scores, groups, 100, min_channels=4)
    assert len(plan[g1]) == 2 and len(plan[g2]) == 6


def test_remove_channels_rejects_bad_requests():
    model = TinyResNet()
    groups = analyse(model, _x())
    g = next(g for g in groups if g.prunable)
    with pytest.raises(ValueError, match="out of range"):
        remove_channels(model, g, [99])
    with pytest.raises(ValueError, match="all"):
        remove_channels(model, g, range(g.size))
    out_group = analyse(TinyAlex(), _x())[-1]  # fc2's outputs are the model's
    assert not out_group.prunable and out_group.frozen == "reaches the model output"
    with pytest.raises(ValueError, match="cannot be pruned"):
        remove_channels(model, out_group, [0])


def test_analysis_leaves_the_model_as_it_was():
    model = TinyResNet().train()
    model.b1.bn1.eval()  # a user's frozen batch-norm stays frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analyse(model, _x())
    assert model.training and not model.b1.bn1.training and model.b2.bn1.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched
