"""`attention`: an attention head view as ONE self-contained offline HTML file (no CDN, no
network), or a static layers x heads heat-map grid as PNG.

Reads attention/<layer> (batch, heads, query, key) from collection "attention", layers in natural
order, and attention/tokens (batch, seq) strings when saved (else token indices are shown).
"""
from __future__ import annotations

import base64
import html
import json
import os
import re
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import ConfigError
from ..progress import progress
from ._common import Rendered, as_trial, csp_hash, natural_key, out_kind, plt, select_steps, write_bytes, write_figure
from .base import Visualizer

_ASSETS = os.path.join(os.path.dirname(__file__), "assets")
NO_TOKENS = ("No tokens were saved with this run: the labels are positions 0, 1, 2, ... Save them with "
             "hook.set_tokens(tokens), or give the trainer integration a tokenizer.")


def attention_layers(trial) -> List[str]:
    """Names attention/<layer> (not the tokens), natural order (layer10 after layer2)."""
    names = [n for n in trial.tensor_names(regex=r"^attention/") if n != "attention/tokens"]
    return sorted(names, key=natural_key)


def _asset(name: str) -> str:
    with open(os.path.join(_ASSETS, name), encoding="utf-8") as f:
        return f.read()


def safe_json(obj) -> str:
    """JSON that can sit inside a <script> element: no '<', '>' or '&' survive literally."""
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _tokens_at(trial, step: int, batch: int, n: int) -> List[List[str]]:
    if trial.has_tensor("attention/tokens"):
        try:
            tok = np.asarray(trial.tensor("attention/tokens").value(step))
            if tok.ndim == 1:
                tok = np.broadcast_to(tok, (batch,) + tok.shape)
            return [[_text(t) for t in row[:n]] for row in tok[:batch]]
        except Exception:  # noqa: BLE001 - tokens missing at this step: indices instead
            pass
    return [[str(i) for i in range(n)] for _ in range(batch)]


def _text(t) -> str:
    return t.decode("utf-8", "replace") if isinstance(t, (bytes, np.bytes_)) else str(t)


def _plain(t: str) -> str:
    """A token as matplotlib text: '$' would start mathtext."""
    return t.replace("$", r"\$")


