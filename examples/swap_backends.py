"""One model, one tensortap configuration, three frameworks: change only --framework.

The same small CNN (conv16-pool-conv32-pool-dense64-dense6) learns the generated traffic signs in
PyTorch, TensorFlow/Keras or MXNet/Gluon. Everything tensortap does is framework-free and
identical: the Hook and its collections, the live rules, the per-epoch accuracy scalar, the
Grad-CAM of the same probe images (tt.explain.gradcam), the offline rule run and the HTML report.

    python examples/swap_backends.py --framework torch --quick
    python examples/swap_backends.py --framework tensorflow --quick
    python examples/swap_backends.py --framework mxnet --quick
    python examples/swap_backends.py --framework all            # the three, then a comparison table
Outputs: <out>/<framework>/run, report.html, gradcam.png, summary.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Callable, Dict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensortap as tt  # noqa: E402
from tensortap.report import build_report  # noqa: E402

from common.saving import every_step  # noqa: E402
from common.signs import CLASSES, make_signs  # noqa: E402

FRAMEWORKS = ("torch", "tensorflow", "mxnet")
PRESETS = {"quick": dict(n_train=900, n_test=300, epochs=4), "full": dict(n_train=3000, n_test=600, epochs=10)}
BATCH, LR = 64, 2e-3
RULES = (("loss_not_decreasing", {"num_steps": 20}), ("vanishing_gradient", {}), ("exploding_tensor", {}))


# ---- the only framework-specific part: build, train one epoch, predict ------------------------------
def torch_backend(seed: int):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(seed)
    torch.set_num_threads(1)

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
            self.fc1, self.fc2 = nn.Linear(32 * 8 * 8, 64), nn.Linear(64, len(CLASSES))

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))

    model = CNN()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # noqa: E731

    def train_epoch(hook, x, y, rng):
        model.train()
        for idx in np.array_split(rng.permutation(len(x)), len(x) // BATCH):
            opt.zero_grad()
            loss = F.cross_entropy(model(nchw(x[idx])), torch.from_numpy(y[idx]))
            loss.backward()
            opt.step()
            hook.record_loss(loss.detach())

    def predict(x):
        model.eval()
        with torch.no_grad():
            return model(nchw(x)).numpy()

    return model, model.conv2, nchw, train_epoch, predict


def tensorflow_backend(seed: int):
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(seed)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        L.Conv2D(16, 3, padding="same", activation="relu", name="conv1"), L.MaxPooling2D(name="pool1"),
        L.Conv2D(32, 3, padding="same", activation="relu", name="conv2"), L.MaxPooling2D(name="pool2"),
        L.Flatten(name="flatten"), L.Dense(64, activation="relu", name="fc1"), L.Dense(len(CLASSES), name="fc2")],
        name="cnn")
    model.compile(optimizer=keras.optimizers.Adam(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def train_epoch(hook, x, y, rng):
        idx = rng.permutation(len(x))
        model.fit(x[idx], y[idx], batch_size=BATCH, epochs=1, verbose=0, shuffle=False,
                  callbacks=[hook.keras_callback()])

    def predict(x):
        return np.asarray(model(x, training=False))

    return model, model.get_layer("conv2"), (lambda x: x), train_epoch, predict


def mxnet_backend(seed: int):
    import mxnet as mx
    from mxnet import autograd, gluon

    mx.random.seed(seed)
    np.random.seed(seed)

    class CNN(gluon.HybridBlock):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.conv1 = gluon.nn.Conv2D(16, 3, padding=1, activation="relu", in_channels=3)
                self.pool1 = gluon.nn.MaxPool2D()
                self.conv2 = gluon.nn.Conv2D(32, 3, padding=1, activation="relu", in_channels=16)
                self.pool2 = gluon.nn.MaxPool2D()
                self.fc1 = gluon.nn.Dense(64, activation="relu", in_units=32 * 8 * 8)
                self.fc2 = gluon.nn.Dense(len(CLASSES), in_units=64)

        def hybrid_forward(self, F, x):
            return self.fc2(self.fc1(self.pool2(self.conv2(self.pool1(self.conv1(x))))))

    net = CNN(prefix="cnn_")
    net.initialize(mx.init.Xavier())
    net.hybridize()
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": LR})
    nchw = lambda x: mx.nd.array(x.transpose(0, 3, 1, 2))  # noqa: E731
    registered = []

    def train_epoch(hook, x, y, rng):
        if not registered:
            hook.register_loss(loss_fn)  # after hook.register(net): stores the batch mean as "loss"
            registered.append(True)
        for idx in np.array_split(rng.permutation(len(x)), len(x) // BATCH):
            with autograd.record():
                loss = loss_fn(net(nchw(x[idx])), mx.nd.array(y[idx])).mean()
            loss.backward()
            trainer.step(1)

    def predict(x):
        return net(nchw(x)).asnumpy()

    return net, net.conv2, nchw, train_epoch, predict


BACKENDS: Dict[str, Callable] = {"torch": torch_backend, "tensorflow": tensorflow_backend, "mxnet": mxnet_backend}


# ---- everything below is the same for every framework ---------------------------------------------
def make_hook(run: str) -> tt.Hook:
    """The one tensortap configuration all three frameworks use."""
    per_epoch = [every_step("probe_cams", [r"^gradcam/"], ["feature_maps"]),
                 every_step("epoch", ["^accuracy$"], ["scalars"])]
    hook = tt.Hook(run, include_collections=["weights", "biases", "gradients", "losses", *per_epoch],
                   save_config=tt.SaveConfig(save_interval=5))
    for name, params in RULES:
        hook.add_rule(tt.rules.get(name)(**params), action="log")
    return hook


def record_probe_cams(hook: tt.Hook, model, layer, to_input, probe_x: np.ndarray, predict) -> None:
    """Grad-CAM of the probe images (tt.explain.gradcam: any framework), stored under the names the
    `gradcam` visualizer reads, with the predicted class and its probability."""
    cam = tt.explain.gradcam(model, to_input(probe_x), target_layer=layer)
    logits = predict(probe_x)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    hook.save_tensor("gradcam/conv2/cam", cam.raw.astype(np.float32), collections=["feature_maps"])
    hook.save_tensor("gradcam/conv2/targets", cam.targets, collections=["feature_maps"])
    hook.save_tensor("gradcam/conv2/scores", p[np.arange(len(p)), cam.targets].astype(np.float32),
                     collections=["feature_maps"])
    hook.save_tensor("gradcam/images", probe_x, collections=["feature_maps"])


def run_framework(framework: str, cfg: dict, out: str, seed: int, data) -> dict:
    xtr, ytr, xte, yte = data
    model, layer, to_input, train_epoch, predict = BACKENDS[framework](seed)
    run = os.path.join(out, framework, "run")
    if os.path.exists(os.path.join(run, "workers")):
        shutil.rmtree(run)
    hook = make_hook(run)
    hook.register(model)
    rng = np.random.default_rng(seed)
    probe = np.array([int(np.flatnonzero(yte == c)[0]) for c in range(len(CLASSES))][:4])
    accs, t0 = [], time.time()
    for epoch in range(cfg["epochs"]):
        train_epoch(hook, xtr, ytr, rng)
        accs.append(float((predict(xte).argmax(1) == yte).mean()))
        hook.save_scalar("accuracy", accs[-1])
        record_probe_cams(hook, model, layer, to_input, xte[probe], predict)
        print(f"[{framework}] epoch {epoch}: held-out accuracy {accs[-1]:.3f}", flush=True)
    seconds = time.time() - t0
    hook.close()

    trial = tt.create_trial(run)
    loss = trial.tensor("loss")
    lsteps = loss.steps(mode=tt.modes.TRAIN)
    lv = [float(np.mean(loss.value(s, mode=tt.modes.TRAIN))) for s in lsteps]
    offline = {name: sum(r.fired for r in tt.invoke_rule(tt.rules.get(name)(**params), trial))
               for name, params in RULES}
    live = {name: sum(1 for r in trial.rule_results() if r["rule"] == name and r["fired"]) for name, _ in RULES}
    d = os.path.join(out, framework)
    png = str(tt.vis.get("gradcam")().render(trial, os.path.join(d, "gradcam.png"), max_steps=6, max_images=4,
                                             cell=80, class_names=list(CLASSES)))
    report = str(build_report(trial, os.path.join(d, "report.html"), title=f"swap_backends · {framework}"))
    s = {"framework": framework, "run": run, "report": report, "gradcam": png, "accuracy": accs,
         "chance": 1 / len(CLASSES), "first_loss": float(np.mean(lv[:3])), "last_loss": float(np.mean(lv[-3:])),
         "train_seconds": seconds, "steps": len(trial.steps()), "tensors": len(trial.tensor_names()),
         "gradients": len(trial.tensor_names(collection="gradients")),
         "rules_fired_live": live, "rules_fired_offline": offline}
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(s, f, indent=1)
    print(f"[{framework}] loss {s['first_loss']:.3f} -> {s['last_loss']:.3f}, held-out accuracy {accs[-1]:.3f}, "
          f"{s['tensors']} tensors over {s['steps']} steps, rules fired (live/offline) {live}/{offline}, "
          f"report {report}", flush=True)
    return s


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--framework", choices=FRAMEWORKS + ("all",), default="torch")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="runs/swap_backends")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = PRESETS["quick" if args.quick else "full"]
    xtr, ytr = make_signs(cfg["n_train"], seed=args.seed)
    xte, yte = make_signs(cfg["n_test"], seed=args.seed + 1)
    names = FRAMEWORKS if args.framework == "all" else (args.framework,)
    results = [run_framework(f, cfg, args.out, args.seed, (xtr, ytr, xte, yte)) for f in names]
    if len(results) > 1:
        print(f"\n{'framework':<11} {'accuracy':>8} {'loss first->last':>17} {'tensors':>8} {'steps':>6}  "
              "rules fired (offline)")
        for s in results:
            print(f"{s['framework']:<11} {s['accuracy'][-1]:>8.3f} {s['first_loss']:>8.3f}->{s['last_loss']:<8.3f} "
                  f"{s['tensors']:>8} {s['steps']:>6}  {s['rules_fired_offline']}")
    return results


if __name__ == "__main__":
    main()
