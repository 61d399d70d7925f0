"""The FP32 keep-list: which operations stay in FP32 in every reduced-precision artifact, and why.

This is the one place the list lives. ``fp16.py`` keeps these nodes in FP32 (Casts around them),
``int8.py`` leaves them unquantized, and ``fp16_module`` applies the same rules to torch modules.

Three kinds of entry:
  * op types that are always FP32 (``FP32_OPS``): normalisations, reductions, Softmax;
  * the *normalisation statistics* pattern: the elementwise ops that compute a mean/variance by
    hand (SimSwap's ``x - mean``, ``x * x``, ``+ eps``, ``sqrt``, ``1 / s``, ``x * rstd``), found
    in the graph from the reductions they feed or follow;
  * the *output head*: the elementwise tail after the last Conv/Gemm (inswapper's
    ``(tanh(x) + 1) / 2``, SimSwap's clip) that maps activations onto pixel values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# op type -> reason it stays FP32
FP32_OPS: dict[str, str] = {
    "InstanceNormalization": (
        "per-image mean/variance: x*x overflows FP16 (max 65504) once |x| > 256 and eps 1e-6..1e-8 "
        "underflows to 0, so a flat channel divides by zero; the known cause of garbled faces from "
        "FP16 inswapper builds"),
    "LayerNormalization": "same variance computation as InstanceNormalization",
    "GroupNormalization": "same variance computation as InstanceNormalization",
    "LpNormalization": "sum of squares overflows FP16",
    "ReduceMean": "reduction over H*W values: FP16 accumulation loses the small terms (AdaIN statistics)",
    "ReduceSum": "reduction: FP16 accumulation overflows or loses small terms",
    "ReduceSumSquare": "squares overflow FP16 above 256",
    "ReduceL1": "reduction: FP16 accumulation overflows",
    "ReduceL2": "sum of squares overflows FP16 above 256",
    "ReduceLogSumExp": "exp overflows FP16 above 11",
    "ReduceProd": "products leave the FP16 range quickly",
    "Softmax": "exp overflows FP16 above 11; the detector's scores come from it",
    "LogSoftmax": "exp overflows FP16 above 11",
}

NORM_STATISTICS = ("normalisation statistics (mean/variance/rsqrt computed by hand, e.g. SimSwap's "
                   "InstanceNorm): same overflow/underflow as InstanceNormalization")
OUTPUT_HEAD = ("final output scaling (elementwise tail after the last Conv/Gemm): maps activations "
               "to pixel values; FP16 steps of 2^-11 near 1.0 are visible as banding")

# Elementwise ops that can make up a hand-written mean/variance.
STAT_ELEMENTWISE = frozenset({"Sub", "Mul", "Add", "Div", "Sqrt", "Reciprocal", "Pow", "Neg",
                              "Abs"})
# Elementwise/activation ops that can make up an output head.
HEAD_OPS = frozenset({"Tanh", "Sigmoid", "Add", "Sub", "Mul", "Div", "Clip", "Relu",
                      "BatchNormalization"})
# Ops never quantized to INT8 (besides the keep-list): norms and everything that is not a GEMM.
INT8_NORM_OPS = frozenset({"InstanceNormalization", "LayerNormalization", "GroupNormalization",
                           "BatchNormalization", "LpNormalization"})

# torch module class names kept FP32 by ``fp16_module`` (same reasons as the ONNX ops).
TORCH_FP32_MODULES: dict[str, str] = {
    "InstanceNorm": FP32_OPS["InstanceNormalization"],      # SimSwap's hand-written IN
    "InstanceNormVarMean": FP32_OPS["InstanceNormalization"],  # its one-pass rewrite
    "InstanceNorm1d": FP32_OPS["InstanceNormalization"],
    "InstanceNorm2d": FP32_OPS["InstanceNormalization"],
    "AdaIN": FP32_OPS["InstanceNormalization"],             # inswapper stand-in: IN + style
    "LayerNorm": FP32_OPS["LayerNormalization"],
    "GroupNorm": FP32_OPS["GroupNormalization"],
    "Softmax": FP32_OPS["Softmax"],
}


@dataclass(frozen=True)
class KeepEntry:
    """One node kept in FP32: its name, op type and the reason."""

    node: str
    op_type: str
    reason: str


def name_nodes(model) -> None:
    """Give every unnamed node a unique name (the converters select nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_fusionrt_{i}"
        seen.add(node.name)


def _constants(graph) -> set[str]:
    names = {i.name for i in graph.initializer}
    names |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return names


def fp32_nodes(model, include_head: bool = True) -> dict[str, KeepEntry]:
    """{node name: KeepEntry} for every node of ``model`` that the keep-list holds in FP32.

    Nodes must be named (call ``name_nodes`` first).
    """
    g = model.graph
    consts = _constants(g)
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    keep: dict[str, KeepEntry] = {}
    for n in g.node:
        if n.op_type in FP32_OPS:
            keep[n.name] = KeepEntry(n.name, n.op_type, FP32_OPS[n.op_type])
    reductions = {name for name, e in keep.items() if e.op_type.startswith("Reduce")}

    def feeds_reduction(node, depth: int = 4) -> bool:
        """Output reaches a kept reduction through stat-elementwise ops only (x - m, (x - m)^2)."""
        for out in node.output:
            for c in consumers.get(out, ()):
                if c.name in reductions:
                    return True
                if depth and c.op_type in STAT_ELEMENTWISE and feeds_reduction(c, depth - 1):
                    return True
        return False

    changed = True
    while changed:  # grow the statistics region to a fixed point
        changed = False
        for n in g.node:
            if n.name in keep or n.op_type not in STAT_ELEMENTWISE:
                continue
            prods = [producer.get(i) for i in n.input if i and i not in consts]
            kept = [p for p in prods if p is not None and p.name in keep]
            if not kept:
                continue
            if len(kept) == len(prods) or feeds_reduction(n):
                keep[n.name] = KeepEntry(n.name, n.op_type, NORM_STATISTICS)
                changed = True
    if include_head:
        for e in output_head(model, producer, consts):
            keep.setdefault(e.node, e)
    return keep


def output_head(model, producer=None, consts=None) -> list[KeepEntry]:
    """The elementwise tail between the last Conv/Gemm and each graph output."""
    g = model.graph
    producer = producer if producer is not None else {o: n for n in g.node for o in n.output}
    consts = consts if consts is not None else _constants(g)
    out: list[KeepEntry] = []
    stack = [producer.get(o.name) for o in g.output]
    seen: set[str] = set()
    while stack:
        n = stack.pop()
        if n is None or n.name in seen or n.op_type not in HEAD_OPS:
            continue
        seen.add(n.name)
        out.append(KeepEntry(n.name, n.op_type, OUTPUT_HEAD))
        stack.extend(producer.get(i) for i in n.input if i and i not in consts)
    return out


def last_convs(model) -> list[str]:
    """Names of the Conv/Gemm nodes that feed the output head (or a graph output) directly."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    consts = _constants(g)
    head = {e.node for e in output_head(model, producer, consts)}
    starts = [producer.get(o.name) for o in g.output]
    starts += [producer.get(i) for n in g.node if n.name in head for i in n.input
               if i and i not in consts]
    return sorted({n.name for n in starts if n is not None and n.op_type in ("Conv", "Gemm")})


def describe(entries: Iterable[KeepEntry]) -> dict[str, int]:
    """{reason-kind: count} for reports."""
    counts: dict[str, int] = {}
    for e in entries:
        key = e.op_type if e.reason not in (NORM_STATISTICS, OUTPUT_HEAD) else (
            "norm statistics" if e.reason == NORM_STATISTICS else "output head")
        counts[key] = counts.get(key, 0) + 1
    return counts
