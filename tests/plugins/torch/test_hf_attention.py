"""Attention of Hugging Face transformers models (tiny random BERT, RoBERTa, DistilBERT, GPT-2, ViT):
tt.explain.attention(model, **inputs) and the "attention" collection during training, with the
eager implementation (checked against the model's own output_attentions=True) and the default SDPA
one (which returns no probabilities; checked against eager on the same weights)."""
from tests.conftest import require

require("torch", "transformers", "tokenizers")

import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

import tensortap as tt  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from hf_models import FAMILIES, LAYER_NAMES, inputs, twins  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("family", FAMILIES)
def test_explain_equals_the_models_own_attentions_and_sdpa_agrees(family):
    eager, sdpa = twins(family)
    x = inputs(family)
    with torch.no_grad():
        ref = [a.numpy() for a in eager(**x, output_attentions=True).attentions]
    got = tt.explain.attention(eager, **x)
    assert len(got) == len(ref) == 2                            # one array per layer, in order
    for a, r in zip(got, ref):
        assert a.shape == r.shape == (3, 4) + r.shape[2:]       # (batch, heads, query, key)
        np.testing.assert_allclose(a, r, atol=1e-6, rtol=0)
    if family != "vit":                                          # the padded keys of the last sequence
        assert all(a[-1, :, :, 5:].max() == 0.0 for a in got)
    got_sdpa = tt.explain.attention(sdpa, **x)                   # SDPA returns none: recomputed from its call
    assert sdpa.config._attn_implementation == "sdpa"
    for a, e in zip(got_sdpa, got):
        np.testing.assert_allclose(a, e, atol=1e-5, rtol=0)
    if family == "gpt2":                                          # causal: nothing on later keys
        assert np.triu(got_sdpa[0][0, 0], 1).max() == 0.0


class CountOps(TorchFunctionMode):
    """Counts the torch calls a forward makes (tensortap's own work included, when it does any)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _ops(model, x) -> int:
    with torch.no_grad(), CountOps() as c:
        model(**x)
    return c.n


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_training_capture_leaves_outputs_alone_and_does_nothing_on_unsaved_steps(family, run_dir):
    eager, sdpa = twins(family)
    x = inputs(family)
    with torch.no_grad():
        want = sdpa(**x).last_hidden_state
    bare = _ops(sdpa, x)
    hook = tt.Hook(run_dir, include_collections=["attention"], save_config=tt.SaveConfig(save_steps=[1]))
    hook.register(sdpa)
    outs, ops = [], []
    for _ in range(3):                              # steps 0, 1 (saved), 2
        with torch.no_grad(), CountOps() as c:
            outs.append(sdpa(**x).last_hidden_state)
        ops.append(c.n)
    hook.close()
    for o in outs:
        torch.testing.assert_close(o, want, rtol=0, atol=0)     # the model computes exactly what it did
    assert ops[0] == ops[2] == bare and ops[1] > bare           # unsaved steps: not one extra torch call
    trial = tt.create_trial(run_dir)
    names = [f"attention/{LAYER_NAMES[family].format(i)}" for i in range(2)]
    assert sorted(trial.tensor_names(collection="attention")) == names
    ref = tt.explain.attention(eager, **x)
    for n, r in zip(names, ref):
        assert trial.tensor(n).steps() == [1]
        np.testing.assert_allclose(trial.tensor(n).value(1), r, atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_training_mode_saves_the_probabilities_before_dropout(impl, run_dir):
    eager, sdpa = twins("bert", dropout=0.5)
    model = eager if impl == "eager" else sdpa
    x = inputs("bert")
    clean = tt.explain.attention(model, **x)         # eval mode: no dropout
    hook = tt.Hook(run_dir, include_collections=["attention"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    model.train()
    model(**x).last_hidden_state.sum().backward()
    hook.close()
    got = tt.create_trial(run_dir).tensor("attention/encoder.layer.0.attention.self").value(0)
    # layer 0 sees the same input in both modes (no hidden dropout here); its probabilities sum to 1
    np.testing.assert_allclose(got, clean[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def _by_hand(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """A custom attention implementation with no softmax call (exp and sum)."""
    s = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        s = s + attention_mask
    w = torch.exp(s - s.amax(-1, keepdim=True))
    w = w / w.sum(-1, keepdim=True)
    return torch.matmul(w, value).transpose(1, 2).contiguous(), None


def test_an_implementation_it_cannot_read_is_reported_not_guessed(run_dir):
    from transformers import AttentionInterface

    AttentionInterface.register("tensortap_test_by_hand", _by_hand)
    eager, _ = twins("bert")
    x = {"input_ids": inputs("bert")["input_ids"]}    # no padding mask: the by-hand function needs none
    eager.config._attn_implementation = "tensortap_test_by_hand"
    with torch.no_grad():
        want = eager(**x).last_hidden_state
    hook = tt.Hook(run_dir, include_collections=["attention"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(eager)
    with torch.no_grad():
        got = eager(**x).last_hidden_state
    hook.close()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)          # the model still runs as before
    assert not tt.create_trial(run_dir).tensor_names(collection="attention")
    assert any("tensortap_test_by_hand" in e and "use 'eager' or 'sdpa'" in e for e in hook.errors)
