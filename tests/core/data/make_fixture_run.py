"""Writes an old-store-format fixture that test_store_compat.py reads: a small run written by
the last tensortap of that format, and beside it what was saved, by numpy.

    # format 2: commit 8c0d35a (the last format-2 writer)
    git -C REPO archive 8c0d35a core | tar -x -C /tmp/tt-8c0d35a
    PYTHONPATH=/tmp/tt-8c0d35a/core python tests/core/data/make_fixture_run.py tests/core/data format2
    # format 3: commit 008670a (the last format-3 writer)
    git -C REPO archive 008670a core | tar -x -C /tmp/tt-008670a
    PYTHONPATH=/tmp/tt-008670a/core python tests/core/data/make_fixture_run.py tests/core/data format3

It writes OUT/NAME_run/ (the run) and OUT/NAME_expected.npz: every value saved, keyed
"name@step", plus the reductions the old reader returned, keyed "name@step@reduction".
"""
import os
import shutil
import sys

import numpy as np

import tensortap as tt


def arrays(step: int, rng) -> dict:
    out = {
        "w": rng.standard_normal((4, 5)).astype(np.float32),
        "gradients/w": rng.standard_normal((4, 5)),
        "b": rng.integers(-300, 300, size=7).astype(np.int16),
        "flag": np.array(step % 2 == 0),
        "z": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
        "h": rng.standard_normal((2, 3)).astype(np.float16),
        "s": np.array(["a%d" % step, "bé"], dtype="<U5"),
        "empty": np.zeros((0, 3), np.float32),
    }
    if step % 2:
        out["big"] = rng.standard_normal((128, 130)).astype(np.float32)  # > 64 KiB: the big-record path
    return out


def main(out: str, label: str) -> None:
    run = os.path.join(out, f"{label}_run")
    shutil.rmtree(run, ignore_errors=True)
    rng = np.random.default_rng(2016)
    reduced = tt.Collection("reduced", include_regex=["red/.*"],
                            reduction_config=tt.ReductionConfig(reductions=["min", "max", "mean", "l2", "histogram"],
                                                                histogram_bins=8))
    hook = tt.Hook(run, include_collections=["scalars", reduced],
                   save_config=tt.SaveConfig(save_interval=1))
    expected = {}
    for step in range(4):
        hook.begin_step(tt.modes.EVAL if step == 3 else tt.modes.TRAIN)
        for name, a in arrays(step, rng).items():
            hook.save_tensor(name, a, collections=["things"])
            expected[f"{name}@{step}"] = a
        x = rng.standard_normal(10).astype(np.float32)
        hook.save_tensor("red/x", x, collections=["reduced"])
        hook.save_scalar("acc", 0.25 * step)
    hook.close()
    trial = tt.create_trial(run)
    assert trial.steps() == [0, 1, 2, 3] and trial.problems == [], (trial.steps(), trial.problems)
    for step in range(4):
        for r, v in trial.tensor("red/x").reduction_values(step).items():
            if r == "histogram":
                expected[f"red/x@{step}@histogram_counts"], expected[f"red/x@{step}@histogram_edges"] = v
            else:
                expected[f"red/x@{step}@{r}"] = np.float64(v)
        expected[f"acc@{step}"] = trial.tensor("acc").value(step)
    np.savez(os.path.join(out, f"{label}_expected.npz"), **expected)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
