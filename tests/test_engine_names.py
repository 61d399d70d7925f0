"""Engine names are spelled only in ``fusionrt/engines/`` and ``fusionrt/pipeline/plan.py``.

Everywhere else code decides by the capabilities the engine classes declare (``devices``,
``precisions``, ``compiles``, ``fixed_batch_profile``, ``needs``...) or by the named choices kept
in one place (``engines.registry.REFERENCE_ENGINE`` for the layers below the pipeline;
``pipeline.plan``: ``REFERENCE_ENGINE``, ``DEFAULT_ENGINES``, ``BASELINE_ENGINES``).

The check: every string constant in ``fusionrt/`` (f-string constant parts included) that equals a
registered engine name (``engine_names()``) exactly is an offender outside those two places.
Docstrings (module, class and function) are prose and are skipped.

``"torch"`` is also the library's name. A ``"torch"`` constant counts as the library, not the
engine, only where an engine name never goes:

* an argument of a call that looks a library up: ``library_version``, ``import_module``,
  ``find_spec``, ``__import__``, ``version`` (``importlib.metadata``), ``sys.modules.get``;
* a key: a dict-literal key or a subscript index (version, machine and report records keyed by
  library: ``{"torch": library_version("torch")}``, ``r["torch"]``);
* a member of a literal (tuple, list, set or dict, nested ones counted from the outermost) that
  also names another library that is not an engine (``LIBRARIES``): a list of libraries, such as
  the machine keys ``("torch", "onnxruntime", "tensorrt")`` or the doctor's version rows.

Every other ``"torch"`` counts: compared (``==``, ``in``), passed or defaulted where an engine
goes, in a tuple of engines, a dict value... (A dict keyed by engine names would slip through for
``"torch"`` alone; the other names are never library names and have no exclusions.)
"""

from __future__ import annotations

import ast
from pathlib import Path

from fusionrt.engines.registry import engine_names

PKG = Path(__file__).resolve().parent.parent / "fusionrt"
ALLOWED = ("engines/", "pipeline/plan.py")  # relative to fusionrt/
LIBRARY = "torch"  # the one engine name that is also a library's
LIBRARIES = {"onnxruntime", "tensorrt", "onnx", "cupy", "numpy"}  # libraries that are not engines
LOOKUPS = {"library_version", "import_module", "find_spec", "__import__", "version"}
LITERALS = (ast.Tuple, ast.List, ast.Set, ast.Dict)


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.add(id(body[0].value))
    return out


def _is_lookup(call: ast.Call) -> bool:
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    if name in LOOKUPS:
        return True
    # sys.modules.get("torch")
    return (name == "get" and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute)
            and f.value.attr == "modules")


def _names_a_library(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    top = node
    while isinstance(parents.get(id(top)), LITERALS):
        top = parents[id(top)]
    if top is node:
        return False
    return any(isinstance(n, ast.Constant) and isinstance(n.value, str)
               and n.value.lower() in LIBRARIES for n in ast.walk(top))


def _library_use(node: ast.Constant, parents: dict[int, ast.AST]) -> bool:
    """True where a "torch" constant is the library's name (the rules in the module docstring)."""
    parent = parents.get(id(node))
    if isinstance(parent, ast.Call) and node in parent.args and _is_lookup(parent):
        return True
    if isinstance(parent, ast.Dict) and any(k is node for k in parent.keys):
        return True
    if isinstance(parent, ast.Subscript) and parent.slice is node:
        return True
    return _names_a_library(node, parents)


def offenders(source: str, where: str, names: set[str]) -> list[str]:
    """``where:line 'name'`` for each engine-name constant of ``source`` (rules above)."""
    tree = ast.parse(source, filename=where)
    docs = _docstrings(tree)
    parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        if node.value not in names or id(node) in docs:
            continue
        if node.value == LIBRARY and _library_use(node, parents):
            continue
        out.append(f"{where}:{node.lineno} {node.value!r}")
    return sorted(out, key=lambda s: (s.split(":")[0], int(s.split(":")[1].split()[0])))


def test_engine_names_are_spelled_only_in_engines_and_the_plan():
    names = set(engine_names())
    assert LIBRARY in names and len(names) > 1
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith(ALLOWED[0]) or rel == ALLOWED[1]:
            continue
        found += offenders(path.read_text(), f"fusionrt/{rel}", names)
    assert not found, ("engine names spelled outside fusionrt/engines/ and pipeline/plan.py "
                       "(use capabilities or the plan's/registry's constants):\n  "
                       + "\n  ".join(found))


def test_the_rule_tells_the_engine_from_the_library():
    names = {"ort-cpu", "torch", "trt"}
    src = '''
"""Module prose may say ort-cpu and torch."""
import importlib, sys
def f(engine="ort-cpu"):
    """torch"""
    if engine == "torch":
        return f"{engine}" + f"trt"
    versions = {"torch": library_version("torch"), "onnxruntime": None}
    versions["torch"] = importlib.import_module("torch")
    sys.modules.get("torch")
    machine = ("torch", "onnxruntime", "tensorrt")
    rows = [("TensorRT", 1), ("torch", 2)]
    engines = ("ort-cpu", "torch")
    baselines = {"speedup": ("torch", "fp32")}
    open_engine("torch", None)
'''
    got = [s.split(" ", 1)[1] + "@" + s.split(":")[1].split()[0] for s in
           offenders(src, "x.py", names)]
    assert got == ["'ort-cpu'@4", "'torch'@6", "'trt'@7", "'ort-cpu'@13", "'torch'@13",
                   "'torch'@14", "'torch'@15"]
