"""`tensortap serve` in a real headless Chromium: the page follows a training process live (new
steps and a rule firing show within 2 s, no reload), no console error, nothing fetched from
another origin, the token enforced, hostile names shown as text, bad runs explained, the Grad-CAM
and attention viewers drawing what was captured. Screenshots go to artifacts/serve/."""
from __future__ import annotations

import json
import os
import time

import numpy as np

import tensortap as tt
from tensortap.rules import Rule
from tensortap.serve import Server
from tensortap.store import layout
from tests.core.test_vis_pictures import labelled_gradcam
from tests.core.test_vis_runs import HOT, TOKENS, attention_run, mlp_run, pruning_run
from tests.core.tt_browser import ARTIFACTS, browser, needs_chromium  # noqa: F401 - fixture
from tests.core.tt_serve_helpers import Writer, run_ids

SHOTS = os.path.join(ARTIFACTS, "serve")
LIVE_LIMIT = 2.0  # seconds from a step on disk to the page showing it


def page_problems(r: dict, origin: str) -> list:
    """Console output, exceptions, error log entries, requests to any other origin, 5xx answers."""
    return ([f"request to another origin: {u}" for u in r["requests"] if not u.startswith(origin)]
            + [f"HTTP {s}: {u}" for u, s in r["responses"] if s >= 500]
            + [f"console.{t}: {m}" for t, m in r["console"]]
            + [f"exception: {x}" for x in r["exceptions"]]
            + [f"log {x}" for x in r["log"] if not x.startswith(("verbose", "info"))])


def origin(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}/"


def finish(browser, r: dict, server: Server, shot: str) -> None:
    """Keep a screenshot of the tab, then check it did nothing wrong since it opened."""
    browser.screenshot(r["session"], os.path.join(SHOTS, shot + ".png"))
    probs = page_problems(browser.collect(r["session"], r["start"]), origin(server))
    assert probs == [], probs


def text(browser, sid: str) -> str:
    return browser.evaluate(sid, "document.body.innerText")


