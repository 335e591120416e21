"""`gradcam`: class activation maps overlaid on the input images, images x steps, PNG grid or GIF.

Reads the names `tensortap.explain.record_gradcam` stores: gradcam/<layer>/cam (B, h, w) raw maps,
gradcam/<layer>/targets, gradcam/<layer>/scores (optional), gradcam/images (B, H, W, C).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..explain import upsample
from ._common import (Rendered, as_trial, colormap, natural_key, out_kind, select_steps, text_band,
                      to_uint8_image, write_gif, write_png)
from .base import Visualizer

NORMALISE = ("global", "step", "image", "both")
SCALE_NAMES = {"global": "shared scale", "step": "scaled per step", "image": "per image"}
#: optional tensors that caption the maps: the true label of each image, and the class names
LABELS = "gradcam/labels"
CLASS_NAMES = "gradcam/class_names"


def saved_class_names(trial) -> Optional[List[str]]:
    """The class names saved in the run (gradcam/class_names, a 1-D array of strings), or None."""
    if not trial.has_tensor(CLASS_NAMES):
        return None
    t = trial.tensor(CLASS_NAMES)
    steps = t.steps(kind="value")
    if not steps:
        return None
    try:
        v = np.asarray(t.value(steps[-1])).ravel()
    except Exception:  # noqa: BLE001 - unreadable: numbers instead
        return None
    return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in v.tolist()]


def gradcam_layers(trial) -> List[str]:
    """Layers with saved Grad-CAM maps, in natural order."""
    out = []
    for n in trial.tensor_names(regex=r"^gradcam/.+/cam$"):
        out.append(n[len("gradcam/"):-len("/cam")])
    return sorted(out, key=natural_key)


def overlay(image: np.ndarray, cam01: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """(H, W, 3) uint8 image blended with a [0, 1] map already at the image's size."""
    heat = colormap(cam01, cmap).astype(np.float64)
    return np.clip((1 - alpha) * image.astype(np.float64) + alpha * heat + 0.5, 0, 255).astype(np.uint8)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    scale = size / max(h, w)
    if abs(scale - 1) < 1e-9:
        return img
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img).resize((nw, nh), resample))


