"""Plugins and contrib reach the core only through public names: no module under plugins/ or
contrib/ touches an underscore attribute of a core object (the hook, its capture session, a
collection, a trial, the registry, a writer, a core module or class), whether as `x._name`,
`getattr(x, "_name")` or `from tensortap... import _name`, nor a private a core base class
defines (`self._name` in a subclass of tt.Adapter / Rule / ... that does not define it itself).

A plugin's own privates (`self._layers` of its adapter), and the framework's (`tensor._version`,
`block._active`), are not the core's and are not flagged. The checker works on the source with
`ast`; `test_checker_*` pin down what it flags and what it leaves alone.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core" / "tensortap"

#: what plugins call the core's objects (a parameter, a variable or an attribute of that name)
CORE_NAMES = frozenset({
    "hook", "session", "capture", "collection", "collections", "coll", "trial", "registry", "writer", "reader",
    "selection", "reporter", "tt", "tensortap",
})
#: attributes of a core object that are the plugin's own or the framework's, not the core's
NOT_CORE_ATTRS = frozenset({"adapter", "model"})
#: calls that give a core object
CORE_FACTORIES = frozenset({"Hook", "create_trial", "get_registry"})
#: type annotations that make a parameter a core object
CORE_TYPES = frozenset({"Hook", "Capture", "CaptureSession", "Collection", "Trial", "Tensor", "Registry",
                        "StoreWriter", "Session"})


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# ---- what core classes keep private (for `self._x` in plugin subclasses) -------------------------
def _module_file(module: str) -> Optional[Path]:
    """core/tensortap/... file of a `tensortap...` module, or None."""
    parts = module.split(".")
    if parts[0] != "tensortap":
        return None
    base = CORE.joinpath(*parts[1:])
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _core_class_privates(module: str, cls: str, seen: Optional[Set[Tuple[str, str]]] = None) -> Set[str]:
    """Underscore attributes the core class `module.cls` (and its core bases) defines or assigns."""
    seen = set() if seen is None else seen
    if (module, cls) in seen:
        return set()
    seen.add((module, cls))
    path = _module_file(module)
    if path is None:
        return set()
    tree = ast.parse(path.read_text())
    imports = _imports(tree, module if path.name == "__init__.py" else module.rsplit(".", 1)[0])
    out: Set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == cls for a in node.names):
            src = imports.get(cls)
            if src is not None:
                return _core_class_privates(src[0], src[1], seen)
        if isinstance(node, ast.ClassDef) and node.name == cls:
            out |= _defined_privates(node)
            for b in node.bases:
                if isinstance(b, ast.Name):
                    src = imports.get(b.id, (module, b.id))
                    out |= _core_class_privates(src[0], src[1], seen)
    return out


def _defined_privates(cls: ast.ClassDef) -> Set[str]:
    """Underscore names a class defines: methods, class attributes, fields, `self._x = ...`."""
    out: Set[str] = set()
    for node in ast.walk(cls):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(node.name):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                out.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
            out.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and _private(node.target.id):
            out.add(node.target.id)
    return out


def _imports(tree: ast.Module, package: str = "") -> Dict[str, Tuple[str, str]]:
    """Local name -> (tensortap module, name in it) of everything imported from the core; `package`:
    the core package the module is in (its relative imports are resolved from there)."""
    out: Dict[str, Tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            src = node.module or ""
            if node.level:  # relative: only inside the core
                if not package.startswith("tensortap"):
                    continue
                parts = package.split(".")
                base = parts[: max(1, len(parts) - node.level + 1)]
                src = ".".join(base + ([src] if src else []))
            if src == "tensortap" or src.startswith("tensortap."):
                for a in node.names:
                    out[a.asname or a.name] = (src, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "tensortap" or a.name.startswith("tensortap."):
                    out[a.asname or a.name.split(".")[0]] = (a.name, "")
    return out


# ---- the checker -------------------------------------------------------------------------------
def _walk_here(node: ast.AST) -> Iterable[ast.AST]:
    """`node` and what is below it in the same scope (not inside nested functions or classes)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            yield from _walk_here(child)


