"""tensortap-pruning checks torch against tensortap-torch's supported range when its torch code first
loads: outside it, one warning naming tensortap-pruning; inside, nothing."""
from __future__ import annotations

from tests.conftest import require

require("torch", "tensortap_pruning")

from tests.version_check import expected_warning, run_with_versions, version_warnings  # noqa: E402

LOAD = """
import tensortap_pruning
print("torch loaded before:", "torch" in __import__("sys").modules)
from tensortap_pruning import TaylorPruner, analyse
print(TaylorPruner.__name__, analyse.__name__)
"""


def test_a_torch_outside_the_range_gets_one_warning_naming_the_pruning_distribution():
    r = run_with_versions(LOAD, {"torch": "3.0.0"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert version_warnings(r.stderr) == [expected_warning("tensortap-pruning", "torch", ">=2.1,<3", "3.0.0")]
    assert "TaylorPruner analyse" in r.stdout


def test_the_installed_torch_is_in_the_range_and_nothing_is_said():
    r = run_with_versions(LOAD, {})
    assert r.returncode == 0, r.stderr[-3000:]
    assert version_warnings(r.stderr) == [], r.stderr
    assert "torch loaded before: False" in r.stdout and "TaylorPruner analyse" in r.stdout
