"""`tensortap report`: one self-contained page (summary, rules, every visualizer that applies),
checked in headless Chromium: no console errors, no network requests, images decode; a
screenshot goes to artifacts/."""
from __future__ import annotations

import os
import re

import pytest

import tensortap as tt
from tensortap.cli import main as cli
from tensortap.report import build_report
from tensortap.testing.fixtures import tt_new_run_url
from tests.core.test_report_browser import ARTIFACTS, browser, needs_chromium, problems  # noqa: F401
from tests.core.test_vis_runs import attention_run, gradcam_run, mlp_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("report-runs")
    return {"mlp": mlp_run(str(d / "mlp")), "attention": attention_run(str(d / "att"), steps=2),
            "gradcam": gradcam_run(str(d / "gc"))}


@pytest.fixture(scope="module", params=["local", "s3"])
def mlp_url(request):
    """The mlp run of `runs`, written once locally and once to s3://… (moto)."""
    return mlp_run(tt_new_run_url(request, request.param, "report-mlp"))


def test_report_lists_the_run_the_rules_and_each_applicable_visualizer(mlp_url, tmp_path):
    trial = tt.create_trial(mlp_url)
    out = build_report(trial, str(tmp_path / "r.html"))
    page = open(out, encoding="utf-8").read()
    assert "numpy" in page and f"{len(trial.steps())} saved" in page and "worker" in page
    for coll in ("weights", "gradients", "losses", "scalars"):
        assert f"<td>{coll}</td>" in page
    fired = [r for r in trial.rule_results() if r["fired"]]
    assert fired and "test_loss_above" in page and f"fired {len(fired)}×" in page
    assert re.search(r"loss \d\.\d{3} &gt; 1\.2", page)  # the why, escaped
    assert 'id="vis-scalars"' in page and 'id="vis-distributions"' in page
    assert 'id="vis-gradcam"' not in page and 'id="vis-attention"' not in page  # no such data in this run
    assert page.count('src="data:image/png;base64,') >= 2
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)


def test_a_failing_visualizer_is_reported_in_the_page_with_keep_going(runs, tmp_path, monkeypatch):
    from tensortap.plugins import get_registry
    from tests.core.test_report_safety import Broken

    monkeypatch.setitem(get_registry().visualizers, "broken_for_test", Broken)
    page = open(build_report(runs["gradcam"], str(tmp_path / "r.html"), keep_going=True), encoding="utf-8").read()
    assert "broken_for_test failed: RuntimeError: kaput" in page and 'id="vis-gradcam"' in page


def test_cli_report_with_options_and_skip(mlp_url, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert cli(["report", mlp_url, "--out", str(out), "--skip", "distributions",
                "--opt", "scalars.smooth=0.5"]) == 0
    page = out.read_text()
    assert 'id="vis-scalars"' in page and 'id="vis-distributions"' not in page
    assert cli(["report", mlp_url, "--out", str(out), "--opt", "smooth=0.5"]) == 2
    assert "VISUALIZER.KEY=VALUE" in capsys.readouterr().err


@needs_chromium
@pytest.mark.parametrize("which", ["mlp", "attention", "gradcam"])
def test_report_loads_in_chromium_without_errors_or_network(runs, which, browser, tmp_path):  # noqa: F811
    out = build_report(runs[which], str(tmp_path / f"report-{which}.html"))
    shot = os.path.join(ARTIFACTS, f"report-{which}.png")
    r = browser.open("file://" + os.path.abspath(out), settle=1.0, screenshot=shot)
    assert problems(r) == []
    ev = lambda js: browser.evaluate(r["session"], js)  # noqa: E731
    n_img = ev("document.images.length")
    assert n_img >= 1 and ev("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    if which == "attention":  # the head view runs inside the report too (a sandboxed srcdoc iframe)
        assert ev("document.querySelectorAll('iframe').length") == 1 and len(r["frames"]) == 1
        assert browser.evaluate(r["frames"][0], "document.querySelectorAll('svg line').length") > 0
    from PIL import Image

    im = Image.open(shot)
    assert im.size[0] >= 1000 and im.size[1] > 900
    assert len(set(im.convert("L").resize((64, 64)).getdata())) > 10  # not a blank screenshot
