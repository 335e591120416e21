"""Attention capture: every nn.MultiheadAttention, also inside TransformerEncoderLayer's fast path."""
from tests.conftest import require

require("torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402

torch.set_num_threads(1)
E, H, L, B = 8, 2, 5, 3


def manual_probs(mha: nn.MultiheadAttention, x: torch.Tensor, key_padding_mask=None) -> np.ndarray:
    """softmax(QK^T / sqrt(d)) per head from the layer's own in_proj weights; x is (batch, seq, embed)."""
    w, b = mha.in_proj_weight.detach().double(), mha.in_proj_bias.detach().double()
    xd = x.detach().double()
    q = (xd @ w[:E].T + b[:E]).reshape(x.shape[0], x.shape[1], H, E // H).transpose(1, 2)
    k = (xd @ w[E:2 * E].T + b[E:2 * E]).reshape(x.shape[0], x.shape[1], H, E // H).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / np.sqrt(E // H)
    if key_padding_mask is not None:
        s = s.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    return torch.softmax(s, dim=-1).numpy()


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(E, H)  # (seq, batch, embed) layout

    def forward(self, x, mask):
        xs = x.transpose(0, 1)
        out, _ = self.attn(xs, xs, xs, key_padding_mask=mask, need_weights=False)
        return out.transpose(0, 1)


class Encoder(nn.Module):
    def __init__(self, layers: int = 2, nested: bool = True) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=16, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=nested)

    def forward(self, x, pad):
        return self.enc(x, src_key_padding_mask=pad)


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, L, E, generator=g)
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[1, 3:] = True  # left-aligned padding, as TransformerEncoder's nested-tensor path wants
    mask[2, 4:] = True
    return x, mask


def _check(p, x, mask, mha):
    assert p.shape == (B, H, L, L)
    keep = ~mask.numpy()
    rows = p.sum(-1)
    for i in range(B):
        np.testing.assert_allclose(rows[i][:, keep[i]], 1.0, rtol=1e-5)
        assert np.all(p[i][..., ~keep[i]] == 0)
    want = manual_probs(mha, x, mask)
    for i in range(B):  # rows of padding queries are 0 on the nested-tensor fast path
        np.testing.assert_allclose(p[i][:, keep[i]], want[i][:, keep[i]], rtol=1e-4, atol=1e-6)


def test_standalone_mha_with_need_weights_false():
    torch.manual_seed(0)
    model = SelfAttention()
    x, mask = _inputs()
    att = tt.explain.attention(model, x, mask)
    assert len(att) == 1
    _check(att[0][:, :, :, :], x, mask, model.attn)


def test_transformer_encoder_fast_path_in_call_order():
    torch.manual_seed(0)
    model = Encoder()
    x, mask = _inputs()
    model.train()
    att = tt.explain.attention(model, x, mask)  # runs in eval + no_grad: the fused fast path
    assert model.training
    assert len(att) == 2
    _check(att[0], x, mask, model.enc.layers[0].self_attn)
    keep = ~mask.numpy()
    for i in range(B):  # second layer: rows of real tokens sum to 1, padded keys get 0
        np.testing.assert_allclose(att[1][i][:, keep[i]].sum(-1), 1.0, rtol=1e-5)
        assert np.all(att[1][i][..., ~keep[i]] == 0)
    assert not np.allclose(att[0], att[1])


def test_training_capture_leaves_outputs_bit_identical(run_dir):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=16, dropout=0.1, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False), nn.Flatten(),
                          nn.Linear(E * L, 3))
    x, _ = _inputs()
    y = torch.tensor([0, 1, 2])

    def run(hooked: bool):
        torch.manual_seed(1)
        m = nn.Sequential(*[mod for mod in model])  # same parameters
        state = {k: v.clone() for k, v in model.state_dict().items()}
        hook = None
        if hooked:
            hook = tt.Hook(run_dir, include_collections=["attention"], save_config=tt.SaveConfig(save_interval=2))
            hook.register(m)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        outs = []
        m.train()
        for _ in range(3):
            opt.zero_grad()
            out = m(x)
            nn.functional.cross_entropy(out, y).backward()
            opt.step()
            outs.append(out.detach().clone())
        m.eval()
        with torch.no_grad():
            outs.append(m(x))  # eval step 0: saved, fast path
        if hook is not None:
            hook.close()
        model.load_state_dict(state)
        return outs

    assert all(torch.equal(a, b) for a, b in zip(run(False), run(True)))
    trial = tt.create_trial(run_dir)
    names = trial.tensor_names(collection="attention")
    assert names == ["attention/0.layers.0.self_attn", "attention/0.layers.1.self_attn"]
    t = trial.tensor(names[0])
    assert t.steps() == [0, 2, 3]
    assert t.value(0).shape == (B, H, L, L)
    np.testing.assert_allclose(t.value(0).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(t.value(0), manual_probs(model[0].layers[0].self_attn, x), rtol=1e-4, atol=1e-6)


class HandMadeAttention(nn.Module):
    """softmax(QK^T / sqrt(d)) V written out by hand: attention tensortap cannot see as such."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(E, 3 * E)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return torch.softmax(q @ k.transpose(-1, -2) / E ** 0.5, dim=-1) @ v


class UnusedAttention(nn.Module):
    """Holds an nn.MultiheadAttention that its forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(E, H, batch_first=True)
        self.proj = nn.Linear(E, E)

    def forward(self, x):
        return self.proj(x)


def test_no_readable_attention_is_the_one_clear_error():
    """An MLP, attention computed by hand, an attention module never called: tt.explain.attention
    raises AttentionNotFound with the message every framework gives, never returns []."""
    import pytest

    from tensortap.explain import no_attention_found
    from tensortap_torch.explainer import TorchExplainer

    x = _inputs()[0]
    mlp = nn.Sequential(nn.Linear(E, 16), nn.ReLU(), nn.Linear(16, 2))
    for model in (mlp, HandMadeAttention(), UnusedAttention()):
        with pytest.raises(tt.AttentionNotFound) as err:
            tt.explain.attention(model, x)
        assert str(err.value) == str(no_attention_found(model, "torch", TorchExplainer.attention_support))
        assert "nn.MultiheadAttention" in str(err.value) and "hook.save_tensor('attention/" in str(err.value)
        assert isinstance(err.value, tt.ConfigError)
