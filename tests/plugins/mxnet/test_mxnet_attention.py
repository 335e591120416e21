"""GluonNLP BERT attention from a model built with output_attention=False."""
from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mxnet", reason="mxnet is not installed in this venv (only in the all-frameworks venv)")
nlp = pytest.importorskip("gluonnlp", reason="gluonnlp is not installed in this venv")

import tensortap as tt  # noqa: E402
from gluonnlp.model import BERTEncoder, BERTModel  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

import tensortap_mxnet  # noqa: E402

VOCAB, UNITS, HEADS, LAYERS, SEQ = 30, 16, 4, 2, 7


def bert(output_attention=False, dropout=0.0, prefix="bert_"):
    enc = BERTEncoder(num_layers=LAYERS, units=UNITS, hidden_size=32, max_length=16, num_heads=HEADS,
                      dropout=dropout, output_attention=output_attention, prefix=prefix + "enc_")
    return BERTModel(enc, vocab_size=VOCAB, token_type_vocab_size=2, units=UNITS, embed_size=UNITS,
                     use_pooler=True, use_decoder=False, use_classifier=False, prefix=prefix)


def batch(seed=0, n=3):
    rng = np.random.default_rng(seed)
    ids = mx.nd.array(rng.integers(1, VOCAB, (n, SEQ)))
    types = mx.nd.zeros((n, SEQ))
    valid = mx.nd.array(rng.integers(3, SEQ + 1, n))
    return ids, types, valid


def test_attention_equals_gluonnlp_output_attention_in_eval_mode():
    mx.random.seed(0)
    ours = bert()
    ours.initialize(mx.init.Normal(0.5))
    theirs = bert(output_attention=True)
    theirs.initialize()
    ids, types, valid = batch()
    ours(ids, types, valid)  # finish shapes
    theirs(ids, types, valid)
    for (n, p), (m, q) in zip(sorted(ours.collect_params().items()), sorted(theirs.collect_params().items())):
        assert n == m
        q.set_data(p.data())
    ours.hybridize()
    ours(ids, types, valid)  # the cached graph exists: attention() must still see real values
    att = tt.explain.attention(ours, ids, types, valid)
    ref = theirs(ids, types, valid)[1]
    assert len(att) == LAYERS
    for layer in range(LAYERS):
        want = ref[layer][0].asnumpy()
        assert att[layer].shape == (3, HEADS, SEQ, SEQ) == want.shape
        assert np.array_equal(att[layer], want)
        v = valid.asnumpy().astype(int)
        for b in range(3):
            assert np.all(att[layer][b, :, :, v[b]:] == 0)
            assert np.allclose(att[layer][b].sum(-1), 1, atol=1e-5)
    from tensortap.explain import no_attention_found
    from tensortap_mxnet.explainer import MXNetExplainer

    dense = gluon.nn.Dense(2)  # the same error class and message template as torch and Keras
    with pytest.raises(tt.AttentionNotFound, match="DotProductSelfAttentionCell") as err:
        tt.explain.attention(dense, ids)
    assert str(err.value) == str(no_attention_found(dense, "mxnet", MXNetExplainer.attention_support))


class Classifier(gluon.HybridBlock):
    def __init__(self, dropout):
        super().__init__(prefix="clf_")
        with self.name_scope():
            self.bert = bert(dropout=dropout, prefix="bert_")
            self.out = gluon.nn.Dense(2, in_units=UNITS, prefix="out_")

    def hybrid_forward(self, F, ids, types, valid):
        _, pooled = self.bert(ids, types, valid)
        return self.out(pooled)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_attention_during_fine_tuning_with_tokens(tmp_path, dropout):
    mx.random.seed(1)
    model = Classifier(dropout=dropout)
    reference = bert(output_attention=True, prefix="bert_")  # gluonnlp's own attention output
    reference.initialize()
    wanted = {}
    model.initialize(mx.init.Normal(0.2))
    model.hybridize()
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(model.collect_params(), "adam", {"learning_rate": 1e-3})
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["attention", "losses"],
                   save_config=tt.SaveConfig(save_interval=2))
    hook.register(model)
    hook.register_loss(loss_fn)
    vocab = [f"w{i}" for i in range(VOCAB)]
    losses = []
    for step in range(6):
        ids, types, valid = batch(seed=step % 2)
        y = mx.nd.array((ids.asnumpy()[:, 0] > VOCAB / 2).astype(np.float32))
        tensortap_mxnet.set_tokens(hook, [[vocab[int(i)] for i in row] for row in ids.asnumpy()])
        with autograd.record():
            loss = loss_fn(model(ids, types, valid), y).mean()
        loss.backward()
        if dropout == 0.0 and step % 2 == 0:  # the weights this forward used, before the update
            reference(ids, types, valid)
            ours = {n[len("clf_"):]: p for n, p in model.bert.collect_params().items()}
            for n, q in reference.collect_params().items():
                q.set_data(ours[n].data())
            wanted[step] = [a[0].asnumpy() for a in reference(ids, types, valid)[1]]
        trainer.step(1)
        losses.append(float(loss.asscalar()))
    hook.close()
    assert not hook.errors, hook.errors
    trial = tt.create_trial(str(tmp_path / "run"))
    names = trial.tensor_names(collection="attention")
    layers = sorted(n for n in names if n != "attention/tokens")
    assert layers == [f"attention/clf_bert_enc_transformer{i}_dotproductselfattentioncell0" for i in range(LAYERS)]
    assert trial.steps() == [0, 2, 4]
    for step in trial.steps():
        v = batch(seed=step % 2)[2].asnumpy().astype(int)
        for name in layers:
            a = trial.tensor(name).value(step)
            assert a.shape == (3, HEADS, SEQ, SEQ)
            if dropout == 0.0:
                assert np.allclose(a, wanted[step][layers.index(name)], rtol=1e-5, atol=1e-6)
            # stored before dropout: rows are probability distributions over the valid keys
            assert np.allclose(a.sum(-1), 1, atol=1e-5)
            for b in range(3):
                assert np.all(a[b, :, :, v[b]:] == 0)
        tokens = trial.tensor("attention/tokens").value(step)
        assert tokens.shape == (3, SEQ) and tokens[0, 0].startswith("w")
    # training went on: attention changed between saved steps of the same batch
    assert not np.array_equal(trial.tensor(layers[0]).value(0), trial.tensor(layers[0]).value(4))
