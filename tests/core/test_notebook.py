"""In Jupyter: a Trial, a Tensor and rule results show as escaped HTML tables, and long work
(report, t-SNE, export) shows progress (a tqdm.auto widget, or the one-line bar without tqdm)."""
from __future__ import annotations

import html
import re
import sys
import types

import numpy as np
import pytest

import tensortap as tt
from tensortap.progress import Progress, enabled, progress
from tests.core.test_vis_runs import embedding_run, mlp_run

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return mlp_run(str(tmp_path_factory.mktemp("nb") / "run"), steps=8)


def test_trial_shows_its_state_steps_collections_and_rule_outcomes(run):
    t = tt.create_trial(run)
    page = t._repr_html_()
    steps = t.steps()
    assert "complete: closed cleanly" in page and f"{len(steps)} ({steps[0]}–{steps[-1]})" in page
    cells = re.sub(r"(<[^>]+>)+", "|", page)
    for c, names in t.collections().items():
        assert f"|{c}|{len(names)}|" in cells
    fired = sum(1 for r in t.rule_results() if r["fired"])
    quiet = len(t.rule_results()) - fired
    assert f"|test_loss_above|{fired}|{quiet}|0|" in cells


def test_tensor_shows_its_last_value_summary(run):
    t = tt.create_trial(run)
    ten = t.tensor("fc1.weight")
    v = ten.value(ten.steps()[-1]).astype(np.float64)
    page = ten._repr_html_()
    assert f"shape {v.shape}, float32" in page
    assert f"{v.min():.6g} / {v.mean():.6g} / {v.max():.6g}" in page


def test_rule_results_show_three_outcomes_and_escape_messages(run):
    from tensortap.rules import Rule

    class Evil(Rule):
        name = "evil" + EVIL

        def invoke_at_step(self, trial, step):
            if step == 0:
                raise tt.StepNotFound("nothing " + EVIL)
            trial.tensor(trial.tensor_names(step=step)[0]).value(step)  # it checked a tensor: quiet, not skipped
            return step % 2 == 1, "msg " + EVIL

    res = tt.invoke_rule(Evil(), tt.create_trial(run))
    assert isinstance(res, list) and all(isinstance(r, tt.rules.RuleResult) for r in res)
    page = res._repr_html_()
    assert EVIL not in page and html.escape(EVIL) in page
    n_f, n_s = sum(r.fired for r in res), sum(r.skipped for r in res)
    n_q = len(res) - n_f - n_s
    assert n_f and n_s and n_q
    assert f"fired</span> {n_f}" in page and f"quiet</span> {n_q}" in page and f"skipped</span> {n_s}" in page
    # fired and skipped rows come first
    first_quiet = page.index(">quiet</span></td>")
    assert page.index(">fired</span></td>") < first_quiet and page.index(">skipped</span></td>") < first_quiet
    one = res[1]._repr_html_()
    assert "1 rule result" in one and html.escape(EVIL) in one and EVIL not in one


def test_hostile_names_are_escaped_in_trial_and_tensor(tmp_path):
    hook = tt.Hook(str(tmp_path / "r"), include_collections=["scalars"], save_config=tt.SaveConfig(save_interval=1))
    for s in range(2):
        hook.begin_step(tt.modes.TRAIN)
        hook.save_scalar(EVIL, float(s))
    hook.close()
    t = tt.create_trial(str(tmp_path / "r"))
    for page in (t._repr_html_(), t.tensor(EVIL)._repr_html_()):
        assert EVIL not in page and html.escape(EVIL) in page


class _Shell:
    """Enough of IPython's shell for the libraries that look at it (matplotlib registers a hook)."""

    events = types.SimpleNamespace(register=lambda *a: None, unregister=lambda *a: None)


@pytest.fixture
def notebook(monkeypatch):
    """A process that looks like a Jupyter kernel to tensortap (IPython.get_ipython() is a ZMQ shell)."""
    from tensortap.vis._common import plt

    plt()  # pyplot settles its backend before it sees a notebook it cannot draw in
    shell = type("ZMQInteractiveShell", (_Shell,), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell, version_info=(8, 30)))
    monkeypatch.delenv("TENSORTAP_PROGRESS", raising=False)


class Recorder:
    """Stands in for tqdm.auto.tqdm: records what a widget would show."""

    made = []

    def __init__(self, total=None, desc="", leave=True):
        self.total, self.desc, self.n, self.closed = total, desc, 0, False
        Recorder.made.append(self)

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, s, refresh=True):
        pass

    def close(self):
        self.closed = True


def test_long_work_shows_progress_in_a_notebook_through_tqdm(notebook, monkeypatch, tmp_path):
    pytest.importorskip("tqdm")
    import tqdm.auto

    Recorder.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    assert enabled()
    assert list(progress(range(5), "export")) == list(range(5))
    (bar,) = Recorder.made
    assert (bar.total, bar.desc, bar.n, bar.closed) == (5, "export", 5, True)
    # a real long job: the embedding visualizer's projection over steps
    Recorder.made = []
    path = embedding_run(str(tmp_path / "emb"), steps=3, n=60)
    tt.vis.get("embedding")().render(tt.create_trial(path), str(tmp_path / "e.gif"), method="pca")
    assert [(b.desc, b.total, b.n, b.closed) for b in Recorder.made] == [("pca latent", 3, 3, True)]


def test_without_tqdm_a_notebook_gets_the_text_bar(notebook, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails
    with Progress(3, "report") as p:
        for _ in range(3):
            p.update()
    err = capsys.readouterr().err
    assert err.startswith("\rreport [") and "3/3" in err
