"""A convolutional autoencoder (MXNet/Gluon) on scikit-learn's bundled digits: tensortap captures
the 20-dimensional bottleneck of a fixed held-out set while training, and the `embedding`
visualizer animates its t-SNE projection coloured by the true digit, clusters emerging.

Encoder: two convs -> dense 20 (the bottleneck, block "ae_latent"); decoder: dense -> two
transposed convs. The bottleneck is captured by name (collection "embeddings") on EVAL steps
only: every few training steps the held-out digits pass through once, so each frame shows the
same points. The labels are saved beside them (hook.save_tensor("labels", ...)).

    python examples/autoencoder/train_autoencoder.py --quick
    python examples/autoencoder/train_autoencoder.py
Outputs: <out>/run, embedding.gif, reconstruction.png, summary.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

# mxnet 1.9.1's oneDNN (MKLDNN) kernels fail in this model's backward on CPU ("could not create a
# primitive descriptor for a reorder primitive"); its native kernels are used instead. Must be set
# before mxnet is imported.
os.environ.setdefault("MXNET_MKLDNN_ENABLED", "0")
os.environ.setdefault("MXNET_STORAGE_FALLBACK_LOG_VERBOSE", "0")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

import tensortap as tt  # noqa: E402

from common.saving import eval_steps_only, every_step  # noqa: E402

PRESETS = {"quick": dict(epochs=8, probe_every=20, max_points=300, frames=6, n_iter=250),
           "full": dict(epochs=60, probe_every=60, max_points=500, frames=16, n_iter=500)}
LATENT = "ae_latent"


def build():
    """The autoencoder: 8x8 digits -> 20 numbers -> 8x8 digits."""
    import mxnet as mx
    from mxnet.gluon import nn

    class AE(mx.gluon.HybridBlock):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.enc1 = nn.Conv2D(16, 3, padding=1, activation="relu", in_channels=1, prefix="enc1_")
                self.enc2 = nn.Conv2D(32, 3, strides=2, padding=1, activation="relu", in_channels=16, prefix="enc2_")
                self.latent = nn.Dense(20, in_units=32 * 4 * 4, prefix="latent_")
                self.expand = nn.Dense(32 * 4 * 4, activation="relu", in_units=20, prefix="expand_")
                self.dec1 = nn.Conv2DTranspose(16, 4, strides=2, padding=1, activation="relu", in_channels=32,
                                               prefix="dec1_")
                self.dec2 = nn.Conv2DTranspose(1, 3, padding=1, in_channels=16, prefix="dec2_")

        def hybrid_forward(self, F, x):
            z = self.latent(self.enc2(self.enc1(x)))
            h = self.expand(z).reshape((-1, 32, 4, 4))
            return F.sigmoid(self.dec2(self.dec1(h)))

    net = AE(prefix="ae_")
    net.initialize(mx.init.Xavier())
    net.hybridize()
    return net


def knn_accuracy(z: np.ndarray, y: np.ndarray) -> float:
    """5-fold accuracy of a 5-nearest-neighbour classifier on the latent vectors: how well digits cluster."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(5), z, y, cv=5).mean())


def reconstruction_png(x: np.ndarray, r: np.ndarray, path: str) -> str:
    """Top row the held-out inputs, bottom row their reconstructions."""
    from PIL import Image

    top, bottom = np.concatenate(list(x), axis=1), np.concatenate(list(r), axis=1)
    grid = np.concatenate([top, np.ones((1, top.shape[1])), bottom], axis=0)
    img = Image.fromarray((np.clip(grid, 0, 1) * 255).astype(np.uint8)).resize((grid.shape[1] * 8, grid.shape[0] * 8),
                                                                             Image.NEAREST)
    img.save(path)
    return path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="runs/autoencoder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = PRESETS["quick" if args.quick else "full"]
    import mxnet as mx
    from mxnet import autograd, gluon
    from sklearn.datasets import load_digits

    mx.random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    idx = rng.permutation(len(x))
    tr, ho = idx[:-500], idx[-500:]   # 1,297 to train on, 500 held out (the points each frame shows)
    xho = mx.nd.array(x[ho])

    run = os.path.join(args.out, "run")
    if os.path.exists(os.path.join(run, "workers")):
        shutil.rmtree(run)
    net = build()
    embeddings = eval_steps_only("embeddings", [f"^{LATENT}/output_0$"], ["outputs"])
    hook = tt.Hook(run, include_collections=["losses", embeddings, every_step("probe", ["^heldout_mse$"], ["scalars"])],
                   save_config=tt.SaveConfig(save_interval=5))
    hook.register(net)
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 2e-3})

    recon = []

    def probe() -> float:
        """One EVAL pass of the held-out digits: the bottleneck and the labels are saved at this step."""
        r = net(xho)   # outside autograd.record(): an EVAL step
        hook.save_tensor("labels", y[ho], collections=["labels"])
        mse = float(((r - xho) ** 2).mean().asscalar())
        hook.save_scalar("heldout_mse", mse)
        recon[:] = [r[:12].asnumpy()]
        return mse

    t0, step, mses, losses = time.time(), 0, [probe()], []
    for epoch in range(cfg["epochs"]):
        for b in np.array_split(rng.permutation(tr), len(tr) // 64):
            xb = mx.nd.array(x[b])
            with autograd.record():
                loss = ((net(xb) - xb) ** 2).mean()
            loss.backward()
            trainer.step(1)
            hook.record_loss(loss)
            losses.append(float(loss.asscalar()))
            step += 1
            if step % cfg["probe_every"] == 0:
                mses.append(probe())
        print(f"epoch {epoch}: train loss {np.mean(losses[-20:]):.4f}, held-out reconstruction MSE {mses[-1]:.4f}",
              flush=True)
    if step % cfg["probe_every"]:  # the model changed since the last probe: one more frame
        mses.append(probe())
    hook.close()
    train_seconds = time.time() - t0

    trial = tt.create_trial(run)
    zt = trial.tensor(f"{LATENT}/output_0")
    zsteps = zt.steps()
    knn_first, knn_last = knn_accuracy(zt.value(zsteps[0]), y[ho]), knn_accuracy(zt.value(zsteps[-1]), y[ho])
    t1 = time.time()
    gif = str(tt.vis.get("embedding")().render(trial, os.path.join(args.out, "embedding.gif"),
                                               tensor=f"{LATENT}/output_0", labels="labels", method="tsne",
                                               max_points=cfg["max_points"], max_steps=cfg["frames"],
                                               n_iter=cfg["n_iter"], seed=args.seed))
    png = reconstruction_png(x[ho][:12, 0], recon[0][:, 0], os.path.join(args.out, "reconstruction.png"))
    s = {"quick": args.quick, "run": run, "gif": gif, "reconstruction": png,
         "latent_shape": list(zt.value(zsteps[-1]).shape),
         "frames_captured": len(zsteps), "first_mse": mses[0], "last_mse": mses[-1],
         "first_loss": float(np.mean(losses[:5])), "last_loss": float(np.mean(losses[-5:])),
         "knn_accuracy_first": knn_first, "knn_accuracy_last": knn_last, "chance": 0.1,
         "train_seconds": train_seconds, "render_seconds": time.time() - t1}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(s, f, indent=1)
    print(f"held-out reconstruction MSE {mses[0]:.4f} -> {mses[-1]:.4f}; 5-NN digit accuracy on the 20-d latent "
          f"{knn_first:.3f} -> {knn_last:.3f} (chance 0.1); pictures {gif} {png}")
    return s


if __name__ == "__main__":
    main()
