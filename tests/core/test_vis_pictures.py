"""The pictures say what they show: readable axes and labels, colour bars, the pruning floor, one
colour per run, true and predicted labels on Grad-CAM, the t-SNE legend beside the points and no
repeated frame, and --out x.jpg a real JPEG (other extensions refused). Each checked on the figure
or the pixels, against values computed here."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageSequence

import tensortap as tt
from tensortap.errors import ConfigError
from tensortap.explain import record_gradcam
from tensortap.rules import Rule, RuleResult
from tests.core.test_vis_runs import HOT, TOKENS, attention_run, embedding_run, gradcam_run, mlp_run, pruning_run


class PruningFloor(Rule):
    """Like contrib's pruning_accuracy: records the accuracy and its floor in each result."""

    name = "pruning_accuracy"

    def invoke_at_step(self, trial, step):
        if "pruning/accuracy" not in trial.tensor_names(step=step):
            return RuleResult(self.name, step, False, "skipped: no accuracy", skipped=True)
        a = float(trial.tensor("pruning/accuracy").value(step))
        return RuleResult(self.name, step, a < 0.9, f"accuracy {a:.3f}", {"accuracy": a, "threshold": 0.9})


def big_pruning_run(path: str, n0: int = 2_300_000, iters: int = 9) -> str:
    """Parameters in the millions, accuracy falling through a 0.9 floor its rule records."""
    hook = tt.Hook(path, include_collections=["scalars"], save_config=tt.SaveConfig(save_interval=1))
    hook.add_rule(PruningFloor())
    p = float(n0)
    for _ in range(iters):
        hook.begin_step(tt.modes.TRAIN)
        hook.save_scalar("pruning/params", int(p))
        hook.save_scalar("pruning/size_mb", p * 4 / 1e6)
        hook.save_scalar("pruning/accuracy", 0.97 - 0.1 * (1 - p / n0) ** 3)
        p *= 0.7
    hook.close()
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pictures")
    return {"mlp": mlp_run(str(d / "mlp"), steps=12), "mlp2": mlp_run(str(d / "mlp2"), steps=8, eval_every=2),
            "pruning": big_pruning_run(str(d / "pruning")), "small_pruning": pruning_run(str(d / "sp")),
            "attention": attention_run(str(d / "attention")), "gradcam": gradcam_run(str(d / "gradcam")),
            "embedding": embedding_run(str(d / "embedding"), steps=3, n=60)}


@pytest.fixture
def figures(monkeypatch):
    """Every matplotlib figure a visualizer writes, kept for inspection (drawn first)."""
    from tensortap.vis import _common

    got = []
    real = _common.write_figure

    def keep(out, fig, dpi=100):
        drawn(fig)
        got.append(fig)
        return real(out, fig, dpi)

    for mod in ("scalars", "distributions", "pruning", "attention"):
        monkeypatch.setattr(f"tensortap.vis.{mod}.write_figure", keep)
    return got


def drawn(fig):
    """Draw `fig` and keep its renderer on it (closing a figure takes its canvas away on newer matplotlib)."""
    fig.canvas.draw()
    fig.tt_renderer = fig.canvas.get_renderer()
    return fig


def labels(axis) -> list:
    """The tick labels drawn: non-empty, at ticks inside the axis' view."""
    lo, hi = sorted(axis.get_view_interval())
    return [t.get_text() for t, v in zip(axis.get_ticklabels(), axis.get_ticklocs())
            if t.get_text() and t.get_visible() and lo <= v <= hi]


# ---- JPEG ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,run,opts", [
    ("scalars", "mlp", {}), ("distributions", "mlp", {}), ("pruning", "pruning", {}), ("gradcam", "gradcam", {}),
    ("attention", "attention", {}), ("embedding", "embedding", {"method": "pca"})])
def test_jpg_out_writes_a_jpeg_and_other_extensions_are_refused(runs, tmp_path, name, run, opts):
    vis = tt.vis.get(name)()
    trial = tt.create_trial(runs[run])
    jpg = vis.render(trial, str(tmp_path / "x.jpg"), **opts)
    png = vis.render(trial, str(tmp_path / "x.png"), **opts)
    with open(jpg, "rb") as f:
        assert f.read(3) == b"\xff\xd8\xff", "not JPEG bytes"
    with Image.open(jpg) as a, Image.open(png) as b:
        assert a.format == "JPEG" and b.format == "PNG" and a.size == b.size
    for bad in ("x.pdf", "x.bmp"):
        with pytest.raises(ConfigError, match=r"\.jpg"):
            vis.render(trial, str(tmp_path / bad), **opts)
        assert not os.path.exists(tmp_path / bad)


