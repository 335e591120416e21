"""Helpers shared by the built-in visualizers: matplotlib (Agg), PNG/GIF writing, step
selection, natural sort, fired-rule steps, and the path object that shows itself in Jupyter."""
from __future__ import annotations

import base64
import html
import io
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..errors import ConfigError


def plt():
    """matplotlib.pyplot on the Agg backend (no display needed, never opens a window)."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        try:
            matplotlib.use("Agg", force=True)
        except Exception:  # noqa: BLE001 - a notebook's inline backend is fine too
            pass
    import matplotlib.pyplot as pyplot

    return pyplot


def csp_hash(script: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline <script> text."""
    import base64
    import hashlib

    text = script.replace("\r\n", "\n").replace("\r", "\n")  # as the HTML parser hands it to the browser
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def as_trial(run):
    """A Trial from a Trial or a path."""
    from ..trial import Trial, create_trial

    return run if isinstance(run, Trial) else create_trial(run)


def natural_key(s: str):
    """Sort key so layer10 comes after layer2."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def pick_evenly(items: Sequence, n: Optional[int]) -> List:
    """At most n items, evenly spaced, always keeping the first and the last."""
    items = list(items)
    if not n or n <= 0 or len(items) <= n:
        return items
    if n == 1:
        return [items[-1]]
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, n)).astype(int))
    return [items[i] for i in idx]


def _in_range(spec: str):
    parts = (spec.split(":") + ["", ""])[:3]
    lo = int(parts[0]) if parts[0].strip() else None
    hi = int(parts[1]) if parts[1].strip() else None
    every = int(parts[2]) if parts[2].strip() else 1
    return lambda s: (lo is None or s >= lo) and (hi is None or s < hi) and (s - (lo or 0)) % every == 0


def select_steps(available: Sequence[int], steps=None, max_steps: Optional[int] = None) -> List[int]:
    """The saved steps to draw, then thinned evenly to max_steps. `steps`: None (all), an int,
    a list, "0,10,20", or a range "100:500" / "0::10" (start:stop:every, stop exclusive)."""
    avail = sorted(set(int(s) for s in available))
    if steps is None or (isinstance(steps, (list, tuple)) and not steps):
        return pick_evenly(avail, max_steps)
    if isinstance(steps, str) and ":" in steps:
        try:
            keep = _in_range(steps)
        except ValueError:
            raise ConfigError(f"bad step range {steps!r}: write start:stop or start:stop:every") from None
        chosen = [s for s in avail if keep(s)]
    else:
        if isinstance(steps, (int, np.integer)):
            want = [int(steps)]
        elif isinstance(steps, str):
            want = [int(p) for p in steps.split(",") if p.strip()]
        else:
            want = [int(s) for s in steps]
        have = set(avail)
        chosen = sorted(s for s in set(want) if s in have)
    if not chosen:
        raise ConfigError(f"none of the steps {steps!r} were saved (saved: {avail[:10]}"
                          f"{'...' if len(avail) > 10 else ''})")
    return pick_evenly(chosen, max_steps)


def fired_steps(trial, rule_results: Optional[Iterable[Any]] = None) -> Dict[str, List[int]]:
    """rule name -> steps where it fired: recorded live in the run, plus `rule_results` given
    (RuleResult objects or dicts from tt.invoke_rule)."""
    out: Dict[str, set] = {}
    recs = list(trial.rule_results())
    for r in rule_results or ():
        recs.append(r if isinstance(r, dict) else {"rule": r.rule, "step": r.step, "fired": r.fired})
    for r in recs:
        step = r.get("step")
        if r.get("fired") and isinstance(step, (int, np.integer)) and not isinstance(step, bool):
            out.setdefault(str(r.get("rule")), set()).add(int(step))  # (a crafted run's "step" may be text)
    return {k: sorted(v) for k, v in sorted(out.items())}


def rule_thresholds(trial, key: str) -> List[tuple]:
    """(rule, threshold) pairs the run's rules recorded about the value `key` (results whose values
    hold "threshold" beside `key`, e.g. pruning_accuracy's {"accuracy": .., "threshold": 0.9}),
    from the latest 200 results, distinct, in order."""
    out: List[tuple] = []
    for r in trial.rule_results()[-200:]:
        vals = r.get("values")
        if isinstance(vals, dict) and key in vals and isinstance(vals.get("threshold"), (int, float)) \
                and not isinstance(vals.get("threshold"), bool):
            pair = (str(r.get("rule")), float(vals["threshold"]))
            if pair not in out:
                out.append(pair)
    return out


def to_uint8_image(img: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) image, float in [0, 1] (or any range) or uint8, to (H, W, 3) uint8."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ConfigError(f"an image must be (H, W), (H, W, C) or (C, H, W), got shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = np.nanmin(a), np.nanmax(a)
        if lo < 0 or hi > 1:  # not [0, 1]: rescale to it
            a = (a - lo) / (hi - lo if hi > lo else 1.0)
        a = np.clip(np.nan_to_num(a) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def colormap(values: np.ndarray, name: str = "jet") -> np.ndarray:
    """Values in [0, 1] -> (..., 3) uint8 through a matplotlib colormap."""
    from matplotlib import colormaps

    rgba = colormaps[name](np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def compact(v: float) -> str:
    """A number as people read it on an axis: 1.2M, 350k, 12, 0.5, 1e-05."""
    a = abs(v)
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.3g}{unit}"
    if a == 0 or a >= 1e-3:
        return f"{v:.3g}"
    return f"{v:.0e}"


def compact_axis(axis) -> None:
    """Tick labels of a matplotlib axis as compact numbers (no "1e6" offset in the corner), also on log scale."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    if axis.get_scale() == "log":  # 1, 2, 5 per decade: enough labels over a span of one or two decades
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: compact(v)))
    axis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))


