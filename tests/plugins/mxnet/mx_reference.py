"""Gluon CNNs of realistic width and a torch twin that runs the same block tree with the same weights:
a reference computed outside MXNet for Grad-CAM and for what the hook captures.

`python mx_reference.py` runs every check and prints one JSON line of error measures, so a test can
repeat them in a subprocess with MXNET_MKLDNN_ENABLED=0 (mxnet reads that variable once, at import).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np
import torch
import torch.nn.functional as F
from mxnet import autograd, gluon
from mxnet.gluon import nn

import tensortap as tt

torch.set_num_threads(1)
N_CLASSES = 6


class Residual(gluon.HybridBlock):
    """relu(x + BN(conv(relu(BN(conv(x)))))), ResNet's basic block."""

    def __init__(self, channels: int, **kw: Any) -> None:
        super().__init__(**kw)
        with self.name_scope():
            self.body = nn.HybridSequential()
            self.body.add(nn.Conv2D(channels, 3, padding=1, in_channels=channels, use_bias=False),
                          nn.BatchNorm(in_channels=channels), nn.Activation("relu"),
                          nn.Conv2D(channels, 3, padding=1, in_channels=channels, use_bias=False),
                          nn.BatchNorm(in_channels=channels))

    def hybrid_forward(self, F, x):  # noqa: N803 - Gluon's name
        return F.relu(x + self.body(x))


class TwoHeads(gluon.HybridBlock):
    """A multi-output model: (class scores, channel means of the features); Grad-CAM explains the first."""

    def __init__(self, features: gluon.HybridBlock, classifier: gluon.HybridBlock, **kw: Any) -> None:
        super().__init__(**kw)
        with self.name_scope():
            self.features = features
            self.classifier = classifier

    def hybrid_forward(self, F, x):  # noqa: N803
        f = self.features(x)
        return self.classifier(f), F.mean(f, axis=(2, 3))


def signs_cnn(hybridize: bool) -> Tuple[gluon.HybridBlock, gluon.Block]:
    """examples/swap_backends.py's CNN: conv16-pool-conv32-pool-dense64-dense6, max pooling after the
    explained conv (the case oneDNN got wrong). Returns (net, target block)."""
    net = nn.HybridSequential(prefix="signs_")
    with net.name_scope():
        net.add(nn.Conv2D(16, 3, padding=1, activation="relu", in_channels=3), nn.MaxPool2D(),
                nn.Conv2D(32, 3, padding=1, activation="relu", in_channels=16), nn.MaxPool2D(),
                nn.Dense(64, activation="relu", in_units=32 * 8 * 8), nn.Dense(N_CLASSES, in_units=64))
    _init(net, hybridize)
    return net, net[2]


def resnet(hybridize: bool) -> Tuple[gluon.HybridBlock, gluon.Block]:
    """A two-output ResNet-style CNN, 32-64 channels, BatchNorm, 3x3/2 max pooling, global max pooling.
    Returns (net, the second residual block: the target)."""
    features = nn.HybridSequential(prefix="features_")
    with features.name_scope():
        features.add(nn.Conv2D(32, 3, padding=1, use_bias=False, in_channels=3), nn.BatchNorm(in_channels=32),
                     nn.Activation("relu"), nn.MaxPool2D(3, 2, 1), Residual(32), Residual(32),
                     nn.Conv2D(64, 3, strides=2, padding=1, in_channels=32), nn.Activation("relu"))
    classifier = nn.HybridSequential(prefix="classifier_")
    with classifier.name_scope():
        classifier.add(nn.GlobalMaxPool2D(), nn.Flatten(), nn.Dense(N_CLASSES, in_units=64))
    net = TwoHeads(features, classifier, prefix="resnet_")
    _init(net, hybridize)
    return net, features[5]


MODELS: Dict[str, Callable[[bool], Tuple[gluon.HybridBlock, gluon.Block]]] = {"signs": signs_cnn, "resnet": resnet}


def _init(net: gluon.HybridBlock, hybridize: bool) -> None:
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(magnitude=2.5))
    if hybridize:
        net.hybridize()


def data(n: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Images (n, 3, 32, 32) whose class sets which of six regions is bright, and the classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    x = rng.normal(0, 0.5, (n, 3, 32, 32)).astype(np.float32)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 3)
        x[i, :, r * 16:(r + 1) * 16, q * 10:(q + 1) * 10 + 2] += 1.5
    return x, y


def first(out: Any) -> Any:
    return out[0] if isinstance(out, (list, tuple)) else out