# ---- pruning ---------------------------------------------------------------------------------------
def test_pruning_axes_read_as_numbers_log_option_and_the_floor(runs, tmp_path, figures):
    vis = tt.vis.get("pruning")()
    vis.render(tt.create_trial(runs["pruning"]), str(tmp_path / "p.png"))
    fig = figures[-1]
    params_ax, size_ax, iter_ax = fig.axes[:3]
    ticks = labels(params_ax.xaxis)
    assert ticks and all(t.endswith(("M", "k")) for t in ticks), ticks  # 2M, 500k: not 2.0 with "1e6" aside
    assert params_ax.xaxis.get_offset_text().get_text() == ""
    for ax in (params_ax, size_ax, iter_ax):  # the rule's floor, drawn where accuracy is
        floors = [ln for ln in ax.get_lines() if np.allclose(ln.get_ydata(), 0.9) and ln.get_linestyle() == "--"]
        assert len(floors) == 1, ax.get_title()
    assert "accuracy floor 0.9 (pruning_accuracy)" in [t.get_text() for t in params_ax.get_legend().get_texts()]
    vis.render(tt.create_trial(runs["pruning"]), str(tmp_path / "plog.png"), log_x=True, floor=0.8)
    fig = figures[-1]
    assert fig.axes[0].get_xscale() == "log" and len(labels(fig.axes[0].xaxis)) >= 3
    assert [ln.get_ydata()[0] for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"] == [0.8]


# ---- attention -------------------------------------------------------------------------------------
def test_attention_png_has_row_names_token_labels_and_a_colour_bar(runs, tmp_path, figures):
    tt.vis.get("attention")().render(tt.create_trial(runs["attention"]), str(tmp_path / "a.png"))
    fig = figures[-1]
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "attention weight"]
    assert len(bars) == 1, "no colour bar"
    rows = [t for ax in fig.axes for t in ax.texts]
    assert [t.get_text() for t in rows] == ["layer0", "layer5", "layer10"]  # natural order, shared part named once
    assert all(t.get_rotation() == 0 and t.get_fontsize() >= 8 for t in rows)
    renderer = fig.tt_renderer
    fb = fig.bbox
    for t in rows:  # inside the picture, not cut off
        b = t.get_window_extent(renderer)
        assert b.x0 >= fb.x0 - 1 and b.x1 <= fb.x1 + 1, (t.get_text(), b)
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 3 * 2
    assert labels(heat[-1].xaxis) == TOKENS and labels(heat[0].yaxis) == TOKENS
    assert "encoder." in fig._suptitle.get_text()


# ---- distributions -----------------------------------------------------------------------------------
def test_distributions_has_colour_bars_says_what_it_leaves_out_and_names_rules_off_the_lines(runs, tmp_path, figures):
    trial = tt.create_trial(runs["mlp"])
    tt.vis.get("distributions")().render(trial, str(tmp_path / "d.png"), max_tensors=2)
    fig = figures[-1]
    panels = [ax for ax in fig.axes if ax.collections and ax.get_title()]
    bars = [ax for ax in fig.axes if ax.get_ylabel().startswith("count")]
    assert len(panels) == 2 and len(bars) == 2
    total = len(tt.vis.get("distributions")()._names(trial, None, 1 << 30))
    assert total > 2 and f"showing 2 of {total} tensors" in fig._suptitle.get_text()
    assert all(not ax.texts for ax in panels), "rule names drawn on the plot"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["test_loss_above fired"]
    renderer = fig.tt_renderer
    lb = legend.get_window_extent(renderer)
    assert all(not lb.overlaps(ax.get_window_extent(renderer)) for ax in panels)
    # the colour bar's ticks are counts: the largest label is within the largest cell count
    ticks = [float(t.replace("k", "e3")) for t in labels(bars[0].yaxis)]
    assert ticks[0] == 0 and ticks == sorted(ticks)
    tt.vis.get("distributions")().render(trial, str(tmp_path / "all.png"), tensors="^fc1")
    assert "all 2 tensors" in figures[-1]._suptitle.get_text()


# ---- several runs ------------------------------------------------------------------------------------
def test_overlaid_runs_each_get_their_own_colour(runs, tmp_path, figures):
    a, b = tt.create_trial(runs["mlp"]), tt.create_trial(runs["mlp2"])
    tt.vis.get("scalars")().render([a, b], str(tmp_path / "o.png"), names="^loss$")
    ax = figures[-1].axes[0]
    by_label = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert set(by_label) == {"mlp · train", "mlp · eval", "mlp2 · train", "mlp2 · eval"}
    colour = {k: ln.get_color() for k, ln in by_label.items()}
    assert colour["mlp · train"] == colour["mlp · eval"] != colour["mlp2 · train"] == colour["mlp2 · eval"]
    assert by_label["mlp · train"].get_linestyle() != by_label["mlp · eval"].get_linestyle()


