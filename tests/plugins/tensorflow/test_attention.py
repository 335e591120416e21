"""keras.layers.MultiHeadAttention scores: tt.explain.attention and collection "attention" in fit,
without changing the model's outputs."""
from __future__ import annotations

from tests.conftest import require

require("tensorflow", "keras")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tensortap as tt  # noqa: E402
import tt_tf_helpers as H  # noqa: E402

L = H.L
keras = H.keras
B, T, D = 4, 5, 8


class Causal(keras.Model):
    """Subclassed: a causal self-attention then a plain one, shared classifier head."""

    def __init__(self):
        super().__init__(name="causal")
        self.a1 = L.MultiHeadAttention(2, 4, name="a1")
        self.a2 = L.MultiHeadAttention(3, 4, name="a2")
        self.pool = L.GlobalAveragePooling1D()
        self.head = L.Dense(3, name="head")

    def call(self, x, training=False):
        h = self.a1(x, x, use_causal_mask=True)
        h = self.a2(h, x)
        return self.head(self.pool(h))


@pytest.fixture(scope="module")
def model_and_data():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, T, D)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    model = Causal()
    model(x[:B])
    return model, x, y


def test_explain_attention_scores_in_call_order(model_and_data):
    model, x, _ = model_and_data
    att = tt.explain.attention(model, x[:B])
    assert [a.shape for a in att] == [(B, 2, T, T), (B, 3, T, T)]
    for a in att:
        np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(att[0], k=1) == 0), "causal: no attention to later positions"
    # the same as Keras' own return_attention_scores=True
    _, want = model.a1(x[:B], x[:B], use_causal_mask=True, return_attention_scores=True)
    np.testing.assert_allclose(att[0], want.numpy(), rtol=1e-5, atol=1e-7)
    assert "_compute_attention" not in vars(model.a1)


def test_fit_saves_attention_without_changing_outputs(model_and_data, tmp_path):
    model, x, y = model_and_data
    before = model.predict(x[:B], verbose=0)
    model.compile(optimizer=keras.optimizers.SGD(0.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    out = str(tmp_path / "run")
    hook = tt.Hook(out, include_collections=["attention"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    during = model.predict(x[:B], batch_size=B, verbose=0)
    hook.close()
    assert not hook.errors, hook.errors
    assert np.array_equal(before, during), "capturing attention must not change the model's outputs"
    trial = tt.create_trial(out)
    assert set(trial.tensor_names(collection="attention")) == {"attention/causal/a1", "attention/causal/a2"}
    got = trial.tensor("attention/causal/a1").value(0, mode=tt.modes.PREDICT)
    np.testing.assert_allclose(got, tt.explain.attention(model, x[:B])[0], rtol=1e-5, atol=1e-7)
    assert trial.tensor("attention/causal/a2").value(3, mode=tt.modes.TRAIN).shape == (B, 3, T, T)


def test_model_without_attention_is_a_clear_error():
    """The same error class and message template as torch and MXNet (tensortap.explain.no_attention_found)."""
    from tensortap.explain import no_attention_found
    from tensortap_tensorflow.explainer import TensorFlowExplainer

    model = H.sequential()
    with pytest.raises(tt.AttentionNotFound, match="MultiHeadAttention") as err:
        tt.explain.attention(model, np.zeros((2, 8), np.float32))
    assert str(err.value) == str(no_attention_found(model, "tensorflow", TensorFlowExplainer.attention_support))