def fit(net: gluon.HybridBlock, steps: int = 3, seed: int = 1) -> None:
    """A few real SGD steps: weights move off their initial values, BatchNorm statistics off (0, 1)."""
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.05})
    for s in range(steps):
        x, y = data(16, seed + s)
        with autograd.record():
            loss = loss_fn(first(net(mx.nd.array(x))), mx.nd.array(y)).mean()
        loss.backward()
        trainer.step(1)


def snapshot(net: gluon.Block) -> Dict[str, np.ndarray]:
    """Every parameter (BatchNorm statistics included) by its full Gluon name."""
    return {name: p.data().asnumpy().copy() for name, p in net.collect_params().items()}


# ---- the torch twin -------------------------------------------------------------------------------
class Twin:
    """Runs a Gluon block tree in torch with the given parameter values (by full Gluon name).
    `train`: BatchNorm on batch statistics (else running ones). `replace(block, out)` may swap a
    block's output (Grad-CAM's leaf); every block's output is kept in `outputs` (id(block) -> tensor)."""

    def __init__(self, params: Dict[str, np.ndarray], train: bool = False, requires_grad: bool = False,
                 replace: Optional[Callable[[Any, torch.Tensor], torch.Tensor]] = None) -> None:
        stats = ("running_mean", "running_var")
        self.p = {k: torch.tensor(v, dtype=torch.float32, requires_grad=requires_grad and not k.endswith(stats))
                  for k, v in params.items()}
        self.train, self.replace = train, replace
        self.outputs: Dict[int, Any] = {}

    def __call__(self, block: Any, x: torch.Tensor) -> Any:
        out = self._run(block, x)
        if self.replace is not None:
            out = self.replace(block, out)
        self.outputs[id(block)] = out
        return out

    def _param(self, block: Any, attr: str) -> torch.Tensor:
        return self.p[getattr(block, attr).name]

    def _act(self, block: Any, x: torch.Tensor) -> torch.Tensor:
        act = getattr(block, "act", None)
        return x if act is None else self(act, x)

    def _run(self, b: Any, x: Any) -> Any:
        if isinstance(b, TwoHeads):
            f = self(b.features, x)
            return self(b.classifier, f), f.mean(dim=(2, 3))
        if isinstance(b, Residual):
            return F.relu(x + self(b.body, x))
        if isinstance(b, nn.HybridSequential):
            for child in b._children.values():
                x = self(child, x)
            return x
        if isinstance(b, nn.Conv2D):
            k = b._kwargs
            bias = self._param(b, "bias") if b.bias is not None else None
            y = F.conv2d(x, self._param(b, "weight"), bias, stride=k["stride"], padding=k["pad"])
            return self._act(b, y)
        if isinstance(b, nn.Dense):
            y = F.linear(torch.flatten(x, 1), self._param(b, "weight"), self._param(b, "bias"))
            return self._act(b, y)
        if isinstance(b, nn.BatchNorm):
            return F.batch_norm(x, self._param(b, "running_mean"), self._param(b, "running_var"),
                                self._param(b, "gamma"), self._param(b, "beta"), training=self.train,
                                momentum=0.0, eps=b._kwargs["eps"])
        if isinstance(b, nn.Activation):
            assert b._act_type == "relu", b._act_type
            return F.relu(x)
        if isinstance(b, nn.MaxPool2D):
            k = b._kwargs
            return F.max_pool2d(x, k["kernel"], k["stride"], k["pad"])
        if isinstance(b, nn.GlobalMaxPool2D):
            return F.max_pool2d(x, tuple(x.shape[2:]))  # one winner per window, like mxnet (amax splits ties)
        if isinstance(b, nn.Flatten):
            return torch.flatten(x, 1)
        raise TypeError(f"the torch twin has no rule for {type(b).__name__}")