# ---- Grad-CAM ----------------------------------------------------------------------------------------
def labelled_gradcam(path: str, class_names=("stop", "yield", "speed 50")) -> str:
    """Grad-CAM of two images over three steps (the map peaks at HOT, growing), their true labels
    (yield, stop), the classes explained (yield 90 %, the third class 60 %) and the class names."""
    hook = tt.Hook(path, include_collections=["feature_maps"], save_config=tt.SaveConfig(save_interval=1))
    rng = np.random.default_rng(0)
    for s in range(3):
        hook.begin_step(tt.modes.TRAIN)
        acts = rng.uniform(0.0, 0.1, (2, 3, 4, 4)).astype(np.float32)
        acts[:, 0, HOT[0], HOT[1]] = 1.0 + s
        grads = np.zeros_like(acts)
        grads[:, 0] = 0.5
        images = np.full((2, 16, 16, 3), 0.4, np.float32)
        record_gradcam(hook, "layer4", acts, grads, images, [1, 2], np.array([0.9, 0.6], np.float32))
        hook.save_tensor("gradcam/labels", np.array([1, 0]), collections=["feature_maps"])
        hook.save_tensor("gradcam/class_names", np.array(class_names), collections=["feature_maps"])
    hook.close()
    return path


def test_gradcam_captions_true_and_predicted_labels(tmp_path, monkeypatch):
    from tensortap.vis import gradcam

    bands = []
    real = gradcam.text_band
    monkeypatch.setattr(gradcam, "text_band", lambda w, lines, **kw: bands.append(list(lines)) or real(w, lines, **kw))
    trial = tt.create_trial(labelled_gradcam(str(tmp_path / "g")))
    tt.vis.get("gradcam")().render(trial, str(tmp_path / "g.png"), steps="0")
    assert bands == [["step 0", "true: yield", "pred: yield 90%"],
                     ["step 0", "true: stop", ("pred: speed 50 60%", (200, 0, 0))]]  # a wrong prediction in red
    bands.clear()
    tt.vis.get("gradcam")().render(trial, str(tmp_path / "g2.png"), steps="0", class_names="a,b,c")
    assert bands[0] == ["step 0", "true: b", "pred: b 90%"]


def test_gradcam_per_image_scale_beside_the_shared_one(tmp_path):
    trial = tt.create_trial(labelled_gradcam(str(tmp_path / "g")))
    vis = tt.vis.get("gradcam")()
    one = np.asarray(Image.open(vis.render(trial, str(tmp_path / "one.png"), max_images=1, cell=64)))
    both = np.asarray(Image.open(vis.render(trial, str(tmp_path / "both.png"), max_images=1, cell=64,
                                            normalise="both")))
    # three steps side by side, 4 px apart; with "both" each is a pair of cells 3 px apart
    assert one.shape[1] == 4 + 3 * (64 + 4) and both.shape[1] == 4 + 3 * (64 + 3 + 64 + 4)
    assert both.shape[0] == one.shape[0]
    band = one.shape[0] - 64 - 8  # caption height (4 px padding above and under the grid)
    img = both[4 + band:4 + band + 64].astype(int)
    heat = img[..., 0] - img[..., 2]  # red minus blue: jet's hot end
    shared, own = heat[:, 4:4 + 64], heat[:, 4 + 64 + 3:4 + 128 + 3]
    # step 0's peak is a third of the shared maximum (steps 0..2 peak at 1, 2, 3): its own scale shows it hot
    assert own.max() > shared.max() + 60, (shared.max(), own.max())
    assert np.unravel_index(own.argmax(), own.shape)[0] // 16 == HOT[0]  # the peak where the map peaks


# ---- t-SNE -------------------------------------------------------------------------------------------
def test_tsne_legend_beside_the_points_and_no_repeated_frame(tmp_path, monkeypatch):
    from tensortap.vis import embedding

    figs = []
    real = embedding.fig_to_rgb
    monkeypatch.setattr(embedding, "fig_to_rgb", lambda fig, dpi=100: figs.append(drawn(fig)) or real(fig, dpi))
    path = str(tmp_path / "e")
    hook = tt.Hook(path, include_collections=["losses"], save_config=tt.SaveConfig(save_interval=1))
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 20)
    z = rng.normal(size=(80, 8)) + y[:, None]
    for s in range(4):
        hook.begin_step(tt.modes.TRAIN)
        hook.save_tensor("latent", z * (1 + 0.3 * min(s, 2)), collections=["embeddings"])  # steps 2 and 3 alike
        hook.save_tensor("labels", y, collections=["labels"])
        hook.record_loss(1.0)
    hook.close()
    out = tt.vis.get("embedding")().render(tt.create_trial(path), str(tmp_path / "e.gif"), method="tsne", n_iter=250)
    with Image.open(out) as im:
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    assert len(frames) == 3, "the repeated step made a frame of its own"
    assert all(np.abs(frames[i].astype(int) - frames[i + 1]).sum() > 0 for i in range(2))
    assert [f.axes[0].get_title().rsplit(" ", 1)[-1] for f in figs] == ["0", "1", "2"]
    for fig in figs:
        ax = fig.axes[0]
        renderer = fig.tt_renderer
        lb = ax.get_legend().get_window_extent(renderer)
        assert lb.x0 >= ax.get_window_extent(renderer).x1, "the legend covers the plot"
        for c in ax.collections:
            pts = ax.transData.transform(c.get_offsets())
            assert not ((pts[:, 0] >= lb.x0) & (pts[:, 0] <= lb.x1) & (pts[:, 1] >= lb.y0) & (pts[:, 1] <= lb.y1)).any()