class _Checker(ast.NodeVisitor):
    def __init__(self, tree: ast.Module, where: str) -> None:
        self.where = where
        self.imports = _imports(tree)
        self.found: List[str] = []
        self.scopes: List[Set[str]] = [set(self.imports)]
        self.class_privates: List[Tuple[Set[str], Set[str]]] = []  # (core base privates, own privates)

    # which expressions are core objects
    def is_core(self, e: ast.AST) -> bool:
        if isinstance(e, ast.Name):
            return e.id in CORE_NAMES or any(e.id in s for s in self.scopes)
        if isinstance(e, ast.Attribute):
            if e.attr in NOT_CORE_ATTRS:
                return False
            return e.attr in CORE_NAMES or self.is_core(e.value)
        if isinstance(e, ast.Call):
            f = e.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            return name in CORE_FACTORIES or self.is_core(f)
        if isinstance(e, ast.Subscript):
            return self.is_core(e.value)
        return False

    def _core_annotation(self, ann: ast.AST) -> bool:
        """Does a type annotation name a core class (`Hook` imported from tensortap, `tt.Hook`, "Capture")?"""
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            try:
                ann = ast.parse(ann.value, mode="eval").body
            except SyntaxError:
                return False
        for n in ast.walk(ann):
            if isinstance(n, ast.Name) and n.id in CORE_TYPES and n.id in self.imports:
                return True
            if isinstance(n, ast.Attribute) and n.attr in CORE_TYPES and self.is_core(n.value):
                return True
        return False

    def _flag(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.where}:{getattr(node, 'lineno', '?')}: {what}")

    # scopes: names bound to core objects, flow-insensitively, per function
    def _bind(self, target: ast.AST, scope: Set[str]) -> None:
        """The names an assignment target binds (not `self.x` or `d[k]`: those bind no name)."""
        if isinstance(target, ast.Name):
            scope.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._bind(t, scope)
        elif isinstance(target, ast.Starred):
            self._bind(target.value, scope)

    def _collect(self, body: Iterable[ast.AST], scope: Set[str]) -> None:
        nodes = [n for stmt in body for n in _walk_here(stmt)]
        for _ in range(3):  # a few rounds: h = self.hook; s = h.session; ...
            for n in nodes:
                if isinstance(n, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and n.value is not None:
                    if self.is_core(n.value):
                        for t in (n.targets if isinstance(n, ast.Assign) else [n.target]):
                            self._bind(t, scope)
                elif isinstance(n, (ast.For, ast.comprehension)) and self.is_core(n.iter):
                    self._bind(n.target, scope)
                elif isinstance(n, ast.withitem) and n.optional_vars is not None and self.is_core(n.context_expr):
                    self._bind(n.optional_vars, scope)

    def _function(self, node: ast.AST, args: ast.arguments, body: Iterable[ast.AST]) -> None:
        scope: Set[str] = set()
        for a in args.args + args.kwonlyargs + args.posonlyargs:
            if a.annotation is not None and self._core_annotation(a.annotation):
                scope.add(a.arg)
        self.scopes.append(scope)
        self._collect(body, scope)
        for stmt in body:
            self.visit(stmt)
        self.scopes.pop()

    def visit_Module(self, node: ast.Module) -> None:
        self._collect(node.body, self.scopes[0])
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for d in node.decorator_list:
            self.visit(d)
        self._function(node, node.args, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node, node.args, [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        core_privates: Set[str] = set()
        for b in node.bases:
            name = b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else ""
            src = self.imports.get(name)
            if src is not None and src[1]:
                core_privates |= _core_class_privates(src[0], src[1])
            elif isinstance(b, ast.Attribute) and self.is_core(b.value):
                mod = self.imports.get(ast.unparse(b.value).split(".")[0], ("tensortap", ""))[0]
                core_privates |= _core_class_privates(mod, b.attr)
        self.class_privates.append((core_privates, _defined_privates(node)))
        self.generic_visit(node)
        self.class_privates.pop()

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        src = node.module or ""
        if (src == "tensortap" or src.startswith("tensortap.")) and not node.level:
            for a in node.names:
                if _private(a.name):
                    self._flag(node, f"from {src} import {a.name}")
            if any(_private(part) for part in src.split(".")):
                self._flag(node, f"from {src} import ...")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _private(node.attr):
            v = node.value
            if isinstance(v, ast.Name) and v.id == "self" and self.class_privates:
                core_privates, own = self.class_privates[-1]
                if node.attr in core_privates and node.attr not in own:
                    self._flag(node, f"self.{node.attr} (a private of a core base class)")
            elif self.is_core(v):
                self._flag(node, f"{ast.unparse(node)}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if (isinstance(f, ast.Name) and f.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                and _private(node.args[1].value) and self.is_core(node.args[0])):
            self._flag(node, ast.unparse(node))
        self.generic_visit(node)


def core_private_accesses(source: str, where: str = "<source>") -> List[str]:
    """Every place in `source` (a plugin or contrib module) that touches a core private."""
    tree = ast.parse(source)
    checker = _Checker(tree, where)
    checker.visit(tree)
    return checker.found


def plugin_modules() -> List[Path]:
    """Every module of every plugin and contrib distribution (not their tests)."""
    out = []
    for top in ("plugins", "contrib"):
        for dist in sorted((ROOT / top).iterdir()):
            for pkg in sorted(dist.iterdir()):
                if pkg.is_dir() and (pkg / "__init__.py").is_file():
                    out += sorted(pkg.rglob("*.py"))
    return out


# ---- the rule ----------------------------------------------------------------------------------
def test_no_plugin_or_contrib_module_touches_a_core_private():
    modules = plugin_modules()
    assert len(modules) > 30, "plugins/ and contrib/ were not found"
    found = [f for m in modules for f in core_private_accesses(m.read_text(), str(m.relative_to(ROOT)))]
    assert found == [], "core privates touched from plugins/contrib:\n" + "\n".join(found)


# ---- what the checker flags and what it leaves alone ---------------------------------------------
FLAGGED = {
    "hook parameter": "def f(hook):\n    hook._report('x', e)\n",
    "the adapter's session": "class A:\n    def f(self):\n        self.session._plan('n', 'c')\n",
    "an adapter's hook": "def f(a):\n    a.hook._closed\n",
    "a name bound to the hook": "def f(self):\n    h = self.hook\n    return h._active\n",
    "a collection of the hook": "def f(hook):\n    return any(c._pattern for c in hook.collections)\n",
    "a collection the session gives": "def f(self):\n    fm = self.session.collection('x')\n    fm._listeners\n",
    "getattr with a private name": "def f(hook):\n    return getattr(hook, '_stop_reason', None)\n",
    "a core module's private": "import tensortap as tt\ntt.hook._env_rank()\n",
    "importing a core private": "from tensortap.hook import _env_rank\n",
    "a trial made here": "import tensortap as tt\ndef f(p):\n    t = tt.create_trial(p)\n    t._readers()\n",
    "an annotated core parameter": "from tensortap import Hook\ndef f(h: Hook):\n    h._output\n",
    "a private of a core base class": ("from tensortap.capture.steps import StepClock\n"
                                       "class C(StepClock):\n    def f(self):\n        return self._stop_reason\n"),
}
LEFT_ALONE = {
    "the plugin's own privates": "class A:\n    def f(self):\n        self._layers = []\n        return self._layers\n",
    "a framework tensor's": "def f(g):\n    return g._version\n",
    "a framework block's, in a loop": "def f(blocks):\n    for b in blocks:\n        b._active = False\n",
    "its own private over a core base's name": ("from tensortap.adapter import Adapter\nclass A(Adapter):\n"
                                                "    def f(self):\n        self._grads = []\n"
                                                "        return self._grads\n"),
    "public attributes of the hook": "def f(hook):\n    return hook.session.wants('x'), hook.step\n",
    "the plugin's adapter reached through the hook": "def f(hook):\n    return hook.adapter._switches\n",
    "dunder attributes": "def f(hook):\n    return hook.__class__\n",
}


@pytest.mark.parametrize("case", sorted(FLAGGED))
def test_checker_flags(case):
    assert core_private_accesses(FLAGGED[case]), case


@pytest.mark.parametrize("case", sorted(LEFT_ALONE))
def test_checker_leaves_alone(case):
    assert core_private_accesses(LEFT_ALONE[case]) == [], case
