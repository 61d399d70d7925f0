"""Probe ONNX models for the conformance tests: small graphs with a real model's I/O contract
whose outputs are known functions of their inputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save_probe(nodes, inputs, outputs, inits, path):
    """A graph of ``nodes`` with ``inits`` (name → array) as initializers, saved to ``path``."""
    graph = helper.make_graph(nodes, "probe", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def value_info(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, list(shape))
