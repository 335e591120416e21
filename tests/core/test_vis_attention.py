"""The attention head view: one self-contained offline HTML file that works in a real browser
(Chromium), escapes token strings, and offers layer/head/example selectors and a step slider;
and the static layers x heads heat-map grid."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

import tensortap as tt
from tensortap.errors import ConfigError
from tests.core.test_report_browser import browser, needs_chromium, problems  # noqa: F401 - fixture
from tests.core.test_vis_runs import TOKENS, attention_run

LAYERS = ["encoder.layer0", "encoder.layer5", "encoder.layer10"]  # natural order


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return attention_run(str(tmp_path_factory.mktemp("att") / "run"), steps=3, layers=3, heads=2, batch=2)


@pytest.fixture(scope="module")
def page(run, tmp_path_factory):
    return tt.vis.get("attention")().render(run, str(tmp_path_factory.mktemp("att-out") / "heads.html"))


def test_page_is_self_contained_and_tokens_never_appear_as_markup(page):
    src = open(page, encoding="utf-8").read()
    assert src.count("<script") == 2 and src.count("</script>") == 2  # our data block and our code, nothing else
    assert not re.search(r"""(src|href)\s*=|<link|@import|url\(|https?://(?!www\.w3\.org/2000/svg)""", src)
    assert "alert(1)" in src and "<script>alert" not in src and "\\u003cscript\\u003e" in src
    assert "Content-Security-Policy" in src


@needs_chromium
def test_head_view_runs_in_chromium_offline_with_selectors_and_slider(browser, page):  # noqa: F811
    r = browser.open("file://" + page, settle=0.5)
    assert problems(r) == []
    ev = lambda js: browser.evaluate(r["session"], js)  # noqa: E731
    tokens = ev("[...document.querySelectorAll('text.tt-token')].map(t => t.textContent)")
    assert tokens[:len(TOKENS)] == TOKENS and "<script>" in tokens  # shown as text
    assert ev("document.scripts.length") == 2 and ev("document.querySelectorAll('svg script').length") == 0
    assert ev("[...document.querySelectorAll('select')[0].options].map(o => o.text)") == LAYERS
    assert ev("document.querySelectorAll('select').length") == 2  # layer + example (batch 2)
    assert ev("document.querySelectorAll('.tt-head input').length") == 2
    both = ev("document.querySelectorAll('svg line').length")
    assert both > 0
    ev("document.querySelector('.tt-head input').click()")  # hide head 0
    one = ev("document.querySelectorAll('svg line').length")
    assert 0 < one < both
    assert ev("document.querySelector('.tt-steplabel').textContent").startswith("step 2 ")
    opac = ev("[...document.querySelectorAll('svg line')].map(l => l.getAttribute('stroke-opacity')).join()")
    ev("var s = document.querySelector('input[type=range]'); s.value = '0'; s.dispatchEvent(new Event('input'))")
    assert ev("document.querySelector('.tt-steplabel').textContent").startswith("step 0 ")
    assert ev("[...document.querySelectorAll('svg line')].map(l => l.getAttribute('stroke-opacity')).join()") != opac
    ev("var l = document.querySelectorAll('select')[0]; l.value = '2'; l.dispatchEvent(new Event('change'))")
    assert ev("document.querySelectorAll('svg line').length") > 0


def test_line_weights_are_the_stored_attention(run, page):
    """The page's data decodes back to the stored attention (to 1/255)."""
    import base64
    import json

    src = open(page, encoding="utf-8").read()
    blob = re.search(r'<script id="tt-data" type="application/json">(.*?)</script>', src, re.S).group(1)
    data = json.loads(blob)
    assert data["layers"] == LAYERS and data["steps"] == [0, 1, 2] and data["examples"] == [0, 1]
    rec = data["data"][1][2]  # step 1, layer10
    q8 = np.frombuffer(base64.b64decode(rec["b64"]), np.uint8).reshape(rec["shape"])
    stored = tt.create_trial(run).tensor("attention/encoder.layer10").value(1)
    assert np.abs(q8 / 255.0 - stored).max() <= 0.5 / 255 + 1e-6


def test_heatmap_grid_png_layers_by_heads(run, tmp_path):
    out = tt.vis.get("attention")().render(run, str(tmp_path / "grid.png"), step=1, example=1)
    a = np.asarray(Image.open(out).convert("RGB"))
    assert a.shape[0] > 300 and (a.sum(axis=2) < 600).mean() > 0.2  # mostly drawn maps (viridis is dark)
    with pytest.raises(ConfigError, match="saved steps"):
        tt.vis.get("attention")().render(run, str(tmp_path / "x.png"), step=99)
    with pytest.raises(ConfigError, match="no attention maps"):
        tt.vis.get("attention")().render(run, str(tmp_path / "x.html"), layers="decoder")
