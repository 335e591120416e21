"""tt.explain has its own role: the torch plugin's Explainer, named by its AdapterSpec, computes
Grad-CAM and attention with no Adapter built and no Hook (an Adapter used to be built with hook=None)."""
from tests.conftest import require

require("torch")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.plugins import get_registry  # noqa: E402

from torch_models import SmallResNet  # noqa: E402


def test_explanations_build_no_adapter(monkeypatch):
    from tensortap_torch.adapter import TorchAdapter

    def refuse(self, hook):
        raise AssertionError(f"tt.explain built a TorchAdapter (hook={hook!r})")

    monkeypatch.setattr(TorchAdapter, "__init__", refuse)
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    att = tt.explain.attention(layer, torch.randn(3, 5, 16))
    assert len(att) == 1 and att[0].shape == (3, 2, 5, 5)
    model = SmallResNet()
    cam = tt.explain.gradcam(model, torch.randn(2, 3, 16, 16), target_layer=model.layer2)
    assert cam.heatmap.shape == (2, 16, 16)
    assert get_registry().adapters["torch"].explainer == "tensortap_torch.explainer:TorchExplainer"


def test_a_plugin_without_an_explainer_says_what_it_does_not_support():
    from tensortap.testing import NumpyMLP

    with pytest.raises(NotImplementedError, match="the numpy plugin does not support Grad-CAM"):
        tt.explain.gradcam(NumpyMLP(), None, target_layer="fc1")
    with pytest.raises(NotImplementedError, match="the numpy plugin does not support attention capture"):
        tt.explain.attention(NumpyMLP(), None)