class GradCAMVisualizer(Visualizer):
    """Grad-CAM maps over the input images: a grid of images x steps (PNG) or an animation over
    training (GIF, one frame per step). Raw maps share one scale across all steps and images so
    intensities compare (normalise="global"); "step" scales per step, "image" per image, "both" shows
    the shared scale and per image side by side. Each cell is captioned with the step, the true label
    (gradcam/labels, when saved) and the predicted one (the class explained, with its probability),
    by class name when known (class_names, or gradcam/class_names saved in the run).

    Options: layer, steps, max_steps (default 8 in a grid, 60 in a GIF), images (indices "0,3"), max_images,
    normalise, alpha, cell (px), cmap, duration_ms (GIF frame time).
    """

    name = "gradcam"
    suffix = ".png"
    suffixes = (".gif", ".jpg")

    def applies_to(self, trial) -> bool:
        return bool(gradcam_layers(trial)) and trial.has_tensor("gradcam/images")

    def render(self, trial, out: str, *, layer: Optional[str] = None, steps=None, max_steps: Optional[int] = None,
               images=None, max_images: int = 4, normalise: str = "global", alpha: float = 0.5,
               cell: int = 112, cmap: str = "jet", duration_ms: int = 700, class_names=None,
               normalize: Optional[str] = None) -> str:
        trial = as_trial(trial)
        normalise = normalize or normalise  # either spelling
        kind = out_kind(out, (".png", ".gif"), ".png")
        layers = gradcam_layers(trial)
        if not layers:
            raise ConfigError(f"no Grad-CAM maps in {trial.path}: record them during training with "
                              "tensortap.explain.record_gradcam(hook, layer, activations, gradients, images, targets)")
        if layer is None:
            layer = layers[0]
        elif layer not in layers:
            raise ConfigError(f"no Grad-CAM maps for layer {layer!r}." + did_you_mean(layer, layers)
                              + f" Layers with maps: {', '.join(layers)}")
        if not trial.has_tensor("gradcam/images"):
            raise ConfigError(f"{trial.path} has Grad-CAM maps but no gradcam/images to overlay them on")
        cam_t = trial.tensor(f"gradcam/{layer}/cam")
        if max_steps is None:
            max_steps = 8 if kind == ".png" else 60  # a grid stays readable; an animation may show more
        chosen = select_steps(cam_t.steps(kind="value"), steps, int(max_steps))
        rows = self.cells(trial, layer, chosen, images=images, max_images=max_images, normalise=normalise,
                          alpha=alpha, cell=cell, cmap=cmap, class_names=class_names)
        if kind == ".gif":
            frames_rgb = [_grid([cells], pad=4) for _, cells in rows]
            return Rendered(write_gif(out, frames_rgb, duration_ms=int(duration_ms)))
        # PNG: rows = images, columns = steps
        by_image = [[rows[s][1][j] for s in range(len(rows))] for j in range(len(rows[0][1]))]
        return Rendered(write_png(out, _grid(by_image, pad=4)))

    def cells(self, trial, layer: str, steps: List[int], *, images=None, max_images: int = 4,
              normalise: str = "global", alpha: float = 0.5, cell: int = 112, cmap: str = "jet",
              class_names=None) -> List[Tuple[int, List[np.ndarray]]]:
        """Per step, the captioned overlay of each chosen image (also used by the TensorBoard export)."""
        if normalise not in NORMALISE:
            raise ConfigError(f"normalise must be one of {NORMALISE}, got {normalise!r}")
        names = class_names.split(",") if isinstance(class_names, str) else class_names
        if names is None:
            names = saved_class_names(trial)
        frames = self._load(trial, layer, steps, images, max_images)
        if not frames:
            raise ConfigError(f"no step has both gradcam/{layer}/cam and gradcam/images readable")
        gmax = max(float(f["cam"].max()) for f in frames) or 1.0

        def label(c) -> str:
            return names[int(c)] if names and 0 <= int(c) < len(names) else f"class {int(c)}"

        rows: List[Tuple[int, List[np.ndarray]]] = []  # per step: captioned cells
        for f in frames:
            cams = f["cam"]
            cells = []
            smax = float(cams.max()) or 1.0
            for j, i in enumerate(f["index"]):
                img = to_uint8_image(f["images"][i])
                up = upsample(cams[j][None], (img.shape[0], img.shape[1]))[0]
                lo, hi = up.min(), up.max()
                own = (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)
                scaled = {"global": up / gmax, "step": up / smax, "image": own}
                caption: List[object] = [f"step {f['step']}"]
                true = f["labels"][j] if f["labels"] is not None else None
                tgt = f["targets"][j] if f["targets"] is not None else None
                if true is not None:
                    caption.append(f"true: {label(true)}")
                if tgt is not None:
                    pred = f"pred: {label(tgt)}"
                    if f["scores"] is not None:
                        pred += f" {100 * float(f['scores'][j]):.0f}%"
                    wrong = true is not None and int(true) != int(tgt)
                    caption.append((pred, (200, 0, 0)) if wrong else pred)
                shown = ("global", "image") if normalise == "both" else (normalise,)
                halves = []
                for k, how in enumerate(shown):
                    cellimg = _resize(overlay(img, scaled[how], float(alpha), cmap), int(cell))
                    lines = list(caption) if k == 0 else [SCALE_NAMES[how]] + [""] * (len(caption) - 1)
                    if normalise == "both" and k == 0:
                        lines[0] = f"{lines[0]} · {SCALE_NAMES[how]}"
                    band = text_band(cellimg.shape[1], lines, height=12 * len(caption) + 4)
                    halves.append(np.concatenate([band, cellimg], axis=0))
                if len(halves) == 2:  # shared scale and per image, side by side
                    gap = np.full((halves[0].shape[0], 3, 3), 255, np.uint8)
                    cells.append(np.concatenate([halves[0], gap, halves[1]], axis=1))
                else:
                    cells.append(halves[0])
            rows.append((f["step"], cells))
        return rows

    def _load(self, trial, layer: str, steps: List[int], images, max_images: int) -> List[Dict]:
        cam_t = trial.tensor(f"gradcam/{layer}/cam")
        img_t = trial.tensor("gradcam/images")
        tgt_t = trial.tensor(f"gradcam/{layer}/targets") if trial.has_tensor(f"gradcam/{layer}/targets") else None
        sc_t = trial.tensor(f"gradcam/{layer}/scores") if trial.has_tensor(f"gradcam/{layer}/scores") else None
        lab_t = trial.tensor(LABELS) if trial.has_tensor(LABELS) else None
        want = None
        if images is not None:
            want = [int(x) for x in (images.split(",") if isinstance(images, str) else images)]
        out = []
        for s in steps:
            try:
                cam = np.asarray(cam_t.value(s), dtype=np.float64)
                imgs = np.asarray(img_t.value(s))
            except Exception:  # noqa: BLE001 - a step without both: skip it
                continue
            if cam.ndim == 2:
                cam = cam[None]
            n = min(len(cam), len(imgs))
            idx = [i for i in (want if want is not None else range(n)) if 0 <= i < n][: max(1, int(max_images))]
            if not idx:
                raise ConfigError(f"images {images!r} out of range: step {s} has {n} images")
            rec = {"step": s, "cam": cam[idx], "images": imgs, "index": idx, "targets": None, "scores": None,
                   "labels": None}
            for key, t in (("targets", tgt_t), ("scores", sc_t), ("labels", lab_t)):
                if t is not None:
                    try:
                        rec[key] = np.asarray(t.value(s))[idx]
                    except Exception:  # noqa: BLE001
                        pass
            out.append(rec)
        return out


def _grid(rows: List[List[np.ndarray]], pad: int = 4) -> np.ndarray:
    """Cells (H, W, 3) laid out row by row on white, `pad` px apart."""
    h = max(c.shape[0] for r in rows for c in r)
    w = max(c.shape[1] for r in rows for c in r)
    ncol = max(len(r) for r in rows)
    canvas = np.full((pad + len(rows) * (h + pad), pad + ncol * (w + pad), 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, c in enumerate(r):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + c.shape[0], x:x + c.shape[1]] = c
    return canvas
