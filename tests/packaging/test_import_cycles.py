"""The import contract `make lint` checks for cycles (tools/import_cycles.py): on small graphs built
here, every module of a circle is reported and nothing else; on the core itself, none is found
(imports under `if TYPE_CHECKING:` left out, as lint-imports is configured)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Tuple

import pytest

grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (requirements/tools.txt)")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tools.import_cycles import module_cycles  # noqa: E402


def graph(imports: List[Tuple[str, str]]) -> "grimp.ImportGraph":
    g = grimp.ImportGraph()
    for a, b in imports:
        g.add_module(a)
        g.add_module(b)
        g.add_import(importer=a, imported=b)
    return g


def test_a_circle_through_three_modules_is_found_whole_and_alone():
    g = graph([("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.d", "p.a"), ("p.c", "p.e")])
    assert module_cycles(g, "p") == [["p.a", "p.b", "p.c"]]


def test_two_separate_circles_and_a_pair_are_each_reported():
    g = graph([("p.a", "p.b"), ("p.b", "p.a"), ("p.x.y", "p.x.z"), ("p.x.z", "p.w"), ("p.w", "p.x.y"),
               ("p.a", "p.w")])
    assert module_cycles(g, "p") == [["p.a", "p.b"], ["p.w", "p.x.y", "p.x.z"]]


def test_no_circle_means_nothing_reported_and_other_packages_are_not_looked_at():
    g = graph([("p.a", "p.b"), ("p.b", "p.c"), ("p.a", "p.c"), ("q.a", "q.b"), ("q.b", "q.a")])
    assert module_cycles(g, "p") == []
    assert module_cycles(g, "q") == [["q.a", "q.b"]]


def test_a_long_chain_back_to_its_start_is_one_circle():
    names = [f"p.m{i:04d}" for i in range(3000)]  # deeper than Python's recursion limit
    g = graph(list(zip(names, names[1:] + names[:1])))
    assert module_cycles(g, "p") == [sorted(names)]


def test_the_core_has_no_import_cycle():
    g = grimp.build_graph("tensortap", exclude_type_checking_imports=True)
    assert module_cycles(g, "tensortap") == []
