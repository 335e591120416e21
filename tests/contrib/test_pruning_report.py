"""tensortap-pruning registers the `pruning` visualizer and its importance reductions through its
entry point; the report of a pruning run shows accuracy against parameters at every iteration."""
from __future__ import annotations

from tests.conftest import require

require("tensortap_pruning", "matplotlib")

import tensortap as tt  # noqa: E402
from tensortap.plugins import get_registry  # noqa: E402
from tensortap.report import build_report  # noqa: E402
from tests.core.test_vis_runs import pruning_run  # noqa: E402


def test_registered_by_the_plugin():
    reg = get_registry()
    assert reg.owner[("visualizers", "pruning")].distribution == "tensortap-pruning"
    for name in ("taylor", "filter_l1", "bn_scale", "random"):
        assert reg.owner[("reductions", name)].distribution == "tensortap-pruning"
        assert tt.ReductionConfig(reductions=[name]).reductions == (name,)


def test_report_shows_accuracy_against_parameters_per_iteration(tmp_path):
    run = pruning_run(str(tmp_path / "run"))
    trial = tt.create_trial(run)
    assert tt.vis.get("pruning")().applies_to(trial)
    page = open(build_report(run, str(tmp_path / "r.html")), encoding="utf-8").read()
    assert 'id="vis-pruning"' in page and "<th>parameters</th>" in page
    p, a = trial.tensor("pruning/params"), trial.tensor("pruning/accuracy")
    for i, s in enumerate(p.steps()):  # every iteration's row: iteration, step, parameters, size, accuracy
        row = f"<tr><td>{i}</td><td>{s}</td><td>{float(p.value(s)):,.0f}</td>"
        assert row in page and f"<td>{float(a.value(s)):.4f}</td></tr>" in page
