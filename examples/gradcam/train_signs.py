"""Grad-CAM over training: a ResNet-style CNN (PyTorch) learns generated traffic signs on cluttered
backgrounds; tensortap records class activation maps of a fixed set of held-out probe images as
training goes, and the `gradcam` visualizer shows the maps moving onto the signs.

The maps come from the torch plugin's "feature_maps" collection: on each saved step it explains
the first images of the batch with the class score's gradient (y_c, not the loss), in eval mode,
without touching the parameters' gradients or BatchNorm statistics. Here the saved steps are the
probe passes (EVAL mode), so every frame explains the same images.

    python examples/gradcam/train_signs.py --quick     # well under a minute
    python examples/gradcam/train_signs.py             # full run
    python examples/gradcam/train_signs.py --quick --trainer lightning   # the same, trained by Lightning

With `--trainer lightning` the same model trains in a LightningModule (lightning_signs.py) with
tensortap's LightningCallback: the probe images are the validation set, so Grad-CAM runs during
training at each validation (an EVAL step; the sanity check counts none), and the logged
train_loss / held_out_accuracy land in the run as losses / metrics.
Outputs: <out>/run (the run), <out>/gradcam.png (images x steps), <out>/gradcam.gif, <out>/summary.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

import tensortap as tt  # noqa: E402

from common.cnn import ResNetSmall  # noqa: E402
from common.saving import eval_steps_only  # noqa: E402
from common.signs import CLASSES, make_signs  # noqa: E402

PRESETS = {"quick": dict(n_train=900, n_test=300, epochs=6, probe_every=8, width=12),
           "full": dict(n_train=3000, n_test=600, epochs=14, probe_every=40, width=16)}
LAYER = "layer3"   # the last residual stage: 8x8 maps for 32x32 inputs


def probe_indices(y: np.ndarray, n: int = 8) -> np.ndarray:
    """n held-out images, covering every class first."""
    first = [int(np.flatnonzero(y == c)[0]) for c in range(len(CLASSES))]
    rest = [i for i in range(len(y)) if i not in first]
    return np.array((first + rest)[:n])


def make_hook(out: str, probe_n: int) -> tt.Hook:
    """Losses on every training step; Grad-CAM of LAYER on every EVAL step (the probe passes) only."""
    fm = eval_steps_only("feature_maps", [f"(^|\\.){LAYER}$"])  # the layer to explain (net.layer3 in Lightning)
    return tt.Hook(out, include_collections=["losses", "metrics", "scalars", fm],
                   save_config=tt.SaveConfig(save_interval=1))


def cam_mass_on_sign(trial, masks: np.ndarray, layer: str = LAYER) -> dict:
    """Share of each probe image's Grad-CAM mass that lies on the sign, at the first and last probe
    pass (mean over images), next to the share of the image the sign covers (what a flat map scores)."""
    from tensortap.explain import upsample

    t = trial.tensor(f"gradcam/{layer}/cam")
    steps = t.steps()

    def share(step: int) -> float:
        cam = upsample(t.value(step), masks.shape[1:])
        return float(np.mean([(c * m).sum() / max(c.sum(), 1e-12) for c, m in zip(cam, masks)]))

    return {"first": share(steps[0]), "last": share(steps[-1]), "area": float(masks.mean()),
            "steps": [int(steps[0]), int(steps[-1])]}


def train_loop(model, hook: tt.Hook, data, cfg: dict, rng: np.random.Generator):
    """The plain PyTorch loop: a probe pass (EVAL, Grad-CAM saved) every `probe_every` steps;
    returns (training losses, held-out accuracy per epoch, the explained layer's name)."""
    xtr_t, ytr_t, xte_t, yte_t, probe = data
    xprobe = xte_t[probe]
    hook.register(model)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def probe_pass() -> float:
        """One EVAL forward of the probe images: the plugin records their Grad-CAM at this step."""
        model.eval()
        # grad mode on: the plugin's Grad-CAM (tensortap-torch 0.1) needs it for the class-score gradient
        p = F.softmax(model(xprobe), 1).detach()
        # the true labels and the class names: the Grad-CAM captions read "true: stop, pred: yield 87%"
        hook.save_tensor("gradcam/labels", yte_t[probe].numpy(), collections=["feature_maps"])
        hook.save_tensor("gradcam/class_names", np.array(CLASSES), collections=["feature_maps"])
        hook.save_scalar("probe_confidence", float(p[torch.arange(len(probe)), yte_t[probe]].mean()))
        model.train()
        return float((p.argmax(1) == yte_t[probe]).float().mean())

    def held_out_accuracy() -> float:
        hook.set_mode(tt.modes.PREDICT)  # not a probe pass: no Grad-CAM for these
        model.eval()
        with torch.no_grad():
            acc = float((model(xte_t).argmax(1) == yte_t).float().mean())
        hook.set_mode(None)
        model.train()
        return acc

    losses, accs, step = [], [], 0
    probe_pass()
    for epoch in range(cfg["epochs"]):
        model.train()
        perm = torch.from_numpy(rng.permutation(len(xtr_t)))
        for i in range(0, len(xtr_t), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = F.cross_entropy(model(xtr_t[idx]), ytr_t[idx])
            loss.backward()
            opt.step()
            hook.record_loss(loss.detach())
            losses.append(float(loss.detach()))
            step += 1
            if step % cfg["probe_every"] == 0:
                probe_pass()
        accs.append(held_out_accuracy())
        print(f"epoch {epoch}: loss {np.mean(losses[-10:]):.3f}, held-out accuracy {accs[-1]:.3f}")
    probe_pass()
    hook.close()
    return losses, accs, LAYER


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="runs/gradcam")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    ap.add_argument("--trainer", choices=("loop", "lightning"), default="loop",
                    help="train in a plain loop, or with Lightning and tensortap's LightningCallback")
    args = ap.parse_args(argv)
    cfg = PRESETS["quick" if args.quick else "full"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    xtr, ytr = make_signs(cfg["n_train"], seed=args.seed)
    xte, yte, masks = make_signs(cfg["n_test"], seed=args.seed + 1, masks=True)
    print(f"generated {len(xtr)} training and {len(xte)} held-out signs in {time.time() - t0:.0f}s")
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    xtr_t, xte_t, ytr_t, yte_t = to_t(xtr), to_t(xte), torch.from_numpy(ytr), torch.from_numpy(yte)
    probe = probe_indices(yte)

    run = os.path.join(args.out, "run")
    if os.path.exists(os.path.join(run, "workers")):
        shutil.rmtree(run)
    model = ResNetSmall(num_classes=len(CLASSES), width=cfg["width"], blocks=1, in_ch=3)
    hook = make_hook(run, len(probe))
    data = (xtr_t, ytr_t, xte_t, yte_t, probe)
    if args.trainer == "lightning":
        from lightning_signs import train_lightning

        losses, accs, layer = train_lightning(model, hook, data, cfg, args.seed)
    else:
        losses, accs, layer = train_loop(model, hook, data, cfg, rng)

    trial = tt.create_trial(run)
    vis = tt.vis.get("gradcam")()
    png = vis.render(trial, os.path.join(args.out, "gradcam.png"), max_images=4, max_steps=8, cell=96,
                     class_names=list(CLASSES))
    gif = vis.render(trial, os.path.join(args.out, "gradcam.gif"), max_images=4, max_steps=24, cell=96,
                     class_names=list(CLASSES))
    centre = cam_mass_on_sign(trial, masks[probe], layer)
    summary = {"quick": args.quick, "trainer": args.trainer, "run": run, "layer": layer, "png": str(png),
               "gif": str(gif), "chance": 1 / len(CLASSES),
               "first_loss": float(np.mean(losses[:5])), "last_loss": float(np.mean(losses[-5:])),
               "held_out_accuracy": accs, "cam_mass_on_sign": centre}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}; held-out accuracy {accs[-1]:.3f} "
          f"(chance {1 / len(CLASSES):.3f})")
    print(f"share of Grad-CAM mass on the sign: first probe {centre['first']:.2f}, last {centre['last']:.2f} "
          f"(sign area share {centre['area']:.2f})")
    print(f"pictures: {png} {gif}")
    return summary


if __name__ == "__main__":
    main()
