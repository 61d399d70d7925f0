"""Model contracts: what a model takes and gives, how its input is prepared, where it comes from,
and the ``Artifact`` (contract + files) that engines load.

A ``ModelSpec`` is written into every exported ONNX file (``metadata_props``) so that a file
names its own contract: fusionrt never guesses a model from its tensor shapes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np

Dim = Union[int, str]  # an int is fixed; a str ("N") is a symbolic (dynamic) axis


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, numpy dtype name and shape (symbolic axes as strings)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def check(self, array: np.ndarray) -> None:
        """Raise ``ValueError`` naming the tensor, what came and what was expected."""
        if array.dtype != np.dtype(self.dtype):
            raise ValueError(
                f"input '{self.name}' | got dtype {array.dtype}; expected {self.dtype}")
        if array.ndim != len(self.shape) or any(
                isinstance(d, int) and d != s for d, s in zip(self.shape, array.shape)):
            raise ValueError(
                f"input '{self.name}' | got shape {tuple(array.shape)}; expected {self.shape_str()}")

    def shape_str(self) -> str:
        return "(" + ", ".join(str(d) for d in self.shape) + ")"

    def with_batch(self, n: int) -> tuple[int, ...]:
        """The concrete shape with every symbolic axis set to ``n``."""
        return tuple(n if isinstance(d, str) else d for d in self.shape)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input tensor."""

    size: tuple[int, int] | None  # (width, height); None = any size (detectors)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str  # "RGB" or "BGR"
    layout: str = "NCHW"


@dataclass(frozen=True)
class ModelSpec:
    """Everything fusionrt knows about one model, without loading it.

    Attributes:
        name: zoo key, e.g. ``"inswapper_128"``.
        task: ``"detect" | "embed" | "swap"``.
        arch: reference architecture name (``fusionrt.models.arch``) used by ``synth``/``export``.
        template: alignment template the model was trained with (``fusionrt.pipeline.host.align``).
        url / sha256 / size: where the real weights live and how to check them.
        sha256_verified: False where the hash could not be checked against a public source;
            the store then refuses the file unless the user passes ``--trust``.
        builtin: weights ship with the install (no download).
        extra: model-specific facts (e.g. ``{"emap": "initializer name"}``).
    """

    name: str
    task: str
    arch: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocess: Preprocess
    template: str | None
    url: str | None
    sha256: str | None
    size: int | None
    license: str
    source: str
    sha256_verified: bool = True
    builtin: bool = False
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f"model '{self.name}' has no input '{name}'")

    def to_metadata(self, **provenance: str) -> dict[str, str]:
        """The ``metadata_props`` written into an ONNX file: the contract as JSON plus provenance."""
        meta = {"fusionrt.spec": json.dumps(asdict(self), sort_keys=True),
                "fusionrt.name": self.name, "fusionrt.task": self.task}
        meta.update({f"fusionrt.{k}": str(v) for k, v in provenance.items()})
        return meta


def io_from_json(items: Sequence[dict]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(i["name"], i["dtype"], tuple(i["shape"])) for i in items)


def spec_from_metadata(meta: dict[str, str]) -> ModelSpec | None:
    """Rebuild a ``ModelSpec`` from ONNX ``metadata_props``; None if the file carries none."""
    raw = meta.get("fusionrt.spec")
    if raw is None:
        return None
    d = json.loads(raw)
    d["inputs"] = io_from_json(d["inputs"])
    d["outputs"] = io_from_json(d["outputs"])
    p = d["preprocess"]
    d["preprocess"] = Preprocess(
        tuple(p["size"]) if p["size"] else None, tuple(p["mean"]), tuple(p["std"]),
        p["channel_order"], p.get("layout", "NCHW"))
    return ModelSpec(**d)


@dataclass(frozen=True)
class Artifact:
    """What an engine loads: an ONNX file and its contract (torch engines also read ``weights``)."""

    spec: ModelSpec
    onnx_path: Path | None = None
    weights_path: Path | None = None  # torch state dict for the reference architecture
    synthetic: bool = False


def sample_feeds(artifact: Artifact, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs in the contract's shapes (detectors at 640²)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in artifact.spec.inputs:
        shape = tuple(batch if d == "N" else (640 if isinstance(d, str) else d) for d in t.shape)
        a = rng.standard_normal(shape).astype(t.dtype)
        if len(shape) == 2:  # identity vectors are unit-norm in every contract
            a /= np.linalg.norm(a, axis=1, keepdims=True)
        feeds[t.name] = a
    return feeds
