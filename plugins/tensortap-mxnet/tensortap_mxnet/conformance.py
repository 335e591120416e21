"""Conformance kit: the shared fc1 (8->16) -> ReLU -> fc2 (16->4) model as a hybridized Gluon block.

Parameters are named as Gluon names them: "mlp_fc1_weight", "mlp_fc1_bias", ... Loss
normalisation: the kit backpropagates the *mean* softmax cross-entropy over the batch and calls
`trainer.step(1)` (rescale_grad = 1), so the stored gradients are those of the mean loss, as in
the other frameworks' kits; plain SGD, lr 0.1. The model is hybridized, so the suite also checks
that layer outputs come from real per-step values, not the trace.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from tensortap.testing.conformance import N_HIDDEN, N_IN, N_OUT, ConformanceKit

CANONICAL = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


def make_mlp(seed: int = 0, hybridize: bool = True):
    """The canonical MLP as a Gluon HybridBlock with fixed, seed-derived float32 weights."""
    import mxnet as mx
    from mxnet.gluon import HybridBlock, nn

    class MLP(HybridBlock):
        def __init__(self):
            super().__init__(prefix="mlp_")
            with self.name_scope():
                self.fc1 = nn.Dense(N_HIDDEN, in_units=N_IN, prefix="fc1_")
                self.fc2 = nn.Dense(N_OUT, in_units=N_HIDDEN, prefix="fc2_")

        def hybrid_forward(self, F, x):
            return self.fc2(F.relu(self.fc1(x)))

    net = MLP()
    net.initialize(ctx=mx.cpu())
    rng = np.random.default_rng(seed)
    shapes = {"mlp_fc1_weight": (N_HIDDEN, N_IN), "mlp_fc1_bias": (N_HIDDEN,),
              "mlp_fc2_weight": (N_OUT, N_HIDDEN), "mlp_fc2_bias": (N_OUT,)}
    for name, p in net.collect_params().items():
        fan_in = shapes[name][-1]
        value = (rng.standard_normal(shapes[name]) / np.sqrt(fan_in) if name.endswith("weight")
                 else np.zeros(shapes[name]))
        p.set_data(mx.nd.array(value.astype(np.float32)))
    if hybridize:
        net.hybridize()
    return net


class Kit(ConformanceKit):
    framework = "mxnet"
    requires = ("mxnet",)

    def param_names(self) -> Dict[str, str]:
        return {c: "mlp_" + c.replace(".", "_") for c in CANONICAL}

    def output_name(self, layer: str) -> str:
        return f"mlp_{layer}/output_0"

    def make_model(self, seed: int = 0) -> Any:
        return make_mlp(seed)

    def train(self, hook, model: Any, data, lr: float = 0.1) -> List[dict]:
        import mxnet as mx
        from mxnet import autograd, gluon

        hook.register(model)
        loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
        hook.register_loss(loss_fn)
        trainer = gluon.Trainer(model.collect_params(), "sgd", {"learning_rate": lr})
        params = model.collect_params()
        snaps = []
        for x, y in data:
            used = {n: p.data().asnumpy() for n, p in params.items()}
            xb, yb = mx.nd.array(x), mx.nd.array(y)
            with autograd.record():
                loss = loss_fn(model(xb), yb).mean()
            loss.backward()
            grads = {n: p.grad().asnumpy() for n, p in params.items()}
            snaps.append({"params": used, "grads": grads, "loss": float(loss.asscalar())})
            trainer.step(1)
        return snaps
