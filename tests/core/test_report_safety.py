"""The report treats every run as a stranger's: a crafted run (markup in a rule's step, name and
message, in tensor and collection names, in events and metadata) runs no script in headless
Chromium; the page's CSP allows no inline script but the visualizers' own, by hash, and blocks
one that slips in; a tensor name with a lone surrogate renders escaped. A failed section makes
`tensortap report` say so and exit non-zero (`--keep-going` writes the rest); a missing
optional package (matplotlib, simulated in a subprocess) is one line naming the extra."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import tensortap as tt
from tensortap.cli import main as cli
from tensortap.report import ReportError, build_report
from tensortap.testing import NumpyMLP, make_data
from tensortap.vis import Visualizer
from tests.core.test_report_browser import browser, needs_chromium, problems  # noqa: F401
from tests.core.test_vis_runs import attention_run, mlp_run

MARK = "TT-PWNED"
X = f"<script>console.log('{MARK}');window.ttPwned=1</script><img src=x onerror=\"console.log('{MARK}')\">"


def hostile_run(path: str, prefix: str = "w") -> str:
    """A real (numpy MLP) run whose every text field a stranger controls carries markup (and
    one tensor name starting with `prefix`)."""
    hook = tt.Hook(path, include_collections=["weights", "losses"], save_config=tt.SaveConfig(save_interval=1))
    model = NumpyMLP()
    hook.register(model)
    hook.register_loss(model)
    x, y = make_data(64, seed=1)
    for _ in range(3):
        model.train_step(x, y, lr=0.1)
        hook.save_tensor(prefix + X, np.ones(3), collections=["c" + X])
    w = hook.writer
    w.update_meta(hostname=X, python=X)
    w.submit_record({"type": "rule", "rule": "r" + X, "step": X, "fired": True, "message": X, "time": time.time()})
    w.submit_record({"type": "rules", "time": time.time(), "fields": ["rule", "step", "fired", "message"],
                     "results": [[X, X, True, X]]})
    w.submit_record({"type": "event", "event": X, "what": X, "error": X, "detail": X, "time": time.time()})
    hook.close()
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return hostile_run(str(tmp_path_factory.mktemp("hostile") / "run"))


def script_src(page: str) -> str:
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1)
    return re.search(r"script-src ([^;]*)", csp).group(1)


def test_every_value_of_a_hostile_run_is_escaped_and_surrogates_render(tmp_path):
    """A lone surrogate (JSON "\\udc80" in a name) and markup everywhere: the report renders all of it as text."""
    run = hostile_run(str(tmp_path / "run"), prefix="w\udc80")
    out = tmp_path / "r.html"
    assert cli(["report", run, "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert MARK in page  # the text is there ...
    assert "<script" not in page and "<img src=x" not in page  # ... never as markup
    assert "w\\udc80&lt;script&gt;" in page  # the lone surrogate, escaped
    assert script_src(page) == "'none'"  # no embedded page here: no script may run at all


@needs_chromium
def test_a_hostile_run_runs_no_script_in_chromium(hostile, browser, tmp_path):  # noqa: F811
    out = build_report(hostile, str(tmp_path / "r.html"))
    r = browser.open("file://" + os.path.abspath(out), settle=1.0)
    assert problems(r) == []  # no console message (the injected code logs one), no error, no request
    assert browser.evaluate(r["session"], "typeof window.ttPwned") == "undefined"
    shown = browser.evaluate(r["session"], "document.body.innerText")
    assert MARK in shown and "<script>" in shown  # shown as text


@needs_chromium
def test_the_csp_blocks_a_script_that_slips_past_escaping(hostile, browser, tmp_path):  # noqa: F811
    """Defence in depth: a script injected into the page (an escaping bug) still does not run."""
    page = open(build_report(hostile, str(tmp_path / "r.html")), encoding="utf-8").read()
    assert "unsafe-inline" not in script_src(page)
    bad = tmp_path / "injected.html"
    bad.write_text(page.replace("<h2>Rules</h2>", f"<h2>Rules</h2>{X}"), encoding="utf-8")
    r = browser.open(bad.as_uri(), settle=1.0)
    assert not any(MARK in m for _, m in r["console"]), r["console"]
    assert browser.evaluate(r["session"], "typeof window.ttPwned") == "undefined"
    assert any("Content Security Policy" in x for x in r["log"]), r  # refused, and said so


@needs_chromium
def test_the_attention_view_runs_in_the_report_and_only_its_own_script(browser, tmp_path):  # noqa: F811
    run = attention_run(str(tmp_path / "att"), steps=2)
    page = open(build_report(run, str(tmp_path / "r.html")), encoding="utf-8").read()
    src = script_src(page)
    assert src.startswith("'sha256-") and src.count("'sha256-") == 1 and "unsafe-inline" not in src
    # an extra script inside the embedded (srcdoc) page: the CSP it inherits blocks it, the view still runs
    injected = page.replace("&lt;div id=&quot;tt-headview&quot;&gt;",
                            "&lt;div id=&quot;tt-headview&quot;&gt;&lt;script&gt;console.log(&quot;"
                            + MARK + "&quot;)&lt;/script&gt;", 1)
    assert injected != page
    bad = tmp_path / "injected.html"
    bad.write_text(injected, encoding="utf-8")
    r = browser.open(bad.as_uri(), settle=1.5)
    assert not any(MARK in m for _, m in r["console"]), r["console"]
    assert len(r["frames"]) == 1
    assert browser.evaluate(r["frames"][0], "document.querySelectorAll('svg line').length") > 0


class Broken(Visualizer):
    name = "broken_for_test"

    def applies_to(self, trial):
        return True

    def render(self, trial, out, *, x: int = 1):
        raise RuntimeError("kaput")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return mlp_run(str(tmp_path_factory.mktemp("mlp") / "run"), steps=6)


def test_a_failed_section_fails_the_report_and_keep_going_writes_the_rest(mlp, tmp_path, monkeypatch, capsys):
    from tensortap.plugins import get_registry

    monkeypatch.setitem(get_registry().visualizers, "broken_for_test", Broken)
    out = tmp_path / "r.html"
    out.write_text("the report of yesterday")
    assert cli(["report", mlp, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "report section 'broken_for_test' failed: RuntimeError: kaput" in err and "--keep-going" in err
    assert out.read_text() == "the report of yesterday"  # nothing written, nothing truncated
    with pytest.raises(ReportError, match="section 'broken_for_test' failed: RuntimeError: kaput"):
        build_report(mlp, str(tmp_path / "api.html"))

    assert cli(["report", mlp, "--out", str(out), "--keep-going"]) == 1
    err = capsys.readouterr().err
    assert "report section 'broken_for_test' failed: RuntimeError: kaput" in err and "1 section(s) failed" in err
    page = out.read_text(encoding="utf-8")
    assert "broken_for_test failed: RuntimeError: kaput" in page and 'id="vis-scalars"' in page
    path = build_report(mlp, str(tmp_path / "api.html"), keep_going=True)
    assert [(n, str(e)) for n, e in path.failures] == [("broken_for_test", "kaput")]


BLOCK = "import sys; sys.modules['matplotlib'] = None; from tensortap.cli import main; sys.exit(main(sys.argv[1:]))"


def run_without_matplotlib(*args: str) -> subprocess.CompletedProcess:
    """`tensortap ARGS` in a Python where `import matplotlib` fails as if it were not installed."""
    return subprocess.run([sys.executable, "-c", BLOCK, *args], capture_output=True, text=True, timeout=300)


def test_a_missing_matplotlib_is_one_line_naming_the_extra(mlp, tmp_path):
    line = "matplotlib is not installed: pip install 'tensortap[vis]'"
    r = run_without_matplotlib("vis", "scalars", mlp, "--out", str(tmp_path / "s.png"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"tensortap: error: {line}"  # one line, no traceback

    r = run_without_matplotlib("report", mlp, "--out", str(tmp_path / "r.html"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"tensortap: {line}" in r.stderr.splitlines() and not (tmp_path / "r.html").exists()

    r = run_without_matplotlib("report", mlp, "--out", str(tmp_path / "r.html"), "--keep-going")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert lines.count(f"tensortap: {line}") == 1  # once, though every plot failed for it
    assert any("section 'scalars' failed" in x for x in lines) and any("section 'distributions' failed" in x
                                                                          for x in lines)
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h2>Run</h2>" in page and line.replace("'", "&#x27;") in page


def test_the_install_hint_is_in_the_readme():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md"), encoding="utf-8").read()
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "pip install 'tensortap[vis]'" in install
    for fw in ("torch", "tensorflow", "mxnet"):
        assert f"pip install 'tensortap-{fw}[framework]'" in install or f"tensortap-{fw}[framework]" in install


def test_the_extras_named_exist_in_the_pyproject_files():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    core = open(os.path.join(root, "core", "pyproject.toml"), encoding="utf-8").read()
    assert re.search(r"^vis = \[", core, re.M)
    for fw in ("torch", "tensorflow", "mxnet"):
        text = open(os.path.join(root, "plugins", f"tensortap-{fw}", "pyproject.toml"), encoding="utf-8").read()
        assert re.search(r"^framework = \[", text, re.M), fw