def torch_gradcam(params: Dict[str, np.ndarray], net: Any, target: Any, x: np.ndarray,
                  targets: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Grad-CAM computed in torch on the same weights (BatchNorm on running statistics):
    activations, d y_c / d activations, the raw map ReLU(sum_k mean(dy_c/dA^k) A^k), targets."""
    leaf: List[torch.Tensor] = []

    def swap(block: Any, out: Any) -> Any:
        if block is target and not leaf:
            leaf.append(out.detach().requires_grad_(True))
            return leaf[0]
        return out

    logits = first(Twin(params, replace=swap)(net, torch.from_numpy(x)))
    t = logits.argmax(1) if targets is None else torch.as_tensor(np.asarray(targets), dtype=torch.long)
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), leaf[0])
    a = leaf[0].detach()
    cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    return {"acts": a.numpy(), "grads": g.numpy(), "cam": cam.numpy(), "targets": t.numpy()}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b||."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


# ---- the checks: each returns error measures (the tests assert on them) -----------------------------
def explain_errors(model: str, hybridize: bool) -> Dict[str, float]:
    """tt.explain.gradcam on a trained net against torch, on one batch, called twice."""
    net, target = MODELS[model](hybridize)
    fit(net)
    x, _ = data(8, seed=100)
    ref = torch_gradcam(snapshot(net), net, target, x)
    cams = [tt.explain.gradcam(net, x, target_layer=target) for _ in range(2)]
    return {"cam_rel": rel(cams[0].raw, ref["cam"]), "cam_corr": corr(cams[0].raw, ref["cam"]),
            "targets_differ": float(np.sum(cams[0].targets != ref["targets"])),
            "repeat_rel": rel(cams[1].raw, cams[0].raw), "ref_cam_max": float(ref["cam"].max())}


def raw_mxnet_errors(model: str) -> Dict[str, float]:
    """What mxnet's own gradients give: explain_errors' measures with tensortap's oneDNN pooling
    workaround switched off (docs/mxnet.md quotes them; with oneDNN off they equal the fixed ones)."""
    import contextlib

    import tensortap_mxnet.gradcam as mx_gradcam

    fixed = mx_gradcam.pooling_in_train_mode
    mx_gradcam.pooling_in_train_mode = contextlib.nullcontext
    try:
        e = explain_errors(model, False)
    finally:
        mx_gradcam.pooling_in_train_mode = fixed
    return {k: e[k] for k in ("cam_rel", "cam_corr", "repeat_rel")}


def train_time_errors(model: str, hybridize: bool, out_dir: str) -> Dict[str, float]:
    """Grad-CAM saved during training (collection "feature_maps") against torch at each saved step."""
    import tensortap_mxnet

    net, target = MODELS[model](hybridize)
    hook = tt.Hook(out_dir, include_collections=["feature_maps"], save_config=tt.SaveConfig(save_interval=2))
    hook.register(net)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.05})
    refs = {}
    for step in range(4):
        x, y = data(16, seed=step)
        with autograd.record():
            loss = loss_fn(first(net(mx.nd.array(x))), mx.nd.array(y)).mean()
        loss.backward()
        trainer.step(1)
        if tensortap_mxnet.record_gradcam(hook, net, x[:6], target, targets=y[:6]):
            refs[step] = torch_gradcam(snapshot(net), net, target, x[:6], y[:6])
    hook.close()
    trial = tt.create_trial(out_dir)
    names = [n for n in trial.tensor_names(collection="feature_maps") if n.endswith("/cam")]
    got = {s: trial.tensor(names[0]).value(s) for s in refs}
    return {"steps": float(len(refs)), "errors": float(len(hook.errors)),
            "cam_rel": max(rel(got[s], refs[s]["cam"]) for s in refs),
            "cam_corr": min(corr(got[s], refs[s]["cam"]) for s in refs)}


def hook_capture_errors(model: str, hybridize: bool, out_dir: str) -> Dict[str, float]:
    """Weights, parameter gradients, every layer's output and its gradient, saved by the hook during
    real training steps, against one torch training step on the same weights and batch."""
    from tensortap_mxnet.blocks import layer_names

    net, _ = MODELS[model](hybridize)
    taps = tt.Collection("output_gradients", include_regex=[r"^gradients/.*/output_\d$"])
    hook = tt.Hook(out_dir, include_collections=["weights", "biases", "gradients", "outputs", taps],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(net)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.05})
    batches, used = [], []
    for step in range(3):
        x, y = data(16, seed=10 + step)
        used.append(snapshot(net))
        batches.append((x, y))
        with autograd.record():
            loss = loss_fn(first(net(mx.nd.array(x))), mx.nd.array(y)).mean()
        loss.backward()
        trainer.step(1)
    hook.close()
    trial = tt.create_trial(out_dir)
    names = layer_names(net)
    err = {"weights": 0.0, "param_grads": 0.0, "outputs": 0.0, "output_grads": 0.0}
    counts = dict.fromkeys(err, 0)
    for step, ((x, y), params) in enumerate(zip(batches, used)):
        twin = Twin(params, train=True, requires_grad=True)
        out = first(twin(net, torch.from_numpy(x)))
        for t in twin.outputs.values():
            for a in (t if isinstance(t, tuple) else (t,)):
                if a.requires_grad:
                    a.retain_grad()
        F.cross_entropy(out, torch.from_numpy(y)).backward()

        def check(kind: str, name: str, want: np.ndarray) -> None:
            err[kind] = max(err[kind], rel(trial.tensor(name).value(step), want))  # noqa: B023 (called in this step)
            counts[kind] += 1

        for name, value in params.items():
            if not name.endswith(("running_mean", "running_var")):
                check("weights", name, value)
                check("param_grads", f"gradients/{name}", twin.p[name].grad.numpy())
        for bid, value in twin.outputs.items():
            lname = names[bid][0]
            for i, a in enumerate(value if isinstance(value, tuple) else (value,)):
                if f"{lname}/output_{i}" in trial.tensor_names():
                    check("outputs", f"{lname}/output_{i}", a.detach().numpy())
                if f"gradients/{lname}/output_{i}" in trial.tensor_names() and a.grad is not None:
                    check("output_grads", f"gradients/{lname}/output_{i}", a.grad.numpy())
    return {**err, **{f"n_{k}": float(v) for k, v in counts.items()}, "errors": float(len(hook.errors))}


def trained_weights(model: str, hybridize: bool, out_dir: Optional[str], steps: int = 10) -> Dict[str, np.ndarray]:
    """The weights after `steps` SGD steps, with (out_dir given) or without a hook that saves every
    parameter gradient and every block's output gradient at every step."""
    net, _ = MODELS[model](hybridize)
    hook = None
    if out_dir is not None:
        taps = tt.Collection("output_gradients", include_regex=[r"^gradients/.*/output_\d$"])
        hook = tt.Hook(out_dir, include_collections=["gradients", taps], save_config=tt.SaveConfig(save_interval=1))
        hook.register(net)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.05})
    for step in range(steps):
        x, y = data(16, seed=step)
        with autograd.record():
            loss = loss_fn(first(net(mx.nd.array(x))), mx.nd.array(y)).mean()
        loss.backward()
        trainer.step(1)
    if hook is not None:
        hook.close()
    return snapshot(net)


