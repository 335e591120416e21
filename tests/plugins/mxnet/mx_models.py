"""Small real Gluon models shared by the mxnet plugin tests (imported after importorskip("mxnet"))."""
from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from mxnet.gluon import nn


def cnn(prefix: str = "cnn_", hybridize: bool = False, seed: int = 0, n_classes: int = 4, channels: int = 6):
    """Conv(relu) -> MaxPool -> Conv -> BatchNorm -> relu -> Flatten -> Dense, initialised from `seed`."""
    net = nn.HybridSequential(prefix=prefix)
    with net.name_scope():
        net.add(nn.Conv2D(4, 3, in_channels=1, activation="relu"), nn.MaxPool2D(),
                nn.Conv2D(channels, 3, in_channels=4), nn.BatchNorm(in_channels=channels), nn.Activation("relu"),
                nn.Flatten(), nn.Dense(n_classes, in_units=channels * 3 * 3))
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    if hybridize == "static":
        net.hybridize(static_alloc=True, static_shape=True)
    elif hybridize:
        net.hybridize()
    return net


def images(n_batches: int = 6, batch: int = 8, seed: int = 0, n_classes: int = 4):
    """Learnable 1x12x12 images: the class decides which quadrant is bright."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        y = rng.integers(0, n_classes, batch)
        x = rng.normal(0, 0.3, (batch, 1, 12, 12)).astype(np.float32)
        for i, c in enumerate(y):
            r, q = divmod(int(c), 2)
            x[i, 0, r * 6:(r + 1) * 6, q * 6:(q + 1) * 6] += 1.0
        out.append((mx.nd.array(x), mx.nd.array(y)))
    return out


def train(net, data, hook=None, optimizer: str = "sgd", opt_params=None, snapshot: bool = False):
    """Real training with a Gluon Trainer; with snapshot=True returns per step the params the forward
    used, the gradients backward produced and the mean loss, taken without tensortap."""
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    if hook is not None:
        hook.register(net)
        hook.register_loss(loss_fn)
    trainer = gluon.Trainer(net.collect_params(), optimizer, opt_params or {"learning_rate": 0.1})
    params = net.collect_params()
    snaps = []
    for x, y in data:
        used = {n: p.data().asnumpy() for n, p in params.items()} if snapshot else None
        with autograd.record():
            out = net(x)
            loss = loss_fn(out, y).mean()
        loss.backward()
        if snapshot:
            snaps.append({"params": used, "out": out.asnumpy(), "loss": float(loss.asscalar()),
                          "grads": {n: p.grad().asnumpy() for n, p in params.items() if p.grad_req != "null"}})
        trainer.step(1)
    return snaps


def param_values(net):
    return [p.data().asnumpy() for p in net.collect_params().values()]
