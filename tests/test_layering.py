"""The package layering of fusionrt/: every import, function-local ones included, goes leftward in

    errors, _fs -> runtime -> models -> engines -> builders -> pipeline -> front ends -> cli

A unit is a first-level subpackage (``fusionrt/engines/`` is ``engines``) or a top-level module.
A unit may import itself, units of a lower layer, and the package root (``fusionrt.__version__``).
The front ends share one layer: one may use another (``triton release`` times its row with the
bench's timers) as long as no cycle forms, which the cycle test checks.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "fusionrt"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_fs"),
    ("runtime",),
    ("models",),
    ("engines",),
    ("builders",),
    ("pipeline",),
    ("serve", "triton", "batch", "bench", "doctor", "live"),
    ("cli",),
)
FRONT_ENDS = LAYERS[-2]  # the one layer whose units may import each other (acyclically)
RANK = {u: i for i, layer in enumerate(LAYERS) for u in layer}
ROOT = ""  # the package itself (fusionrt/__init__.py): holds __version__ only


def _units() -> set[str]:
    out = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    out |= {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"}
    return out


def _module_of(path: Path) -> tuple[str, str]:
    """(dotted module name, dotted package the module's relative imports start from)."""
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _unit_of(dotted: str, units: set[str]) -> str | None:
    """'fusionrt.engines.base' -> 'engines'; 'fusionrt' -> ROOT; outside fusionrt -> None."""
    parts = dotted.split(".")
    if parts[0] != "fusionrt":
        return None
    if len(parts) == 1:
        return ROOT
    return parts[1] if parts[1] in units else ROOT  # `from fusionrt import __version__`


def _targets(node: ast.AST, package: str) -> list[str]:
    """Absolute dotted names an import statement reaches (``from a import b`` may name a
    submodule ``a.b``, so both are returned)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        return [mod] + [f"{mod}.{a.name}" for a in node.names if a.name != "*"]
    return []


def import_edges() -> list[tuple[str, str, str]]:
    """(from unit, to unit, "file:line") for every import of another unit inside fusionrt/."""
    units = _units()
    edges = []
    for path in sorted(PKG.rglob("*.py")):
        module, package = _module_of(path)
        src = _unit_of(module, units)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            seen = set()
            for target in _targets(node, package):
                dst = _unit_of(target, units)
                if dst is None or dst == src or dst in seen:
                    continue
                seen.add(dst)
                where = f"{path.relative_to(PKG.parent)}:{node.lineno}"
                edges.append((src, dst, where))
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_unit_has_a_layer():
    missing = sorted(_units() - set(RANK))
    assert not missing, f"units without a layer in tests/test_layering.py LAYERS: {missing}"


def test_no_package_level_import_cycle():
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for a, b, at in import_edges():
        if a == ROOT or b == ROOT:
            continue
        graph.setdefault(a, set()).add(b)
        where.setdefault((a, b), at)
    cycles = _cycles(graph)
    lines = []
    for comp in cycles:
        lines.append("cycle: " + " <-> ".join(comp))
        lines += [f"  {a} -> {b}  ({at})" for (a, b), at in sorted(where.items())
                  if a in comp and b in comp]
    assert not cycles, "\n".join(lines)


def test_imports_go_leftward():
    bad = []
    for a, b, at in import_edges():
        if a == ROOT:
            bad.append(f"{at}: fusionrt/__init__.py imports {b} (the root holds __version__ only)")
        elif b == ROOT:
            continue  # __version__
        elif a in FRONT_ENDS and b in FRONT_ENDS:
            continue  # peers; a cycle among them fails test_no_package_level_import_cycle
        elif a in RANK and b in RANK and RANK[b] >= RANK[a]:
            bad.append(f"{at}: {a} imports {b} (layer {RANK[a]} -> {RANK[b]}; only lower "
                       "layers may be imported)")
    order = " -> ".join("/".join(layer) for layer in LAYERS)
    assert not bad, f"imports against the layer order {order}:\n" + "\n".join(sorted(bad))


def test_the_edge_finder_sees_local_and_relative_imports():
    """The checker itself: a function-local relative import is an edge."""
    src = ("def f():\n    from ..engines.base import Engine\n"
           "from . import zoo\nfrom .. import __version__\n")
    tree = ast.parse(src)
    found = [t for n in ast.walk(tree) for t in _targets(n, "fusionrt.models")]
    units = {"engines", "models"}
    assert {_unit_of(t, units) for t in found} == {"engines", "models", ROOT}