def symbol_head_errors(out_dir: str) -> Dict[str, float]:
    """The CNN with its head (max pool, dense, dense) exported and imported as a SymbolBlock, whose
    cached graph tensortap cannot switch to train-mode pooling: Grad-CAM of the conv before it either
    refuses (oneDNN on) or matches torch (oneDNN off)."""
    from tensortap.errors import ConfigError

    net, target = signs_cnn(False)
    fit(net)
    blocks = list(net._children.values())
    head = nn.HybridSequential(prefix="signs_")
    for b in blocks[3:]:
        head.add(b)
    head.hybridize()
    head(mx.nd.zeros((1, 32, 16, 16)))
    head.export(os.path.join(out_dir, "head"))
    imported = gluon.SymbolBlock.imports(os.path.join(out_dir, "head-symbol.json"), ["data"],
                                         os.path.join(out_dir, "head-0000.params"))
    mixed = nn.HybridSequential(prefix="mixed_")
    for b in blocks[:3]:
        mixed.add(b)
    mixed.add(imported)
    x, _ = data(8, seed=100)
    want = torch_gradcam(snapshot(net), net, target, x)["cam"]
    try:
        got = tt.explain.gradcam(mixed, x, target_layer=target).raw
    except ConfigError as e:
        return {"refused": 1.0, "names_block": float("SymbolBlock" in str(e) and "MXNET_MKLDNN_ENABLED=0" in str(e))}
    return {"refused": 0.0, "cam_rel": rel(got, want)}


def all_checks() -> Dict[str, Dict[str, float]]:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        out["symbol_head"] = symbol_head_errors(d)
        for model in MODELS:
            out[f"mxnet_raw/{model}"] = raw_mxnet_errors(model)
        for model in MODELS:
            for hyb in (False, True):
                key = f"{model}/{'hybridized' if hyb else 'imperative'}"
                out[f"explain/{key}"] = explain_errors(model, hyb)
                out[f"train_time/{key}"] = train_time_errors(model, hyb, os.path.join(d, f"t_{model}_{hyb}"))
                out[f"hook/{key}"] = hook_capture_errors(model, hyb, os.path.join(d, f"h_{model}_{hyb}"))
    return out


if __name__ == "__main__":
    json.dump({"mkldnn_enabled": os.environ.get("MXNET_MKLDNN_ENABLED", "1"), "checks": all_checks()}, sys.stdout)
    print()
