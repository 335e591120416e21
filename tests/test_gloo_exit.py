"""The multi-process tests' retry launches again on torch's gloo exit abort and on nothing else."""
import pytest

from tests.gloo_exit import EXIT_ABORT, launch_retrying_exit_abort, run_ranks


def scripted(results):
    calls = []

    def launch(attempt):
        calls.append(attempt)
        return results[attempt]
    return launch, calls


def test_the_exit_abort_is_launched_again_until_a_clean_exit():
    launch, calls = scripted([(-6, f"... {EXIT_ABORT}\n"), (0, "ok")])
    with pytest.warns(UserWarning, match="gloo abort at exit"):
        assert launch_retrying_exit_abort(launch) == (1, 0, "ok")
    assert calls == [0, 1]


def test_any_other_failure_and_the_last_attempt_are_returned_as_they_are():
    launch, calls = scripted([(1, "Traceback: ValueError")])
    assert launch_retrying_exit_abort(launch) == (0, 1, "Traceback: ValueError") and calls == [0]
    launch, calls = scripted([(-6, EXIT_ABORT)] * 3)
    with pytest.warns(UserWarning):
        assert launch_retrying_exit_abort(launch, attempts=3) == (2, -6, EXIT_ABORT)


def test_run_ranks_reports_the_first_failing_rank(tmp_path):
    import sys
    code, log = run_ranks([[sys.executable, "-c", "print('a')"], [sys.executable, "-c", "import sys; sys.exit(3)"]],
                          env={}, timeout=60)
    assert code == 3 and log.startswith("a\n")
