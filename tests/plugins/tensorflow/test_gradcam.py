"""tt.explain.gradcam on Keras CNNs (NHWC): hand-computed value, GradientTape brute force,
functional and subclassed models, no side effects."""
from __future__ import annotations

from tests.conftest import require

require("tensorflow", "keras")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import tensortap as tt  # noqa: E402
import tt_tf_helpers as H  # noqa: E402

L = H.L
keras = H.keras


def test_hand_computed_cam():
    """conv 1x1 with kernel [1, -1] -> global average pool -> dense W: y_c = sum_k W[k,c] mean(A^k),
    so alpha_k = W[k,c] / 16 and the map for class 0 is ReLU((1*x + 3*(-x)) / 16) = ReLU(-x / 8)."""
    i = keras.Input((4, 4, 1))
    conv = L.Conv2D(2, 1, use_bias=False, name="conv")
    out = L.Dense(2, use_bias=False, name="head")(L.GlobalAveragePooling2D()(conv(i)))
    model = keras.Model(i, out)
    conv.set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2)])
    model.get_layer("head").set_weights([np.array([[1.0, 2.0], [3.0, -1.0]], np.float32)])
    x = np.arange(-8, 8, dtype=np.float32).reshape(1, 4, 4, 1)
    cam = tt.explain.gradcam(model, x, target_layer="conv", targets=[0])
    np.testing.assert_allclose(cam.raw[0], np.maximum(-x[0, :, :, 0] / 8, 0), rtol=1e-6, atol=1e-7)
    assert cam.heatmap.shape == (1, 4, 4) and cam.heatmap.max() == 1.0
    assert cam.targets.tolist() == [0]


def _cnn_layers():
    return [L.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
            L.Conv2D(6, 3, padding="same", activation="relu", name="c2"),
            L.GlobalAveragePooling2D(name="gap"), L.Dense(3, name="logits")]


class SubCNN(keras.Model):
    def __init__(self):
        super().__init__(name="subcnn")
        self.c1, self.c2, self.gap, self.logits = _cnn_layers()

    def call(self, x, training=False):
        return self.logits(self.gap(self.c2(self.c1(x))))


@pytest.fixture(scope="module")
def cnns():
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 3))
    h = i
    for layer in _cnn_layers():
        h = layer(h)
    functional = keras.Model(i, h, name="fcnn")
    sub = SubCNN()
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 3)).astype(np.float32)
    sub(x)
    sub.set_weights(functional.get_weights())
    return functional, sub, x


def _brute_force(model, x, layer_name, targets):
    """Per image: a two-output functional model and a GradientTape, then the textbook formula."""
    probe = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.output])
    raws = []
    for b, c in enumerate(targets):
        xb = tf.constant(x[b:b + 1])
        with tf.GradientTape() as tape:
            acts, preds = probe(xb)
            score = preds[0, c]
        grads = tape.gradient(score, acts).numpy()[0].astype(np.float64)  # (h, w, k)
        a = acts.numpy()[0].astype(np.float64)
        alpha = grads.mean(axis=(0, 1))
        raws.append(np.maximum((a * alpha).sum(axis=-1), 0))
    return np.stack(raws)


def test_matches_gradient_tape_brute_force_for_functional_and_subclassed(cnns):
    functional, sub, x = cnns
    before = [w.copy() for w in functional.get_weights()]
    pred = functional(x).numpy().argmax(1)
    want = _brute_force(functional, x, "c2", pred)
    cam_f = tt.explain.gradcam(functional, x, target_layer="c2")
    np.testing.assert_allclose(cam_f.raw, want, rtol=1e-5, atol=1e-7)
    assert cam_f.targets.tolist() == pred.tolist()
    assert cam_f.raw.shape == (3, 8, 8) and cam_f.heatmap.shape == (3, 8, 8)
    # a subclassed model has no .output: it works the same, by layer object or by name
    cam_s = tt.explain.gradcam(sub, x, target_layer=sub.c2)
    np.testing.assert_allclose(cam_s.raw, cam_f.raw, rtol=1e-5, atol=1e-7)
    targets = [2, 0, 1]
    np.testing.assert_allclose(tt.explain.gradcam(sub, x, target_layer="c2", targets=targets).raw,
                               _brute_force(functional, x, "c2", targets), rtol=1e-5, atol=1e-7)
    # no side effects: weights and methods untouched
    assert all(np.array_equal(a, b) for a, b in zip(before, functional.get_weights()))
    assert "call" not in vars(sub.c2) and "call" not in vars(functional.get_layer("c2"))


def test_bad_layer_names_the_fix(cnns):
    functional, _, x = cnns
    with pytest.raises(tt.ConfigError, match='Did you mean "c2"'):
        tt.explain.gradcam(functional, x, target_layer="c22")


def test_watch_gradcam_saves_maps_on_saved_train_steps(cnns, tmp_path):
    from tensortap_tensorflow import watch_gradcam

    functional, _, x = cnns
    model = keras.models.clone_model(functional)
    model.set_weights(functional.get_weights())
    model.compile(optimizer=keras.optimizers.SGD(0.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["feature_maps"],
                   save_config=tt.SaveConfig(save_steps=[1]))
    hook.register(model)
    watch_gradcam(hook, x[:2], "c2", targets=[1, 2])
    model.fit(x, np.array([0, 1, 2]), batch_size=1, shuffle=False, verbose=0)
    hook.close()
    assert not hook.errors, hook.errors
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.steps() == [1]
    want = tt.explain.gradcam(model, x[:2], target_layer="c2", targets=[1, 2]).raw
    np.testing.assert_allclose(trial.tensor("gradcam/c2/cam").value(1), want, rtol=1e-5, atol=1e-6)
    assert trial.tensor("gradcam/c2/activations").value(1).shape == (2, 6, 8, 8)
    assert trial.tensor("gradcam/c2/targets").value(1).tolist() == [1, 2]


def test_works_inside_the_users_gradient_tape(cnns):
    """TensorFlow has no no_grad(): the places a user calls Grad-CAM from are inside a GradientTape
    (between forward and tape.gradient), inside tape.stop_recording(), or outside any tape. Each gives
    the same map, and the user's own gradient is unchanged."""
    functional, _, x = cnns
    want = tt.explain.gradcam(functional, x, target_layer="c2")
    xt = tf.constant(x)

    def user_gradient(explain):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(functional(xt, training=False) ** 2)
            cam = tt.explain.gradcam(functional, x, target_layer="c2") if explain == "tape" else None
            with tape.stop_recording():
                cam = tt.explain.gradcam(functional, x, target_layer="c2") if explain == "stopped" else cam
        return cam, [g.numpy() for g in tape.gradient(loss, functional.trainable_variables)]

    _, plain = user_gradient(None)
    for where in ("tape", "stopped"):
        cam, grads = user_gradient(where)
        np.testing.assert_array_equal(cam.raw, want.raw)
        assert all(np.array_equal(a, b) for a, b in zip(grads, plain)), where
