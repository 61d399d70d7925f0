"""FP16 artifacts: an ONNX graph converted to FP16 with the keep-list in FP32, and the torch
equivalent (``fp16_module``).

The graph conversion uses ONNX Runtime's maintained converter
(``onnxruntime.transformers.float16.convert_float_to_float16``, the same code as
onnxconverter-common's, shipped inside onnxruntime so it adds no dependency) with the keep-list
nodes in its ``node_block_list``: it inserts the Casts, keeps the blocked nodes' initializers in
FP32 and the Resize scales in FP32. Graph inputs and outputs stay float32 (``keep_io_types``), so
the model's contract and the pipeline do not change, and the same file runs on ORT CUDA and as a
strongly typed TensorRT network (types come from the graph, no FP16 builder flag).

Note: ONNX Runtime's CPU provider has few FP16 kernels; it wraps FP16 nodes in Casts and computes
in FP32, so an FP16 artifact run on ``ort-cpu`` shows weight rounding only. ``gate.py`` uses the
ONNX reference evaluator (real FP16 arithmetic) for FP16 checks on the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import ModelError
from .keeplist import TORCH_FP32_MODULES, KeepEntry, describe, fp32_nodes, name_nodes

log = logging.getLogger(__name__)

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16


@dataclass(frozen=True)
class Fp16Report:
    """What the conversion did: nodes kept FP32 (by reason), Casts inserted, node counts."""

    path: Path | None
    kept: dict[str, int]
    kept_nodes: tuple[str, ...]
    casts: int
    fp16_nodes: int
    nodes: int
    violations: tuple[str, ...] = field(default=())


def _load(model_or_path):
    import onnx
    if isinstance(model_or_path, (str, Path)):
        try:
            return onnx.load(str(model_or_path))
        except Exception as e:  # FileNotFoundError, protobuf DecodeError, ...
            raise ModelError(f"model file '{model_or_path}' | cannot be read by onnx: {e}") \
                from None
    m = onnx.ModelProto()
    m.CopyFrom(model_or_path)
    return m


def topo_sort(model) -> None:
    """Order nodes so each runs after its inputs exist (the converter appends its I/O Casts at
    the end; ONNX Runtime tolerates that, the ONNX checker and reference evaluator do not)."""
    g = model.graph
    ready = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ModelError(f"fp16 conversion | graph has a cycle or a dangling input at node "
                             f"'{rest[0].name}'")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)


def convert_fp16(model_or_path, out_path: Path | str | None = None, *,
                 keep: Mapping[str, KeepEntry] | None = None) -> tuple[Any, Fp16Report]:
    """Convert a float32 ONNX model to FP16 keeping the keep-list in FP32.

    Args:
        model_or_path: ``onnx.ModelProto`` or a path.
        out_path: where to write the converted model (atomic); None = do not write.
        keep: override the keep-list ({node name: entry}); ``{}`` converts everything (only for
            tests that need a deliberately broken artifact).

    Returns:
        (converted model, report). Raises ``ModelError`` if a keep-list node ends up FP16 or the
        graph I/O is no longer float32.
    """
    from onnxruntime.transformers.float16 import (DEFAULT_OP_BLOCK_LIST,
                                                  convert_float_to_float16)
    model = _load(model_or_path)
    io_before = _io_types(model)
    name_nodes(model)
    keep = fp32_nodes(model) if keep is None else dict(keep)
    meta = [(p.key, p.value) for p in model.metadata_props]
    try:
        out = convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST),
            node_block_list=sorted(keep))
    except Exception as e:  # the converter raises bare Exceptions/ValueErrors on odd graphs
        raise ModelError(f"fp16 conversion | onnxruntime float16 converter failed: {e}") from e
    topo_sort(out)
    unique_node_names(out)
    del out.metadata_props[:]
    kept = ",".join(f"{k}={v}" for k, v in sorted(describe(keep.values()).items()))
    meta = [(k, v) for k, v in meta if k not in ("fusionrt.precision", "fusionrt.fp32_keep")]
    for k, v in meta + [("fusionrt.precision", "fp16"), ("fusionrt.fp32_keep", kept)]:
        entry = out.metadata_props.add()
        entry.key, entry.value = k, v
    if _io_types(out) != io_before:
        raise ModelError(f"fp16 conversion | graph I/O types changed {io_before} -> "
                         f"{_io_types(out)}; expected float32 I/O kept")
    violations = tuple(keep_list_violations(out, keep))
    if violations:
        raise ModelError(f"fp16 conversion | keep-list nodes left in FP16: {list(violations)[:5]}")
    report = _report(out, keep, out_path, violations)
    if out_path is not None:
        from .._fs import atomic_write_bytes
        atomic_write_bytes(Path(out_path), out.SerializeToString())
    log.info("fp16: %d nodes, %d kept FP32 %s, %d Casts", report.nodes, len(keep), report.kept,
             report.casts)
    return out, report


def unique_node_names(model) -> None:
    """The converter names each Cast ``<input>_cast_to``; when one constant feeds two kept nodes
    (seen on the full-size SimSwap graph exported by torch 2.11) two Casts share a name and ONNX
    Runtime refuses the model. Node names only label nodes: suffix the repeats. Two producers
    of one tensor would be a real error, so that raises."""
    seen: dict[str, int] = {}
    producer: dict[str, Any] = {}
    keep_nodes = []
    for node in model.graph.node:
        first = next((producer[o] for o in node.output if o in producer), None)
        if first is not None:
            if (first.op_type, list(first.input), first.attribute) == \
                    (node.op_type, list(node.input), node.attribute):
                continue  # the same Cast emitted twice: one is enough
            raise ModelError(f"fp16 conversion | tensor '{node.output[0]}' has two producers")
        producer.update({o: node for o in node.output if o})
        if node.name in seen:
            seen[node.name] += 1
            node.name = f"{node.name}__{seen[node.name]}"
        else:
            seen[node.name] = 0
        keep_nodes.append(node)
    if len(keep_nodes) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(keep_nodes)


def _io_types(model) -> list[tuple[str, int]]:
    return [(v.name, v.type.tensor_type.elem_type) for v in (*model.graph.input, *model.graph.output)]


def value_types(model) -> dict[str, int]:
    """{tensor name: elem_type} from ONNX shape inference (inputs, initializers, every value)."""
    import onnx
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({i.name: i.data_type for i in g.initializer})
    for n in g.node:  # Constant outputs are not always in value_info
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def keep_list_violations(model, keep: Mapping[str, KeepEntry] | None = None) -> list[str]:
    """Names of keep-list nodes (or, with ``keep=None``, of any keep-list op type found in
    ``model``) that receive or produce FP16 tensors."""
    from .keeplist import FP32_OPS
    types = value_types(model)
    bad = []
    for n in model.graph.node:
        if keep is not None and n.name not in keep:
            continue
        if keep is None and n.op_type not in FP32_OPS:
            continue
        if any(types.get(t) == FLOAT16 for t in (*n.input, *n.output) if t):
            bad.append(n.name or n.op_type)
    return bad


def _report(model, keep, path, violations) -> Fp16Report:
    types = value_types(model)
    fp16 = sum(1 for n in model.graph.node if n.op_type != "Cast"
               and any(types.get(o) == FLOAT16 for o in n.output))
    casts = sum(1 for n in model.graph.node if n.op_type == "Cast")
    return Fp16Report(Path(path) if path else None, describe(keep.values()),
                      tuple(sorted(keep)), casts, fp16, len(model.graph.node), violations)


# -- torch -----------------------------------------------------------------------------------

def fp16_module(module, keep: Mapping[str, str] | None = None):
    """The torch counterpart of ``convert_fp16``: ``module`` in FP16 with the keep-list in FP32.

    Keep-list modules (``TORCH_FP32_MODULES`` by class name) keep FP32 weights and run on FP32
    inputs with autocast off; the last Conv2d's output (the output head's input) is promoted to
    FP32 when it makes the 3-channel image, so the final scaling runs in FP32; the wrapper takes and returns float32 tensors, so the
    engine's contract is unchanged. Use it instead of autocast for ``precision="fp16"``: weights
    are cast once, not on every call.
    """
    import torch
    from torch import nn
    keep = TORCH_FP32_MODULES if keep is None else keep

    class Fp32Island(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner.float()

        def forward(self, *args):
            dtype = next((a.dtype for a in args if torch.is_tensor(a) and a.is_floating_point()),
                         torch.float16)
            with torch.autocast(args[0].device.type, enabled=False):
                out = self.inner(*(a.float() if torch.is_tensor(a) and a.is_floating_point()
                                   else a for a in args))
            return out.to(dtype)

    class Fp16Wrapper(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            args = tuple(a.half() if torch.is_tensor(a) and a.is_floating_point() else a
                         for a in args)
            out = self.inner(*args)
            if isinstance(out, (tuple, list)):
                return type(out)(o.float() for o in out)
            return out.float()

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if type(child).__name__ in keep:
                setattr(parent, name, Fp32Island(child))
            else:
                swap(child)

    module = module.eval()
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    swap(module)
    module = module.half()
    for m in module.modules():  # .half() cast the islands too: put them back
        if isinstance(m, Fp32Island):
            m.inner.float()
    if convs and convs[-1].out_channels == 3:  # a generator's image head: scale it in FP32
        convs[-1].register_forward_hook(lambda mod, inp, out: out.float())
    return Fp16Wrapper(module)
