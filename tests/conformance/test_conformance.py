"""Every framework plugin passes the same checks: same model, same data, bit-exact values.

Kits come from the registered adapters (AdapterSpec.conformance), so a new framework plugin
is checked by installing it: nothing here names a framework. The checks themselves are
tensortap.testing.conformance's, which a plugin's own tests run with check_kit.
"""
from __future__ import annotations

import pytest

from tensortap.plugins import get_registry
from tensortap.testing import conformance


def _kits():
    out = []
    for name, spec in sorted(get_registry().adapters.items()):
        if spec.conformance:
            out.append(pytest.param(spec, id=name))
    return out


@pytest.fixture(params=_kits())
def kit(request):
    spec = request.param
    try:
        kit_cls = spec.load_conformance()
    except ImportError as e:
        pytest.skip(f"{spec.name}: {e}")
    k = kit_cls()
    ok, why = k.available()
    if not ok:
        pytest.skip(why)
    return k


def test_names_steps_and_bit_exact_values(kit, tmp_path):
    conformance.check_names_steps_and_values(kit, str(tmp_path / "run"))


def test_reductions_match_numpy_reference(kit, tmp_path):
    conformance.check_reductions(kit, str(tmp_path / "run"))


def test_nothing_saved_on_unsaved_steps(kit, tmp_path):
    conformance.check_unsaved_steps(kit, str(tmp_path / "run"))


def test_every_check_is_run_here():
    """check_kit (what a plugin's own tests call) runs exactly the checks this suite runs."""
    assert {c.__name__ for c in conformance.CHECKS} == {
        "check_names_steps_and_values", "check_reductions", "check_unsaved_steps"}