def fig_to_png(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt().close(fig)
    return buf.getvalue()


def fig_to_rgb(fig, dpi: int = 100) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(fig_to_png(fig, dpi))).convert("RGB"))


def write_bytes(out: str, data: bytes) -> str:
    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    with open(out, "wb") as f:
        f.write(data)
    return out


#: still-picture formats by file extension: PIL's name for each
STILL = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def still_format(out: str) -> str:
    """PIL's format for `out`'s extension (PNG without one); ConfigError naming the choices otherwise."""
    ext = os.path.splitext(str(out))[1].lower()
    if not ext:
        return "PNG"
    if ext not in STILL:
        raise ConfigError(f"cannot write a {ext!r} picture: use one of {', '.join(STILL)} as the file extension "
                          f"of {out!r}")
    return STILL[ext]


def write_png(out: str, rgb: np.ndarray) -> str:
    """An (H, W, 3) uint8 picture as PNG, or JPEG when `out` ends in .jpg/.jpeg."""
    from PIL import Image

    fmt = still_format(out)
    buf = io.BytesIO()
    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8)).convert("RGB")
    img.save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return write_bytes(out, buf.getvalue())


def write_figure(out: str, fig, dpi: int = 100) -> str:
    """A matplotlib figure as PNG, or JPEG when `out` ends in .jpg/.jpeg (other extensions refused
    before anything is written)."""
    if still_format(out) == "PNG":
        return write_bytes(out, fig_to_png(fig, dpi))
    return write_png(out, fig_to_rgb(fig, dpi))


def write_gif(out: str, frames: Sequence[np.ndarray], duration_ms: int = 600, loop: int = 0) -> str:
    """An animated GIF, one frame per array (all padded to the largest size)."""
    from PIL import Image

    if not frames:
        raise ConfigError("nothing to animate: no frames")
    h = max(f.shape[0] for f in frames)
    w = max(f.shape[1] for f in frames)
    imgs = []
    for f in frames:
        canvas = np.full((h, w, 3), 255, np.uint8)
        canvas[: f.shape[0], : f.shape[1]] = f[:, :, :3]
        imgs.append(Image.fromarray(canvas).convert("P", palette=Image.Palette.ADAPTIVE, colors=255))
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=int(duration_ms),
                 loop=int(loop), disposal=2, optimize=False)
    return write_bytes(out, buf.getvalue())


def text_band(width: int, lines: Sequence, height: int = 0, bg=(255, 255, 255), fg=(0, 0, 0)) -> np.ndarray:
    """A white band with text lines (PIL's built-in font), for captions above image cells; a line
    may be a (text, (r, g, b)) pair to draw it in its own colour."""
    from PIL import Image, ImageDraw

    line_h = 12
    h = height or (line_h * len(lines) + 4)
    im = Image.new("RGB", (int(width), int(h)), bg)
    d = ImageDraw.Draw(im)
    for i, t in enumerate(lines):
        text, colour = t if isinstance(t, tuple) else (t, fg)
        d.text((3, 2 + i * line_h), str(text), fill=colour)
    return np.asarray(im)


