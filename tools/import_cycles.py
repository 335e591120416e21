"""An import-linter contract type: no import cycle between the modules of a package.

import-linter's own `acyclic_siblings` works on packages (tensortap.rules <-> tensortap.hook counts
when any module of one imports any of the other); this one works on modules, the level at which an
import cycle bites. `make lint` registers it through `contract_types` in pyproject.toml.
"""
from __future__ import annotations

from typing import Dict, List, Set, Tuple

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def module_cycles(graph: grimp.ImportGraph, package: str) -> List[List[str]]:
    """The strongly connected components (two modules or more) of the import graph of `package`'s
    modules, each sorted: every module in one reaches every other through imports."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    inside = set(modules)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    work: List[Tuple[str, List[str]]] = []  # the depth-first path: (module, imports still to visit)

    def enter(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        work.append((v, sorted(graph.find_modules_directly_imported_by(v) & inside)))

    for root in modules:  # Tarjan's algorithm, iterative (no recursion limit on deep graphs)
        if root in index:
            continue
        enter(root)
        while work:
            v, todo = work[-1]
            if todo:
                w = todo.pop()
                if w not in index:
                    enter(w)
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


class AcyclicModulesContract(Contract):
    """Kept when no two modules of `packages` import each other, directly or through others."""

    type_name = "acyclic_modules"
    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        cycles = []
        for package in self.packages:  # type: ignore[attr-defined]
            for component in module_cycles(graph, package):
                links = [(a, b, sorted(d["line_number"] for d in graph.get_import_details(importer=a, imported=b)))
                         for a in component for b in sorted(graph.find_modules_directly_imported_by(a))
                         if b in component]
                cycles.append(links)
        return ContractCheck(kept=not cycles, metadata={"cycles": cycles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for links in check.metadata["cycles"]:
            output.print_error("These modules import each other in a circle; move the piece both need to where it "
                               "belongs:", bold=False)
            output.new_line()
            for a, b, lines in links:
                output.print_error(f"- {a} -> {b} (l.{', '.join(map(str, lines))})", bold=False)
            output.new_line()
