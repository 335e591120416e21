"""Visualizers render real captured runs: sizes, non-blank pixels, colours at known places,
GIF frame counts, errors that name the fix; registry, CLI and Jupyter display."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

import tensortap as tt
from tensortap.cli import main as cli
from tensortap.errors import ConfigError
from tests.core.test_vis_runs import HOT, embedding_run, gradcam_run, mlp_run, pruning_run

BUILTIN = {"scalars", "distributions", "gradcam", "attention", "embedding"}
#: the core pruning plot takes the scalars' names from the plugin that saves them (here: given)
PRUNING = {"accuracy": "pruning/accuracy", "params": "pruning/params", "size_mb": "pruning/size_mb"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("vis-runs")
    return {
        "mlp": mlp_run(str(d / "mlp")),
        "mlp_hist": mlp_run(str(d / "mlp_hist"), steps=8, histograms=True),
        "gradcam": gradcam_run(str(d / "gradcam")),
        "embedding": embedding_run(str(d / "embedding")),
        "pruning": pruning_run(str(d / "pruning")),
    }


def rgb(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def non_white_share(a: np.ndarray) -> float:
    return float((a.sum(axis=2) < 3 * 245).mean())


def near(a: np.ndarray, colour, tol: int = 12) -> int:
    """How many pixels are within tol of colour."""
    return int((np.abs(a - np.array(colour)).max(axis=2) <= tol).sum())


def test_every_builtin_is_registered_with_options_and_a_description():
    assert BUILTIN <= set(tt.vis.list())
    for name in BUILTIN:
        cls = tt.vis.get(name)
        assert cls.name == name and cls.describe() and isinstance(cls.options(), dict)
    with pytest.raises(ConfigError, match='Did you mean "gradcam"'):
        tt.vis.get("gradcm")


def test_applies_to_matches_the_data_present(runs):
    applies = {k: {n for n in BUILTIN if tt.vis.get(n)().applies_to(tt.create_trial(p))} for k, p in runs.items()}
    assert applies["mlp"] == {"scalars", "distributions"}
    assert applies["gradcam"] == {"scalars", "gradcam"}
    assert applies["embedding"] == {"scalars", "embedding"}
    assert applies["pruning"] == {"scalars"}


def test_scalars_draws_train_and_eval_lines_and_marks_fired_rules(runs, tmp_path):
    trial = tt.create_trial(runs["mlp"])
    assert any(r["fired"] for r in trial.rule_results())
    out = tt.vis.get("scalars")().render(trial, str(tmp_path / "s.png"))
    a = rgb(out)
    assert a.shape[0] > 200 and a.shape[1] > 500 and non_white_share(a) > 0.02
    assert near(a, (31, 119, 180)) > 50, "no train line (tab:blue)"
    assert near(a, (255, 127, 14)) > 50, "no eval line (tab:orange)"
    plain = rgb(tt.vis.get("scalars")().render(trial, str(tmp_path / "s2.png"), mark_rules=False))
    redish = lambda x: int(((x[..., 0] > 200) & (x[..., 1] < 200) & (x[..., 2] < 200)).sum())  # noqa: E731
    assert redish(a) > redish(plain) + 50, "fired-rule steps are not marked"


def test_scalars_per_mode_step_counters(runs):
    from tensortap.vis.scalars import series

    trial = tt.create_trial(runs["mlp"])
    by_global, by_mode = series(trial, "loss"), series(trial, "loss", x="mode")
    assert list(by_mode["eval"][0]) == trial.steps(mode="eval") == [0, 1, 2, 3]
    assert list(by_global["eval"][0]) == [trial.global_step("eval", s) for s in range(4)]
    assert list(by_mode["train"][0]) == trial.steps(mode="train")
    assert np.array_equal(by_mode["eval"][1], by_global["eval"][1])


def test_scalars_overlays_several_runs(runs, tmp_path):
    one = rgb(tt.vis.get("scalars")().render(runs["mlp"], str(tmp_path / "one.png"), names="^loss$"))
    two = rgb(tt.vis.get("scalars")().render([runs["mlp"], runs["mlp_hist"]], str(tmp_path / "two.png"),
                                             names="^loss$"))
    assert one.shape == two.shape and (one != two).any()


def test_distributions_heatmap_from_values_and_from_histogram_reductions(runs, tmp_path):
    from tensortap.vis.distributions import _hist_sources, histogram_matrix

    trial = tt.create_trial(runs["mlp"])
    out = tt.vis.get("distributions")().render(trial, str(tmp_path / "d.png"), tensors=r"fc1\.weight")
    a = rgb(out)
    assert non_white_share(a) > 0.2
    steps = trial.tensor("fc1.weight").steps()
    mat, edges, st = histogram_matrix(_hist_sources(trial, "fc1.weight", steps), bins=20)
    assert st == steps and np.all(mat.sum(axis=0) == trial.tensor("fc1.weight").value(steps[0]).size)
    assert tt.vis.get("distributions")()._names(trial, None, 4) == [
        "fc1.weight", "gradients/fc1.weight", "fc1.bias", "gradients/fc1.bias"]  # each parameter, then its gradient
    h = tt.create_trial(runs["mlp_hist"])  # only "mean" and "histogram" reductions were saved
    out2 = tt.vis.get("distributions")().render(h, str(tmp_path / "d2.png"))
    assert non_white_share(rgb(out2)) > 0.2
    with pytest.raises(ConfigError, match="tensors=REGEX"):
        tt.vis.get("distributions")().render(trial, str(tmp_path / "x.png"), tensors="^nothing$")


def _cell_pixel(a, row, col, y, x, cell=64, band=28, pad=4):
    return a[pad + row * (band + cell + pad) + band + y, pad + col * (cell + pad) + x]


def test_gradcam_grid_has_images_by_steps_and_the_hot_spot_where_the_map_peaks(runs, tmp_path):
    trial = tt.create_trial(runs["gradcam"])
    out = tt.vis.get("gradcam")().render(trial, str(tmp_path / "g.png"), cell=64)
    a = rgb(out)
    # 3 images (rows) x 3 steps (columns), 64 px cells under a 28 px caption band, 4 px gaps
    assert a.shape == (4 + 3 * (28 + 64 + 4), 4 + 3 * (64 + 4), 3)
    hy, hx = int((HOT[0] + 0.5) * 16), int((HOT[1] + 0.5) * 16)  # the 4x4 map's peak cell, in a 64 px cell
    last = _cell_pixel(a, 0, 2, hy, hx)
    first = _cell_pixel(a, 0, 0, hy, hx)
    corner = _cell_pixel(a, 0, 2, 60, 4)
    assert last[0] > 100 and last[0] > last[1] + 40 and last[0] > last[2] + 40, f"peak not red: {last}"
    assert corner[2] > corner[0] + 30, f"cold corner not blue: {corner}"
    # raw maps share one scale: the map grows over training, so step 0's peak is cooler than the last's
    assert abs(int(first[0]) - int(last[0])) > 30
    per_image = rgb(tt.vis.get("gradcam")().render(trial, str(tmp_path / "gi.png"), cell=64, normalise="image"))
    assert np.abs(_cell_pixel(per_image, 0, 0, hy, hx) - _cell_pixel(per_image, 0, 2, hy, hx)).max() <= 6


def test_gradcam_gif_has_one_frame_per_step_and_options_are_checked(runs, tmp_path):
    trial = tt.create_trial(runs["gradcam"])
    out = tt.vis.get("gradcam")().render(trial, str(tmp_path / "g.gif"), max_images=2, cell=48)
    im = Image.open(out)
    assert im.format == "GIF" and im.n_frames == 3
    assert im.size == (4 + 2 * (48 + 4), 4 + 28 + 48 + 4)
    with pytest.raises(ConfigError, match="Layers with maps: layer4"):
        tt.vis.get("gradcam")().render(trial, str(tmp_path / "x.png"), layer="layer5")
    with pytest.raises(ConfigError, match="extension"):
        tt.vis.get("gradcam")().render(trial, str(tmp_path / "x.html"))


def test_embedding_tsne_gif_one_frame_per_step_coloured_by_label(runs, tmp_path):
    trial = tt.create_trial(runs["embedding"])
    out = tt.vis.get("embedding")().render(trial, str(tmp_path / "e.gif"), n_iter=250, perplexity=10)
    im = Image.open(out)
    assert im.n_frames == len(trial.steps())
    im.seek(im.n_frames - 1)
    last = np.asarray(im.convert("RGB")).astype(int)
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)):  # tab10, 4 labels
        blended = tuple(0.85 * c + 0.15 * 255 for c in colour)  # points are drawn with alpha 0.85
        assert near(last, blended, 25) > 5, f"no points of colour {colour}"


def test_embedding_frames_are_warm_started_so_points_move_little(runs):
    from tensortap.vis.embedding import _TSNE, procrustes

    trial = tt.create_trial(runs["embedding"])
    x0, x1 = (np.asarray(trial.tensor("latent").value(s), np.float64) for s in trial.steps()[-2:])
    tsne = _TSNE(perplexity=10, n_iter=250, seed=0)
    y0 = procrustes(tsne(x0, None), None)
    warm = procrustes(tsne(x1, y0), y0)
    cold = procrustes(_TSNE(perplexity=10, n_iter=250, seed=7)(x1, None), y0)
    scale = np.linalg.norm(y0, axis=1).mean()
    d_warm = np.linalg.norm(warm / np.linalg.norm(warm, axis=1).mean() - y0 / scale, axis=1).mean()
    d_cold = np.linalg.norm(cold / np.linalg.norm(cold, axis=1).mean() - y0 / scale, axis=1).mean()
    assert d_warm < 0.5 * d_cold, (d_warm, d_cold)


def test_embedding_pca_png_and_sample_limit(runs, tmp_path):
    trial = tt.create_trial(runs["embedding"])
    out = tt.vis.get("embedding")().render(trial, str(tmp_path / "e.png"), method="pca", max_points=30)
    a = rgb(out)
    assert a.shape[1] > 300 and non_white_share(a) > 0.01
    with pytest.raises(ConfigError, match="umap"):
        tt.vis.get("embedding")().render(trial, str(tmp_path / "u.png"), method="umapp")


def test_embedding_with_scikit_learn_backend():
    from tensortap.vis.embedding import _TSNE

    x = np.random.default_rng(0).standard_normal((30, 5))
    t = _TSNE(perplexity=5, n_iter=250, seed=0)
    t.backend = "sklearn"  # the fallback when openTSNE is absent (max_iter on scikit-learn >= 1.5)
    y = t(x, x[:, :2].copy())
    assert y.shape == (30, 2) and np.isfinite(y).all()


def test_pruning_plots_accuracy_against_parameters(runs, tmp_path):
    from tensortap.vis.pruning import PruningVisualizer, pruning_table

    trial = tt.create_trial(runs["pruning"])
    tab = pruning_table(trial, PRUNING)
    assert len(tab["params"]) == 5 and np.all(np.diff(tab["params"]) < 0)
    assert not PruningVisualizer().applies_to(trial)  # the core hard-codes no plugin's scalar names
    a = rgb(PruningVisualizer().render(trial, str(tmp_path / "p.png"), **PRUNING))
    assert a.shape[1] > 1000 and near(a, (31, 119, 180)) > 100
    header, rows = type("Named", (PruningVisualizer,), {"scalars": PRUNING})().table(trial)
    assert header[2:] == ["parameters", "size (MB)", "accuracy"] and len(rows) == 5
    assert rows[0][2] == f"{tab['params'][0]:,.0f}" and rows[-1][4] == f"{tab['accuracy'][-1]:.4f}"
    with pytest.raises(ConfigError, match="pruning/accuracy"):
        PruningVisualizer().render(tt.create_trial(runs["mlp"]), str(tmp_path / "x.png"), **PRUNING)
    with pytest.raises(ConfigError, match="name the accuracy scalar"):
        PruningVisualizer().render(trial, str(tmp_path / "y.png"))


def test_cli_vis_list_render_and_bad_option(runs, tmp_path, capsys):
    assert cli(["vis", "list"]) == 0
    assert "gradcam" in capsys.readouterr().out
    out = tmp_path / "cli.gif"
    assert cli(["vis", "gradcam", runs["gradcam"], "--out", str(out), "--opt", "max_images=1",
                "--opt", "normalise=image"]) == 0
    assert Image.open(out).n_frames == 3
    assert cli(["vis", "gradcam", runs["gradcam"], "--out", str(out), "--opt", "max_imgs=1"]) == 2
    err = capsys.readouterr().err
    assert "max_imgs" in err and 'Did you mean "max_images"' in err
    assert cli(["vis", "scalars", runs["mlp"], runs["mlp_hist"], "--out", str(tmp_path / "s.png")]) == 0


def test_results_display_in_jupyter(runs, tmp_path):
    from tensortap.vis.pruning import PruningVisualizer

    png = PruningVisualizer().render(runs["pruning"], str(tmp_path / "p.png"), **PRUNING)
    assert isinstance(png, str) and png._repr_png_()[:4] == b"\x89PNG" and png._repr_html_() is None
    gif = tt.vis.get("gradcam")().render(runs["gradcam"], str(tmp_path / "g.gif"))
    assert gif._repr_png_() is None and gif._repr_html_().startswith('<img src="data:image/gif;base64,')
    shown = tt.vis.get("gradcam")().show(runs["gradcam"])
    data = shown.data if hasattr(shown, "data") else open(shown, "rb").read()  # IPython Image, or the path
    assert Image.open(io.BytesIO(data)).size[0] > 100
    if not hasattr(shown, "data"):
        os.remove(shown)


def test_fast_histogram_counts_equal_numpy_histogram():
    from tensortap.vis._common import fast_histogram

    rng = np.random.default_rng(1)
    for i in range(60):
        x = (rng.standard_normal(int(rng.integers(1, 3000))) * 10 ** rng.uniform(-6, 6))
        x = x.astype(np.float32 if i % 2 else np.float64)
        if i % 3 == 0:
            x = np.round(x, 1)
        bins = int(rng.integers(1, 80))
        counts, edges, (mn, mx, n, total, sq) = fast_histogram(x, bins)
        f = x.astype(np.float64)
        rng_ = (f.min(), f.max()) if f.max() > f.min() else (f.min() - 0.5, f.max() + 0.5)
        ref, ref_edges = np.histogram(f, bins=bins, range=rng_)
        assert np.array_equal(counts, ref) and np.allclose(edges, ref_edges)
        assert (mn, mx, n) == (f.min(), f.max(), f.size) and np.isclose(total, f.sum())
    counts, _, stats = fast_histogram(np.array([1.0, np.nan, np.inf, 3.0]), 2)
    assert list(counts) == [1, 1] and stats[2] == 2
