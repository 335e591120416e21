"""`embedding`: latent vectors (N, D) projected to 2-D, coloured by label, animated over steps.

t-SNE (openTSNE, else scikit-learn), PCA, or UMAP when installed. Each t-SNE frame is
warm-started from the previous frame's layout, and every frame is rotated onto the previous one
(orthogonal Procrustes), so points move smoothly instead of jumping. A step whose vectors equal
the previous frame's (the same model probed twice) adds no frame. The legend sits beside the plot.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import List, Optional, Tuple

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..progress import Progress
from ._common import Rendered, as_trial, fig_to_rgb, out_kind, plt, select_steps, write_gif, write_png
from .base import Visualizer

METHODS = ("tsne", "pca", "umap")
_HINT = r"(latent|embed|bottleneck|encod|code|hidden)"


def candidates(trial) -> List[str]:
    """Tensors that look like embeddings: collection "embeddings", else names like latent/embedding/..."""
    names = trial.tensor_names(collection="embeddings")
    if names:
        return names
    skip = ("weights", "biases", "gradients", "losses", "metrics", "scalars", "attention", "feature_maps")
    out = []
    for n in trial.tensor_names(regex=_HINT):
        if set(trial.tensor(n).collections) & set(skip) or n.startswith(("gradients/", "gradcam/")):
            continue
        out.append(n)
    return out


def pca2(x: np.ndarray) -> np.ndarray:
    """First two principal components (numpy SVD, deterministic signs)."""
    x = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    y = x @ vt[:2].T
    if y.shape[1] < 2:
        y = np.concatenate([y, np.zeros((len(y), 2 - y.shape[1]))], axis=1)
    signs = np.sign(y[np.abs(y).argmax(axis=0), range(2)])
    return y * np.where(signs == 0, 1, signs)


def procrustes(y: np.ndarray, ref: Optional[np.ndarray]) -> np.ndarray:
    """Rotate/reflect `y` (centred) to best match `ref`: the same layout, not a flipped one."""
    y = y - y.mean(axis=0, keepdims=True)
    if ref is None or ref.shape != y.shape:
        return y
    u, _, vt = np.linalg.svd(y.T @ (ref - ref.mean(axis=0, keepdims=True)))
    return y @ (u @ vt)


class _TSNE:
    """t-SNE with warm starts: openTSNE when installed, else scikit-learn."""

    def __init__(self, perplexity: float, n_iter: int, seed: int):
        self.perplexity, self.n_iter, self.seed = perplexity, n_iter, seed
        self.backend = "openTSNE" if importlib.util.find_spec("openTSNE") else "sklearn"

    def __call__(self, x: np.ndarray, init: Optional[np.ndarray]) -> np.ndarray:
        perp = float(min(self.perplexity, max(2.0, (len(x) - 1) / 3.0)))
        if self.backend == "openTSNE":
            from openTSNE import TSNE

            if init is None:  # first frame: the usual PCA start and early exaggeration
                tsne = TSNE(n_components=2, perplexity=perp, n_iter=int(self.n_iter), random_state=self.seed,
                            early_exaggeration_iter=max(25, int(self.n_iter) // 2), initialization="pca",
                            n_jobs=1, verbose=False)
            else:  # warm start: continue from the previous layout, no exaggeration phase, so points move little
                tsne = TSNE(n_components=2, perplexity=perp, n_iter=max(50, int(self.n_iter) // 2),
                            random_state=self.seed, early_exaggeration_iter=0,
                            initialization=np.ascontiguousarray(init, dtype=np.float64), n_jobs=1, verbose=False)
            quiet = logging.getLogger("openTSNE.tsne")
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # the warm layout's spread is intended, not a bad init
            try:
                return np.asarray(tsne.fit(x), dtype=np.float64)
            finally:
                quiet.setLevel(level)
        import sklearn
        from sklearn.manifold import TSNE

        key = "max_iter" if tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 5) else "n_iter"
        kw = {key: max(250, int(self.n_iter))}
        if init is not None:  # scikit-learn takes the previous layout as init; scale it as its PCA init is
            init = (init - init.mean(0)) / (init[:, 0].std() or 1.0) * 1e-4
        tsne = TSNE(n_components=2, perplexity=perp, init=init if init is not None else "pca",
                    random_state=self.seed, **kw)
        return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def _labels(trial, name: Optional[str], step: int, n: int) -> Optional[np.ndarray]:
    if not name:
        return None
    if not trial.has_tensor(name):
        raise ConfigError(f"no labels tensor {name!r}." + did_you_mean(name, trial.tensor_names())
                          + " Save labels with hook.save_tensor('labels', y, collections=['labels'])")
    t = trial.tensor(name)
    st = t.steps(kind="value")
    use = step if step in st else min(st, key=lambda s: abs(s - step)) if st else None
    if use is None:
        return None
    y = np.asarray(t.value(use))
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(1)
    y = y.reshape(-1)
    return y[:n] if len(y) >= n else None


class EmbeddingVisualizer(Visualizer):
    """Latent vectors (N, D) at each saved step projected to 2-D (t-SNE, PCA or UMAP), coloured by
    label: a GIF over steps (t-SNE warm-started from the previous frame) or the last step as PNG.

    Options: tensor (default: collection "embeddings" or a name like latent/embedding/bottleneck),
    labels (tensor of labels, default "labels" when present), method (tsne, pca, umap),
    max_points (sample limit, the same points every frame), steps, max_steps, perplexity,
    n_iter, seed, duration_ms.
    """

    name = "embedding"
    suffix = ".gif"
    suffixes = (".png", ".jpg")

    def applies_to(self, trial) -> bool:
        for n in candidates(trial):
            st = trial.tensor(n).steps(kind="value")
            if st and np.asarray(trial.tensor(n).value(st[-1])).ndim >= 2:
                return True
        return False

    def render(self, trial, out: str, *, tensor: Optional[str] = None, labels: Optional[str] = "auto",
               method: str = "tsne", max_points: int = 1000, steps=None, max_steps: int = 12,
               perplexity: float = 30.0, n_iter: int = 500, seed: int = 0, duration_ms: int = 700) -> str:
        trial = as_trial(trial)
        kind = out_kind(out, (".gif", ".png"), ".gif")
        method = str(method).lower()
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}." + did_you_mean(method, METHODS) + f" Methods: {METHODS}")
        if method == "umap" and importlib.util.find_spec("umap") is None:
            raise ConfigError("method='umap' needs the umap-learn package (pip install umap-learn); "
                              "or use method='tsne' or 'pca'")
        if tensor is None:
            cands = candidates(trial)
            if not cands:
                raise ConfigError(f"no embedding tensor found in {trial.path}: pass tensor=NAME (a saved (N, D) "
                                  "array, e.g. a bottleneck layer's output)")
            tensor = cands[0]
        elif not trial.has_tensor(tensor):
            raise ConfigError(f"no tensor {tensor!r}." + did_you_mean(tensor, trial.tensor_names()))
        if labels == "auto":
            labels = "labels" if trial.has_tensor("labels") else None
        t = trial.tensor(tensor)
        chosen = select_steps(t.steps(kind="value"), steps, max_steps)
        if kind == ".png":
            chosen = chosen[-1:]
        rng = np.random.default_rng(seed)
        sample: Optional[np.ndarray] = None
        frames: List[Tuple[int, np.ndarray, Optional[np.ndarray]]] = []
        prev: Optional[np.ndarray] = None
        tsne = _TSNE(perplexity, n_iter, seed)  # used when method is "tsne"
        last_x: Optional[np.ndarray] = None
        with Progress(len(chosen), f"{method} {tensor}") as bar:
            for s in chosen:
                x = np.asarray(t.value(s), dtype=np.float64)
                x = x.reshape(len(x), -1)
                if sample is None or sample.max(initial=-1) >= len(x):
                    n = len(x)
                    sample = np.sort(rng.choice(n, int(max_points), replace=False)) if n > max_points else np.arange(n)
                xs = np.nan_to_num(x[sample])
                if last_x is not None and last_x.shape == xs.shape and np.array_equal(last_x, xs):
                    bar.update()  # the same vectors as the frame before (a probe saved twice): no repeated frame
                    continue
                last_x = xs
                if prev is not None and len(prev) != len(xs):
                    prev = None
                if method == "pca":
                    y = pca2(xs)
                elif method == "umap":
                    import umap

                    y = np.asarray(umap.UMAP(n_components=2, random_state=seed, init=prev if prev is not None
                                             else "spectral").fit_transform(xs), dtype=np.float64)
                else:
                    y = tsne(xs, prev)
                y = procrustes(y, prev)
                prev = y
                lab = _labels(trial, labels, s, len(x))
                frames.append((s, y, lab[sample] if lab is not None else None))
                bar.update()
        if not frames:
            raise ConfigError(f"nothing to project: {tensor!r} has no readable steps")
        images = self._draw(frames, tensor, method, trial.name)
        if kind == ".png":
            return Rendered(write_png(out, images[-1]))
        return Rendered(write_gif(out, images, duration_ms=int(duration_ms)))

    @staticmethod
    def _draw(frames, tensor: str, method: str, run: str) -> List[np.ndarray]:
        pyplot = plt()
        allpts = np.concatenate([f[1] for f in frames])
        lo, hi = np.percentile(allpts, 0.5, axis=0), np.percentile(allpts, 99.5, axis=0)
        pad = (hi - lo) * 0.08 + 1e-9
        classes = sorted(set(np.concatenate([f[2] for f in frames if f[2] is not None]).tolist())) \
            if any(f[2] is not None for f in frames) else []
        out = []
        for s, y, lab in frames:
            fig, ax = pyplot.subplots(figsize=(6.4 if classes else 5.2, 4.6))
            if lab is None:
                ax.scatter(y[:, 0], y[:, 1], s=8, c="tab:blue", alpha=0.8, linewidths=0)
            else:
                cmap = pyplot.get_cmap("tab10" if len(classes) <= 10 else "tab20")
                for ci, c in enumerate(classes):
                    m = lab == c
                    ax.scatter(y[m, 0], y[m, 1], s=8, color=cmap(ci % cmap.N), label=str(c), alpha=0.85, linewidths=0)
                # beside the plot, never over the points
                ax.legend(fontsize=7, markerscale=1.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                          title="label", title_fontsize=7, ncol=2 if len(classes) > 12 else 1)
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{tensor} · {method} · step {s}", fontsize=9)
            fig.tight_layout()
            out.append(fig_to_rgb(fig))
        return out
