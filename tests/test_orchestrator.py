"""One orchestrator: the CLI, the service, Triton's pipeline model and the Ray workers all drive
``FaceSwapper``, whose kernel set runs every stage. A recording kernel set proves it: each
front end's swap shows up as kernel calls, and its result equals ``FaceSwapper``'s own."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrt.pipeline import swapper as swapper_mod
from fusionrt.pipeline.host.kernels import HostKernels
from fusionrt.pipeline.settings import PipelineConfig
from fusionrt.pipeline.swapper import FaceSwapper

STAGES = ("detect", "embed", "swap", "paste")


class RecordingKernels(HostKernels):
    """The host kernels, with a log of every stage call (shared by all instances)."""

    calls: list[str] = []

    def detect(self, batch, rows):
        self.calls.append("detect")
        return super().detect(batch, rows)

    def embed(self, batch, faces, rows):
        self.calls.append("embed")
        return super().embed(batch, faces, rows)

    def swap(self, batch, faces, identities):
        self.calls.append("swap")
        return super().swap(batch, faces, identities)

    def paste(self, batch, faces, swapped):
        self.calls.append("paste")
        return super().paste(batch, faces, swapped)


@pytest.fixture
def recording(monkeypatch):
    RecordingKernels.calls = []
    monkeypatch.setattr(swapper_mod, "make_kernels", lambda plan: RecordingKernels())
    return RecordingKernels.calls


def _expected(settings, source, target):
    with FaceSwapper.open(settings, kernels=HostKernels()) as sw:
        sw.set_source(source)
        return sw.process_frame(target)


@pytest.mark.parametrize("swapper", ["classic", "inswapper_128"])
def test_service_version_drives_the_swapper(synthetic_home, recording, astronaut, grace, swapper):
    from fusionrt.serve.runtime import Runtime
    from fusionrt.serve.metrics import Metrics
    from fusionrt.serve.settings import ServeSettings
    settings = PipelineConfig(swapper=swapper, allow_synthetic=True)
    pytest.importorskip("fastapi")
    want, n = _expected(settings, astronaut, grace)
    runtime = Runtime(ServeSettings(pipeline=settings), Metrics())
    version = runtime.build(settings)  # loads, warms on the example photos and gates
    try:
        recording.clear()
        prepared = version.prepare_sync(astronaut)
        out, got_n = version.process_frames([grace], prepared)[0]
    finally:
        version.drain_and_close()
    assert got_n == n == 1 and np.array_equal(out, want)
    assert recording[0] == "detect" and {"detect", "swap", "paste"} <= set(recording)
    assert ("embed" in recording) == (swapper != "classic")


def test_ray_worker_drives_the_swapper(synthetic_home, recording, astronaut_path, grace_path,
                                       astronaut, grace, tmp_path):
    from fusionrt.batch.jobs import WorkItem
    from fusionrt.batch.workers import SwapWorker
    settings = PipelineConfig(swapper="inswapper_128", allow_synthetic=True)
    want, _ = _expected(settings, astronaut, grace)
    recording.clear()
    worker = SwapWorker("w0", str(astronaut_path), settings)
    assert worker.ready()["error"] is None
    dst = tmp_path / "out.png"
    res = worker.process(WorkItem(id="i0", kind="image", input_id="i0", src=str(grace_path),
                                      dst=str(dst)))
    assert res["ok"] and res["faces"] == 1, res
    import cv2
    assert np.array_equal(cv2.imread(str(dst)), want)
    assert [c for c in recording if c in STAGES][:2] == ["detect", "embed"]  # the source
    assert recording.count("swap") == 1 and recording.count("paste") == 1
