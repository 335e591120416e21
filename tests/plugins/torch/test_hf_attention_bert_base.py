"""Attention captured from a Hugging Face BERT at BERT-base width (hidden 768, 12 heads, intermediate
3072, sequences of 128 with padding; 2 layers keep it fast) while it trains with its default SDPA
attention, checked against the probabilities transformers itself returns (eager attention,
output_attentions=True) for the weights each saved step's forward used."""
from tests.conftest import require

require("torch", "transformers")

import copy  # noqa: E402
import os  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402

import tensortap as tt  # noqa: E402

torch.set_num_threads(1)
SEQ, BATCH, HEADS, LAYERS = 128, 2, 12, 2


def _config() -> "T.BertConfig":
    return T.BertConfig(vocab_size=1000, hidden_size=768, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=3072, max_position_embeddings=512, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=3)


def _batch(seed: int) -> dict:
    """Token ids with the second sequence padded from position 77 on, and labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 1000, (BATCH, SEQ), generator=g)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, 77:] = 0
    ids[1, 77:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (BATCH,), generator=g)}


def test_bert_base_width_attention_captured_in_training_equals_transformers_own(run_dir):
    torch.manual_seed(0)
    model = T.BertForSequenceClassification._from_config(copy.deepcopy(_config()), attn_implementation="sdpa")
    reference = T.BertForSequenceClassification._from_config(copy.deepcopy(_config()), attn_implementation="eager")
    assert model.config._attn_implementation == "sdpa"  # the default path, which returns no probabilities
    hook = tt.Hook(run_dir, include_collections=["attention", "losses"], save_config=tt.SaveConfig(save_steps=[0, 2]))
    hook.register(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    used = {}
    for step in range(3):
        x = _batch(step)
        if step in (0, 2):
            used[step] = ({k: v.detach().clone() for k, v in model.state_dict().items()}, x)
        out = model(**x)
        hook.record_loss(out.loss)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    hook.close()

    trial = tt.create_trial(run_dir)
    names = [f"attention/bert.encoder.layer.{i}.attention.self" for i in range(LAYERS)]
    assert sorted(trial.tensor_names(collection="attention")) == names
    for step, (state, x) in used.items():
        reference.load_state_dict(state)
        reference.eval()
        with torch.no_grad():
            want = [a.numpy() for a in reference(input_ids=x["input_ids"], attention_mask=x["attention_mask"],
                                                 output_attentions=True).attentions]
        assert len(want) == LAYERS
        for name, w in zip(names, want):
            got = trial.tensor(name).value(step)
            assert got.shape == w.shape == (BATCH, HEADS, SEQ, SEQ), (name, got.shape)
            np.testing.assert_allclose(got, w, atol=2e-6, rtol=0, err_msg=f"{name} at step {step}")
            assert got[1, :, :, 77:].max() == 0.0  # padded keys get nothing
            np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    # the check has something to see: the heads differ and the weights moved between the saved steps
    a0, a2 = (trial.tensor(names[1]).value(s) for s in (0, 2))
    assert np.abs(a0[0, 0] - a0[0, 1]).max() > 1e-3 and np.abs(a2 - a0).max() > 1e-3
