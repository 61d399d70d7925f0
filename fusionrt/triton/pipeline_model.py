"""Triton Python-backend model ``fusionrt_pipeline``: the whole face swap, calling the stage
models through BLS (copied into the repository as ``fusionrt_pipeline/1/model.py``).

It is fusionrt's one orchestrator, ``FaceSwapper``, on the repository's stage plan (the same
plan as the in-process ``repo_pipeline.build_pipeline``) with host kernels whose engines are BLS
requests: detect → ``fusionrt_detect``, embed → ``fusionrt_embed``, swap → ``fusionrt_swap``;
selection, alignment and paste-back are the swapper's. The source identity is prepared once
per distinct SOURCE image. So results match the in-process pipeline on the same files. Needs
fusionrt installed in the Triton container's Python (deploy/Dockerfile). Imports are absolute:
Triton loads this file as a top-level module, outside the package.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

try:  # only inside Triton's Python backend; tests inject a stand-in module
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - imported outside Triton for documentation/tests
    pb_utils = None

from fusionrt.engines.base import Engine, EngineConfig
from fusionrt.errors import EngineError
from fusionrt.models.spec import Artifact
from fusionrt.pipeline.host.kernels import HostKernels
from fusionrt.pipeline.plan import Plan, plan_stages
from fusionrt.pipeline.swapper import FaceSwapper
from fusionrt.pipeline.types import Identity
from fusionrt.triton.repo_pipeline import Identities, RepoStore, repo_settings, swap_frames

SOURCE_CACHE = 8  # prepared source identities kept


class BlsEngine(Engine):
    """An engine whose ``run`` is a BLS inference request on another Triton model."""

    name = "triton-bls"

    def __init__(self, artifact: Artifact, model_name: str, config: EngineConfig | None = None):
        super().__init__(artifact, config)
        self.model_name = model_name

    def _load(self) -> None:
        pass

    def _run(self, feeds):
        request = pb_utils.InferenceRequest(
            model_name=self.model_name,
            requested_output_names=[t.name for t in self.spec.outputs],
            inputs=[pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in feeds.items()])
        response = request.exec()
        if response.has_error():
            raise EngineError(f"model '{self.model_name}' | BLS request failed: "
                              f"{response.error().message()}")
        return {t.name: pb_utils.get_output_tensor_by_name(response, t.name).as_numpy()
                for t in self.spec.outputs}


class BlsKernels(HostKernels):
    """The host kernels with every stage's engine a BLS request to that stage's Triton model."""

    def __init__(self, models: dict[str, str]):
        super().__init__()
        self.models = models  # zoo model name -> Triton model name

    def _open(self, stage_plan: Any) -> Engine:
        # the served file's artifact: its contract (and inswapper's emap, read from the file)
        engine = BlsEngine(stage_plan.artifact, self.models[stage_plan.model],
                           stage_plan.engine_config()).load()
        self.engines.append(engine)
        return engine


def bls_plan(store: RepoStore, swapper: str | None = None, det_size: int | None = None) -> Plan:
    """The repository's stage plan (as ``repo_pipeline.build_pipeline`` plans it), each stage's
    engine a BLS request to the stage's Triton model."""
    plan = plan_stages(repo_settings(store, swapper, det_size), store)
    stages = {st: dataclasses.replace(sp, engine=BlsEngine.name,
                                      reason=f"BLS request to '{store.entries[sp.model][2]}'")
              for st, sp in plan.stages.items()}
    return dataclasses.replace(plan, stages=stages)


class TritonPythonModel:
    """Triton calls ``initialize`` once, ``execute`` per batch of requests."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        store = RepoStore(Path(args["model_repository"]).parent)
        det = params.get("det_size")
        plan = bls_plan(store, params.get("swapper"), int(det) if det else None)
        models = {zoo: entry[2] for zoo, entry in store.entries.items()}
        self.swapper = FaceSwapper(plan, BlsKernels(models))
        self.sources = Identities(self.swapper, SOURCE_CACHE)

    def finalize(self):
        self.swapper.close()

    def source(self, image: np.ndarray) -> Identity:
        """The identity of the largest face of ``image`` (prepared once per distinct image)."""
        return self.sources.get(image)

    def swap(self, target: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, int]:
        """As ``FaceSwapper.process_frame`` with ``source``'s largest face as the identity."""
        return swap_frames(self.swapper, [target], [self.source(source)])[0]

    def execute(self, requests):
        results: list[Any] = [None] * len(requests)
        todo = []  # (request index, target, identity)
        for i, req in enumerate(requests):
            try:
                tgt = pb_utils.get_input_tensor_by_name(req, "TARGET").as_numpy()
                src = pb_utils.get_input_tensor_by_name(req, "SOURCE").as_numpy()
                todo.append((i, tgt, self.source(src)))
            except Exception as e:  # noqa: BLE001 - one bad request must not fail the others
                results[i] = e
        try:  # every request's faces in one generator call
            done = swap_frames(self.swapper, [t for _, t, _ in todo], [d for _, _, d in todo])
        except Exception:  # noqa: BLE001 - find the request that broke it: one by one
            done = []
            for _, tgt, ident in todo:
                try:
                    done.append(swap_frames(self.swapper, [tgt], [ident])[0])
                except Exception as e:  # noqa: BLE001
                    done.append(e)
        for (i, _, _), r in zip(todo, done):
            results[i] = r
        return [self._response(r) for r in results]

    @staticmethod
    def _response(result: Any):
        if isinstance(result, BaseException):
            return pb_utils.InferenceResponse(output_tensors=[],
                                              error=pb_utils.TritonError(str(result)))
        out, n = result
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("IMAGE", out.astype(np.uint8)),
            pb_utils.Tensor("FACES", np.array([n], np.int32))])