@needs_chromium
def test_the_page_follows_a_training_process_live(browser, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    w = Writer(str(root / "training"))
    try:
        w.advance(5)
        with Server(str(root)) as s:
            rid = run_ids(s.url)["training"]
            r = browser.open(s.url, settle=0.5)
            sid = r["session"]
            browser.wait_for(sid, "document.querySelector('tr.run td.steps')?.textContent === '5 (0–4)'")
            # the runs list follows new steps without a reload
            t_disk = w.advance(9)
            _, waited = browser.wait_for(sid, "document.querySelector('tr.run td.steps')?.textContent === '9 (0–8)'")
            assert time.monotonic() - t_disk < LIVE_LIMIT, f"runs list took {time.monotonic() - t_disk:.2f} s"
            assert browser.evaluate(sid, "location.hash") in ("", "#/"), "the page navigated"
            browser.screenshot(sid, os.path.join(SHOTS, "live_runs.png"))
            # the run's page: steps and a rule firing appear within 2 s
            browser.evaluate(sid, f"location.hash = '#/run/{rid}'")
            browser.wait_for(sid, "document.querySelector('.rulesum')?.textContent.includes('0 fired')")
            browser.wait_for(sid, "document.querySelectorAll('#scalars .card').length >= 2")
            marker = "document.documentElement.dataset.ttMarker = 'same page'"
            browser.evaluate(sid, marker)
            t_disk = w.advance(14)
            browser.wait_for(sid, "document.querySelector('dl.facts dd')?.textContent.startsWith('14 ')")
            assert time.monotonic() - t_disk < LIVE_LIMIT
            t_disk = w.advance(17, low=True)  # accuracy falls below the floor: the live rule fires
            _, waited = browser.wait_for(
                sid, "document.querySelectorAll('#rules .strip rect.o-fired').length > 0 && "
                     "document.querySelector('.rulesum')?.textContent.includes('3 fired') && "
                     "document.querySelectorAll('#scalars line.vline').length >= 3")
            latency = time.monotonic() - t_disk
            assert latency < LIVE_LIMIT, f"the firing took {latency:.2f} s to show"
            assert browser.evaluate(sid, "document.documentElement.dataset.ttMarker") == "same page", "reloaded"
            body = text(browser, sid)
            assert "accuracy_floor" in body and "accuracy 0.300 < 0.5" in body
            # the accuracy plot draws the points written (every step, train mode)
            n = browser.evaluate(sid, "document.querySelector('#scalars .card[data-name=\"accuracy\"] path.series')"
                                      ".getAttribute('d').split(/[ML]/).filter(Boolean).length")
            assert n == 17
            browser.screenshot(sid, os.path.join(SHOTS, "live_run_fired.png"))
            # the writer dies without closing: the page says so
            w.kill()
            browser.wait_for(sid, "document.querySelector('.runhead .badge')?.textContent === 'writer gone'", timeout=5)
            probs = page_problems(browser.collect(sid, r["start"]), origin(s))
            assert probs == [], probs
    finally:
        w.kill()


@needs_chromium
def test_the_token_is_enforced(browser, tmp_path):
    mlp_run(str(tmp_path / "runs" / "a"), steps=3)
    with Server(str(tmp_path / "runs"), token="tok-xyz") as s:
        base = origin(s)
        for url in (base, base + "?token=wrong"):
            r = browser.open(url, settle=0.3)
            assert "needs its access token" in text(browser, r["session"])
            assert (url, 401) in r["responses"]
            assert "Runs" not in text(browser, r["session"])
        r = browser.open(base + "?token=tok-xyz", settle=0.3)
        sid = r["session"]
        browser.wait_for(sid, "document.querySelectorAll('tr.run').length === 1")
        # the page's own requests carry the cookie the token set; so does a new tab
        assert browser.evaluate(sid, "document.cookie") == "", "the token cookie must be HttpOnly"
        r2 = browser.open(base, settle=0.3)
        browser.wait_for(r2["session"], "document.querySelectorAll('tr.run').length === 1")
        assert page_problems(r, base) == [] and page_problems(r2, base) == []
        browser.screenshot(sid, os.path.join(SHOTS, "token_ok.png"))


HOSTILE = '<img src=x onerror="window.__pwned=1">'


class Evil(Rule):
    """A rule whose name and message are HTML."""

    name = "evil_rule<svg onload=window.__pwned=2>"

    def invoke_at_step(self, trial, step):
        return True, "<script>window.__pwned=3</script><b>bold?</b>"


def hostile_runs(root) -> str:
    """Runs whose names, tensor names, rule messages and tokens are HTML that would run if unescaped."""
    path = os.path.join(root, HOSTILE)
    hook = tt.Hook(path, include_collections=["scalars"], save_config=tt.SaveConfig(save_interval=1))
    hook.add_rule(Evil())
    for s in range(4):
        hook.begin_step(tt.modes.TRAIN)
        hook.save_scalar("<script>window.__pwned=4</script>", float(s))
        hook.save_tensor('"><img src=x onerror=window.__pwned=5>', np.arange(3.0) + s, collections=["weights"])
    hook.close()
    attention_run(os.path.join(root, "attention"))
    return path


@needs_chromium
def test_hostile_names_and_values_are_shown_as_text(browser, tmp_path):
    hostile_runs(str(tmp_path / "runs"))
    with Server(str(tmp_path / "runs")) as s:
        ids = run_ids(s.url)
        r = browser.open(s.url, settle=0.3)
        sid = r["session"]
        browser.wait_for(sid, "document.querySelectorAll('tr.run').length === 2")
        assert HOSTILE in text(browser, sid)
        for frag in (f"#/run/{ids[HOSTILE]}", f"#/run/{ids['attention']}",
                     f"#/compare?runs={ids[HOSTILE]},{ids['attention']}"):
            browser.evaluate(sid, f"location.hash = {json.dumps(frag)}")
            browser.wait_for(sid, "!document.querySelector('main').innerText.includes('Loading')")
            time.sleep(1.0)
            assert browser.evaluate(sid, "window.__pwned === undefined"), frag
            assert browser.evaluate(sid, "document.querySelectorAll('main script, main img, main [onerror], "
                                         "main [onload]').length") == 0, frag
            assert not browser.evaluate(sid, "[...document.querySelectorAll('main b')]"
                                             ".some(b => b.textContent === 'bold?')")
        browser.evaluate(sid, f"location.hash = '#/run/{ids[HOSTILE]}'")
        browser.wait_for(sid, "document.querySelectorAll('#rules .strip').length === 1")
        body = text(browser, sid)
        assert "<script>window.__pwned=3</script><b>bold?</b>" in body
        assert "evil_rule<svg onload=window.__pwned=2>" in body
        assert "<script>window.__pwned=4</script>" in body
        browser.screenshot(sid, os.path.join(SHOTS, "hostile_run.png"))
        browser.evaluate(sid, f"location.hash = '#/run/{ids['attention']}'")
        browser.wait_for(sid, "document.querySelectorAll('#attention canvas.att').length === 6")
        assert browser.evaluate(sid, "window.__pwned === undefined")
        assert " · ".join(TOKENS) in text(browser, sid)
        finish(browser, r, s, "attention")


@needs_chromium
def test_a_bad_run_shows_a_clear_message_in_the_page(browser, tmp_path):
    root = tmp_path / "runs"
    mlp_run(str(root / "good"), steps=2)
    future = root / "future"
    (future / layout.WORKERS_DIR).mkdir(parents=True)
    (future / layout.RUN_MARKER).write_text(json.dumps({"format": "tensortap-run", "format_version": 99}))
    torn = root / "torn"
    mlp_run(str(torn), steps=3)
    idx = torn / layout.WORKERS_DIR / "worker-0" / layout.index_file(0)
    data = bytearray(idx.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64  # damage in the middle of the index
    idx.write_bytes(bytes(data))
    with Server(str(root)) as s:
        ids = run_ids(s.url)
        r = browser.open(s.url, settle=0.3)
        sid = r["session"]
        browser.wait_for(sid, "document.querySelectorAll('tr.run').length === 3")
        body = text(browser, sid)
        assert "store format 99" in body and "Upgrade tensortap" in body
        browser.evaluate(sid, f"location.hash = '#/run/{ids['future']}'")
        browser.wait_for(sid, "document.querySelector('main .err')?.textContent.includes('store format 99')")
        browser.screenshot(sid, os.path.join(SHOTS, "bad_run.png"))
        browser.evaluate(sid, f"location.hash = '#/run/{ids['torn']}'")
        browser.wait_for(sid, "document.querySelector('.runhead .err')?.textContent.includes('skipped damaged data')")
        assert "Traceback" not in text(browser, sid)
        assert page_problems(browser.collect(sid, r["start"]), origin(s)) == []


@needs_chromium
def test_gradcam_viewer_draws_maps_on_the_images_with_labels(browser, tmp_path):
    labelled_gradcam(str(tmp_path / "runs" / "cam"), class_names=("stop", "yield", "<b>speed</b>"))
    with Server(str(tmp_path / "runs")) as s:
        rid = run_ids(s.url)["cam"]
        r = browser.open(s.url + f"#/run/{rid}", settle=0.3)
        sid = r["session"]
        browser.wait_for(sid, "document.querySelectorAll('#gradcam canvas.cam').length === 2")
        caps = browser.evaluate(sid, "[...document.querySelectorAll('#gradcam figcaption')].map(f => f.innerText)")
        assert caps[0].split("\n") == ["true: yield", "pred: yield 90%"]
        assert caps[1].split("\n") == ["true: stop", "pred: <b>speed</b> 60%"]
        # the hot feature-map cell is red on the overlay, a far corner is blue
        px = """(() => { const src = document.querySelector('#gradcam canvas.cam');
                  const c = document.createElement('canvas');
                  c.width = src.width; c.height = src.height;
                  const x = c.getContext('2d', {willReadFrequently: true}); x.drawImage(src, 0, 0);
                  const s = c.width / 16, at = (r, q) => [...x.getImageData((q + 0.5) * s, (r + 0.5) * s, 1, 1).data];
                  return [at(%d, %d), at(15, 0)]; })()""" % (HOT[0] * 4 + 2, HOT[1] * 4 + 2)
        hot, cold = browser.evaluate(sid, px)
        assert hot[0] > 150 and hot[2] < 120, hot
        assert cold[2] > cold[0], cold
        # per-image scaling: the earliest step's map gets its own full range
        browser.evaluate(sid, "(() => { const s = document.querySelector('#gradcam input[type=range]'); s.value = 0; "
                              "s.dispatchEvent(new Event('input')); })()")
        browser.wait_for(sid, "document.querySelector('#gradcam .bar span')?.textContent.includes('step 0')")
        shared = browser.evaluate(sid, px)[0]
        browser.evaluate(sid, "(() => { const s = document.querySelector('#gradcam select[aria-label=normalisation]');"
                              " s.value = 'image'; s.dispatchEvent(new Event('change')); })()")
        browser.wait_for(sid, "document.querySelector('#gradcam .cbarbox')?.innerText.includes('per image')")
        assert "step 0" in browser.evaluate(sid, "document.querySelector('#gradcam .bar').innerText")
        own = browser.evaluate(sid, px)[0]
        assert own[0] > shared[0] + 20, (shared, own)  # step 0's peak is 1/3 of the shared maximum
        finish(browser, r, s, "gradcam")


@needs_chromium
def test_compare_overlays_runs_and_plots_accuracy_against_parameters(browser, tmp_path):
    root = tmp_path / "runs"
    pruning_run(str(root / "resnet"), iterations=5)
    pruning_run(str(root / "alexnet"), iterations=3)
    with Server(str(root)) as s:
        ids = run_ids(s.url)
        r = browser.open(s.url + f"#/compare?runs={ids['resnet']},{ids['alexnet']}", settle=0.3)
        sid = r["session"]
        browser.wait_for(sid, "document.querySelectorAll('.card[data-name=xy] path.series').length === 2")
        colours = browser.evaluate(sid, "[...document.querySelectorAll('.card[data-name=xy] path.series')]"
                                        ".map(p => p.getAttribute('stroke'))")
        assert len(set(colours)) == 2
        sel = browser.evaluate(sid, "[...document.querySelectorAll('select[aria-label$=scalar]')].map(s => s.value)")
        assert sel == ["pruning/params", "pruning/accuracy"]
        pts = browser.evaluate(sid, "document.querySelectorAll('.card[data-name=xy] circle').length")
        assert pts == 8
        finish(browser, r, s, "compare")