class AttentionVisualizer(Visualizer):
    """Attention head view: tokens left (query) and right (key) joined by lines weighted by
    attention, with layer, head and example selectors and a slider (and play button) over the
    saved steps. Writes ONE self-contained HTML file; with a .png `out`, a static heat-map grid
    (layers x heads) of one step and example instead.

    Options: steps, max_steps, max_tokens (first tokens shown), examples ("0,1"), max_examples,
    min_weight (lines below are not drawn), step (PNG: which step, default last), example (PNG).
    """

    name = "attention"
    suffix = ".html"
    suffixes = (".png", ".jpg")

    def applies_to(self, trial) -> bool:
        return bool(attention_layers(trial))

    @classmethod
    def inline_scripts(cls) -> List[str]:
        return [_asset("headview.js")]

    def render(self, trial, out: str, *, steps=None, max_steps: int = 20, max_tokens: int = 24,
               examples=None, max_examples: int = 4, min_weight: float = 0.02, interval_ms: int = 800,
               step: Optional[int] = None, example: int = 0, layers: Optional[str] = None,
               title: str = "") -> str:
        trial = as_trial(trial)
        kind = out_kind(out, (".html", ".png"), ".html")
        names = attention_layers(trial)
        if layers:
            pat = re.compile(layers)
            names = [n for n in names if pat.search(n)]
        if not names:
            raise ConfigError(f"no attention maps in {trial.path}" + (f" match layers={layers!r}" if layers else "")
                              + ": capture collection \"attention\" (tensors attention/<layer>, "
                              "(batch, heads, query, key))")
        avail = sorted(set().union(*[set(trial.tensor(n).steps(kind="value")) for n in names]))
        if kind == ".png":
            s = int(step) if step is not None else avail[-1]
            if s not in avail:
                raise ConfigError(f"attention was not saved at step {s}; saved steps: {avail[:10]}"
                                  f"{'...' if len(avail) > 10 else ''}")
            return Rendered(self._heatmaps(trial, names, s, int(example), int(max_tokens), out))
        chosen = select_steps(avail, steps, max_steps)
        data = self._collect(trial, names, chosen, examples, int(max_examples), int(max_tokens))
        data.update(interval_ms=int(interval_ms), min_weight=float(min_weight),
                    positions_only=not trial.has_tensor("attention/tokens"))
        return Rendered(write_bytes(out, self.page(data, title or f"Attention · {trial.name}").encode("utf-8")))

    # ---- data -------------------------------------------------------------------------------
    def _collect(self, trial, names, steps, examples, max_examples, max_tokens) -> Dict:
        heads = None
        step_data, step_tokens, kept_steps = [], [], []
        ex_idx: Optional[List[int]] = None
        for s in progress(steps, "attention"):
            per_layer: List[Dict[str, Any]] = []
            batch = None
            for n in names:
                try:
                    a = np.asarray(trial.tensor(n).value(s), dtype=np.float64)
                except Exception:  # noqa: BLE001 - layer not saved at this step
                    per_layer = []
                    break
                if a.ndim == 3:
                    a = a[None]
                if a.ndim != 4:
                    raise ConfigError(f"{n} at step {s} has shape {a.shape}; attention must be "
                                      "(batch, heads, query, key)")
                if ex_idx is None:
                    want = ([int(x) for x in examples.split(",")] if isinstance(examples, str)
                            else list(examples) if examples is not None else list(range(a.shape[0])))
                    ex_idx = [i for i in want if 0 <= i < a.shape[0]][:max(1, max_examples)]
                    if not ex_idx:
                        raise ConfigError(f"examples {examples!r} out of range: the batch has {a.shape[0]} examples")
                a = a[[i for i in ex_idx if i < a.shape[0]], :, :max_tokens, :max_tokens]
                heads = a.shape[1] if heads is None else heads
                batch = a.shape[0]
                q8 = np.clip(np.round(np.nan_to_num(a) * 255.0), 0, 255).astype(np.uint8)
                per_layer.append({"shape": list(q8.shape), "b64": base64.b64encode(q8.tobytes()).decode("ascii")})
            if not per_layer or ex_idx is None:
                continue
            kept_steps.append(int(s))
            step_data.append(per_layer)
            n_tok = max(rec["shape"][2] for rec in per_layer)
            toks = _tokens_at(trial, s, max(ex_idx) + 1, n_tok)
            step_tokens.append([toks[i] if i < len(toks) else [] for i in ex_idx])
            del batch
        if not kept_steps or heads is None:
            raise ConfigError("no step has every attention layer readable")
        return {"layers": [n[len("attention/"):] for n in names], "heads": int(heads), "steps": kept_steps,
                "examples": ex_idx, "tokens": step_tokens, "data": step_data}

    @staticmethod
    def page(data: Dict, title: str) -> str:
        """The self-contained page: inline CSS, inline data, inline script; nothing fetched."""
        t = html.escape(title)
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                f"script-src {csp_hash(_asset('headview.js'))}; style-src 'unsafe-inline'; img-src data:\">"
                f"<title>{t}</title><style>{_asset('headview.css')}</style></head><body>"
                f"<h2>{t}</h2><p class=\"tt-note\">Left: query tokens, right: key tokens. Line opacity = attention "
                "weight. Hover a token to see only its lines; double-click a head to show it alone.</p>"
                + (f"<p class=\"tt-note\">{NO_TOKENS}</p>" if data.get("positions_only") else "") +
                "<div id=\"tt-headview\"></div><noscript>This view needs JavaScript.</noscript>"
                f"<script id=\"tt-data\" type=\"application/json\">{safe_json(data)}</script>"
                f"<script>{_asset('headview.js')}</script></body></html>\n")

    # ---- static PNG -------------------------------------------------------------------------
    def _heatmaps(self, trial, names: List[str], step: int, example: int, max_tokens: int, out: str) -> str:
        mats = []
        for n in names:
            a = np.asarray(trial.tensor(n).value(step), dtype=np.float64)
            if a.ndim == 3:
                a = a[None]
            if not 0 <= example < a.shape[0]:
                raise ConfigError(f"example {example} out of range: {n} has batch {a.shape[0]}")
            mats.append(a[example, :, :max_tokens, :max_tokens])
        n_tok = max(m.shape[-1] for m in mats)
        toks = _tokens_at(trial, step, example + 1, n_tok)[example] if n_tok <= MAX_LABELLED_TOKENS else None
        heads = max(m.shape[0] for m in mats)
        layers = [n[len("attention/"):] for n in names]
        rows, common = short_names(layers)
        pyplot = plt()
        size = max(1.6, 0.12 * n_tok) if toks else 1.6  # room for one label per token
        font = 7 if n_tok <= 12 else 6
        label_w = 0.09 * max(len(r) for r in rows) + 0.2  # inches for the layer names, left of each row
        width = label_w + size * heads + 1.4 + (0.5 if toks else 0)
        fig, grid = pyplot.subplots(len(names), heads + 1, squeeze=False, constrained_layout=True,
                                    figsize=(width, size * len(names) + 1.2),
                                    gridspec_kw={"width_ratios": [label_w] + [size] * heads})
        for i, r in enumerate(rows):  # the layer, horizontal and readable, in a column of its own
            grid[i][0].axis("off")
            grid[i][0].text(1.0, 0.5, _plain(r), ha="right", va="center", fontsize=9, transform=grid[i][0].transAxes)
        axes = grid[:, 1:]
        im = None
        for i, m in enumerate(mats):
            for h in range(heads):
                ax = axes[i][h]
                ax.set_xticks([])
                ax.set_yticks([])
                if h < m.shape[0]:
                    im = ax.imshow(m[h], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
                if toks and i == len(names) - 1:
                    ax.set_xticks(range(len(toks)))
                    ax.set_xticklabels([_plain(t) for t in toks], rotation=90, fontsize=font)
                if toks and h == 0:
                    ax.set_yticks(range(len(toks)))
                    ax.set_yticklabels([_plain(t) for t in toks], fontsize=font)
                if i == 0:
                    ax.set_title(f"head {h}", fontsize=9)
        if im is not None:
            fig.colorbar(im, ax=axes, shrink=min(0.9, 3.0 / max(1, len(names)) + 0.3), label="attention weight")
        where = f"layers ({_plain(common)})" if common else "layers"
        labels = ("" if toks else f"; {n_tok} tokens, too many to label") if trial.has_tensor("attention/tokens") \
            else "; labels are positions, no tokens saved"
        fig.suptitle(f"attention at step {step}, example {example}: {where} by row, heads by column "
                     f"(query rows, key columns){labels}", fontsize=10)
        return write_figure(out, fig)


#: the PNG grid labels each token when there are at most this many
MAX_LABELLED_TOKENS = 32


def short_names(names: List[str]) -> tuple:
    """(each name without the parts all share at the start and the end, what they share): in
    ["bert.encoder.layer.0.attention.self", ...] the rows read "layer.0", ... and the shared form is
    "bert.encoder.layer.N.attention.self"."""
    if len(names) < 2:
        return list(names), ""
    parts = [re.split(r"(?<=[./_])", n) for n in names]
    lo = 0
    while all(len(p) > lo + 1 for p in parts) and len({p[lo] for p in parts}) == 1:
        lo += 1
    hi = 0
    while all(len(p) > lo + hi + 1 for p in parts) and len({p[-1 - hi] for p in parts}) == 1:
        hi += 1
    middle = ["".join(p[lo:len(p) - hi]).strip("./_") for p in parts]
    numbered = all(m.isdigit() for m in middle)
    keep = lo - 1 if numbered and lo > 0 else lo  # "layer.0", not a bare "0"
    short = ["".join(p[keep:len(p) - hi]).strip("./_") or n for p, n in zip(parts, names)]
    raw = "".join(parts[0][lo:len(parts[0]) - hi])  # the first name's own part, separators kept
    shared = "".join(parts[0][:lo]) + (re.sub(r"\d+", "N", raw) if numbered else "…") \
        + "".join(parts[0][len(parts[0]) - hi:])
    return short, shared if (lo or hi) else ""
