"""Triton Python-backend model ``fusionrt_pipeline``: the whole face swap, calling the stage
models through BLS (copied into the repository as ``fusionrt_pipeline/1/model.py``).

detect (BLS → ``fusionrt_detect``) → decode + NMS (numpy/OpenCV) → largest face → align →
swap (BLS → ``fusionrt_swap``) → paste-back. The source identity is detected and embedded
(BLS → ``fusionrt_embed``) once per distinct SOURCE image. The pre/post-processing is fusionrt's
own (``Detector``, ``Embedder``, ``NeuralSwapper``, ``paste_back``) on an engine whose ``run``
is a BLS request, so results match the in-process pipeline on the same files. Needs fusionrt
installed in the Triton container's Python (deploy/Dockerfile).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

try:  # only inside Triton's Python backend; tests inject a stand-in module
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - imported outside Triton for documentation/tests
    pb_utils = None

from ..engines.base import Artifact, Engine
from ..errors import EngineError, NoFaceError
from ..pipeline.host.detect import Detector
from ..pipeline.host.embed import Embedder
from ..pipeline.host.paste import paste_back
from ..pipeline.host.swap import NeuralSwapper, SourceIdentity
from .repo_pipeline import RepoStore


class BlsEngine(Engine):
    """An engine whose ``run`` is a BLS inference request on another Triton model."""

    name = "triton-bls"

    def __init__(self, artifact: Artifact, model_name: str):
        super().__init__(artifact)
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


class TritonPythonModel:
    """Triton calls ``initialize`` once, ``execute`` per batch of requests."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        repo = Path(args["model_repository"]).parent
        store = RepoStore(repo)

        def engine(name: str) -> BlsEngine:
            art = store.resolve(name)  # the served file: contract + inswapper's emap
            return BlsEngine(art, store.entries[name][2]).load()

        swap_spec = store.resolve(params.get("swapper", store.swapper)).spec
        self.detector = Detector(engine("retinaface_mnet025"),
                                 input_size=int(params.get("det_size", 640)))
        self.embedder = Embedder(engine(swap_spec.extra.get("embedder", "arcface_w600k_r50")))
        self.swapper = NeuralSwapper(engine(swap_spec.name))
        self.sources: dict[str, SourceIdentity] = {}

    def source(self, image: np.ndarray) -> SourceIdentity:
        key = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()
        if key not in self.sources:
            faces = self.detector.detect(image)
            if not faces:
                raise NoFaceError("no face in the source image")
            face = self.embedder.embed(image, [max(faces, key=lambda f: f.area)])[0]
            if len(self.sources) >= 8:
                self.sources.pop(next(iter(self.sources)))
            self.sources[key] = SourceIdentity(face, image)
        return self.sources[key]

    def swap(self, target: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, int]:
        """As ``FaceSwapPipeline.process_frame`` with ``select='largest'``."""
        ident = self.source(np.ascontiguousarray(source))
        faces = self.detector.detect(np.ascontiguousarray(target))
        if not faces:
            return target.copy(), 0
        res = self.swapper.swap(target, max(faces, key=lambda f: f.area), ident)
        return paste_back(target, res.crop, res.matrix, mask=res.mask), 1

    def execute(self, requests):
        responses = []
        for req in requests:
            try:
                tgt = pb_utils.get_input_tensor_by_name(req, "TARGET").as_numpy()
                src = pb_utils.get_input_tensor_by_name(req, "SOURCE").as_numpy()
                out, n = self.swap(tgt, src)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("IMAGE", out.astype(np.uint8)),
                    pb_utils.Tensor("FACES", np.array([n], np.int32))]))
            except Exception as e:  # one bad request must not fail the others
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(str(e))))
        return responses
