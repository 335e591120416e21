"""The demos point at `tensortap serve`, and what it shows of their runs is right: `make demo`'s
quickstart prints the command for its run; the pruning demo's two models compare as accuracy
against parameters across iterations, with the rule's floor."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from urllib.parse import quote

import pytest

import tensortap as tt
from tensortap.serve import Server
from tests.core.tt_serve_helpers import get_json, run_ids
from tests.e2e.demo_util import ROOT, run_demo


def test_quickstart_prints_the_serve_command_for_its_run(tmp_path):
    out = str(tmp_path / "demo")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "quickstart.py"), "--out", out,
                           "--steps", "30"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("live:")]
    cmd = line.split(None, 1)[1].split("    ")[0]
    assert cmd == f"tensortap serve {out}"
    p = subprocess.Popen([sys.executable, "-m", "tensortap.cli", "serve", out, "--port", "0"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = [p.stdout.readline() for _ in range(2)][1].split("open ", 1)[1].strip()
        ids = run_ids(url)
        (only,) = get_json(url + "api/runs")["runs"]
        assert list(ids) == ["demo"] and only["steps"] == len(tt.create_trial(out).steps())
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_pruning_demo_runs_compare_accuracy_against_parameters(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensortap_pruning")
    out = str(tmp_path / "pruning")
    stdout = run_demo("pruning/prune.py", out)
    assert f"compare: tensortap serve {out}" in stdout
    summary = json.load(open(os.path.join(out, "summary.json")))
    with Server(out) as s:
        ids = run_ids(s.url)
        assert set(ids) == {"resnet", "alexnet"}
        runs = quote(json.dumps([ids["resnet"], ids["alexnet"]]))
        xy = get_json(s.url + f"api/xy?runs={runs}&x=%22pruning/params%22&y=%22pruning/accuracy%22")
        by = {r["name"]: r for r in xy["runs"]}
        for r in summary["results"]:
            h = r["history"]
            got = by[r["model"]]
            assert got["x"] == [float(x["params"]) for x in h]
            assert got["y"] == pytest.approx([x["accuracy"] for x in h])
        floors = {t["value"] for t in xy["thresholds"] if t["rule"] == "pruning_accuracy"}
        assert floors == {summary["min_accuracy"]}
        it = get_json(s.url + f"api/xy?runs={runs}&x=%22pruning/iteration%22&y=%22pruning/accuracy%22")
        for r in it["runs"]:
            assert r["x"] == [float(i) for i in range(len(r["x"]))]  # 0, 1, 2, ...: the same axis for both models
        t0 = time.monotonic()
        assert get_json(s.url + f"api/compare?runs={runs}")["names"]
        assert time.monotonic() - t0 < 10
