"""smdebug's Keras hook (used as a callback) and MXNet hook (register_block), with only the import
line changed."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tensortap.compat.smdebug.trials import create_trial


@pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras is not installed in this venv")
def test_keras_hook_as_a_callback(tmp_path):
    import keras

    import tensortap.compat.smdebug.tensorflow as smd  # was: import smdebug.tensorflow as smd

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="hidden"),
                              keras.layers.Dense(3, name="logits")],
                             name="sequential")  # not "sequential_3" after other Keras tests in this process
    model.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    out = str(tmp_path / "run")
    hook = smd.KerasHook(out_dir=out, include_collections=["weights", "gradients"],
                         save_config=smd.SaveConfig(save_interval=1))
    opt = hook.wrap_optimizer(model.optimizer)
    assert opt is model.optimizer
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 6)).astype("float32"), rng.integers(0, 3, 32)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[hook])
    w_after_first_fit = model.get_layer("hidden").kernel.numpy().copy()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[hook])  # no second callback added
    hook.close()
    trial = create_trial(out)
    assert trial.steps() == list(range(8))  # 4 batches per fit, each one step: the callback ran once per batch
    names = trial.tensor_names()
    assert {"sequential/hidden/kernel", "gradients/sequential/hidden/kernel", "loss"} <= set(names)
    assert trial.tensor_names(collection="metrics")  # metrics and losses: always, as smdebug's Keras hook
    assert trial.tensor("sequential/hidden/kernel").value(4).tobytes() == w_after_first_fit.tobytes()


@pytest.mark.skipif(importlib.util.find_spec("mxnet") is None, reason="mxnet is not installed in this venv")
def test_mxnet_hook_register_block(tmp_path):
    import mxnet as mx
    from mxnet import autograd, gluon, nd

    import tensortap.compat.smdebug.mxnet as smd  # was: import smdebug.mxnet as smd

    mx.random.seed(0)
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(8, activation="relu"), gluon.nn.Dense(3))
    net.initialize(mx.init.Xavier())
    out = str(tmp_path / "run")
    hook = smd.Hook(out_dir=out, include_collections=["weights", "gradients", "dense_outputs"],
                    save_config=smd.SaveConfig(save_interval=2))
    hook.register_block(net)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    hook.register_loss(loss_fn)
    hook.get_collection("dense_outputs").add_block_tensors(net[1], outputs=True)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    x, y = nd.random.normal(shape=(32, 6)), nd.array([i % 3 for i in range(32)])
    grads = {}
    for step in range(6):
        with autograd.record():
            loss = loss_fn(net(x[step * 4:step * 4 + 8]), y[step * 4:step * 4 + 8])
        loss.backward()
        grads[step] = net[0].weight.grad().asnumpy().copy()
        trainer.step(8)
    hook.close()
    trial = create_trial(out)
    assert trial.tensor("gradient/dense0_weight").steps() == [0, 2, 4]  # smdebug's spelling of gradients/dense0_weight
    for s in (0, 2, 4):
        assert trial.tensor("gradients/dense0_weight").value(s).tobytes() == grads[s].tobytes()
    assert trial.tensor_names(collection="dense_outputs") == ["dense1/output_0"]
    assert trial.tensor("loss").steps() == [0, 2, 4]