def out_kind(out: str, allowed: Sequence[str], default: str) -> str:
    """The output format from `out`'s extension ('.png', '.gif', '.html'), checked against `allowed`.
    Where '.png' is allowed a '.jpg'/'.jpeg' is too: the same still picture, written as JPEG."""
    ext = os.path.splitext(str(out))[1].lower()
    if not ext:
        return default
    if ext in (".jpg", ".jpeg") and ".png" in allowed:
        return ".png"
    if ext not in allowed:
        choices = list(allowed) + ([".jpg"] if ".png" in allowed else [])
        raise ConfigError(f"cannot write {ext!r} here: use one of {', '.join(choices)} as the file extension "
                          f"of {out!r}")
    return ext


def data_uri(path: str) -> str:
    mime = {".png": "image/png", ".gif": "image/gif", ".html": "text/html", ".svg": "image/svg+xml",
            ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(
        os.path.splitext(path)[1].lower(), "application/octet-stream")
    with open(path, "rb") as f:
        return f"data:{mime};base64," + base64.b64encode(f.read()).decode("ascii")


class Rendered(str):
    """The path a visualizer wrote. It is a str, and in Jupyter it displays itself
    (PNG inline, GIF as an image, HTML in a sandboxed iframe)."""

    @property
    def path(self) -> str:
        return str(self)

    @property
    def suffix(self) -> str:
        return os.path.splitext(str(self))[1].lower()

    def _read(self) -> bytes:
        with open(str(self), "rb") as f:
            return f.read()

    def _repr_png_(self) -> Optional[bytes]:
        return self._read() if self.suffix == ".png" else None

    def _repr_jpeg_(self) -> Optional[bytes]:
        return self._read() if self.suffix in (".jpg", ".jpeg") else None

    def _repr_html_(self) -> Optional[str]:
        if self.suffix == ".gif":
            return f'<img src="{data_uri(str(self))}" alt="{html.escape(os.path.basename(self))}"/>'
        if self.suffix == ".html":
            doc = self._read().decode("utf-8")
            return (f'<iframe srcdoc="{html.escape(doc, quote=True)}" sandbox="allow-scripts" '
                    f'style="width:100%;height:640px;border:0"></iframe>')
        return None


def coerce_option(value: str, default: Any) -> Any:
    """A CLI option string to the type of the option's default (bool, int, float, list, str)."""
    v = value.strip()
    if isinstance(default, bool):
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"expected true/false, got {value!r}")
    if isinstance(default, int):
        try:
            return int(v)
        except ValueError:
            raise ConfigError(f"expected an integer, got {value!r}") from None
    if isinstance(default, float):
        try:
            return float(v)
        except ValueError:
            raise ConfigError(f"expected a number, got {value!r}") from None
    if isinstance(default, (list, tuple)):
        return [p.strip() for p in v.split(",") if p.strip()]
    if v.lower() == "none":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def fast_histogram(values: np.ndarray, bins: int, lo: Optional[float] = None, hi: Optional[float] = None):
    """Counts of the finite values in `bins` equal bins over [lo, hi] (default: their min..max),
    the edges, and (min, max, n, sum, sum of squares). Same counts as np.histogram with uniform
    bins (values outside [lo, hi] are dropped), several times faster on large float32 tensors."""
    f = np.asarray(values).ravel()
    if f.dtype.kind not in "f":
        f = f.astype(np.float64)
    if f.size and not np.isfinite(f.sum(dtype=np.float64)):
        f = f[np.isfinite(f)]
    if f.size == 0:
        return np.zeros(bins), np.linspace(0.0, 1.0, bins + 1), (0.0, 0.0, 0.0, 0.0, 0.0)
    mn, mx = float(f.min()), float(f.max())
    lo = mn if lo is None else float(lo)
    hi = mx if hi is None else float(hi)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    g = f if (lo <= mn and mx <= hi) else f[(f >= lo) & (f <= hi)]
    g64 = g.astype(np.float64, copy=False)
    idx = ((g64 - lo) * (bins / (hi - lo))).astype(np.intp)
    np.minimum(idx, bins - 1, out=idx)
    # values on an edge: the rounding of the multiplication may put them one bin off (as np.histogram fixes)
    idx[g64 < edges[idx]] -= 1
    idx[(g64 >= edges[idx + 1]) & (idx != bins - 1)] += 1
    counts = np.bincount(idx, minlength=bins)[:bins].astype(np.float64)
    stats = (mn, mx, float(f.size), float(f.sum(dtype=np.float64)), float(np.square(f, dtype=np.float64).sum()))
    return counts, edges, stats
