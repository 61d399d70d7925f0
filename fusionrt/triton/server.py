"""``fusionrt triton serve``: the pipeline inside a real Triton server, through PyTriton.

Runs in the isolated PyTriton venv (``scripts/triton_venv.sh``: PyTriton pins numpy < 2), as
``python -m fusionrt.triton.server --repo REPO ...``; the CLI command starts that process.

Models bound (HTTP, gRPC and Prometheus metrics from tritonserver itself, on 127.0.0.1):
  * ``fusionrt_pipeline``: TARGET/SOURCE BGR uint8 images → IMAGE, FACES, VERSION (the swap
    model version that made it); same-size requests are batched by Triton's dynamic batcher.
  * ``fusionrt_detect`` / ``fusionrt_embed`` / ``fusionrt_swap``: the tensor stages with the
    repository's exact dims, dynamically batched by Triton.
  * ``fusionrt_control``: ``{"action": "status" | "load"}`` (JSON bytes) for releases.

Hot update: PyTriton binds Python callables, so Triton's own repository load API cannot swap
what they run. The callables instead read one ``Slot`` holding the current pipeline; a ``load``
command builds and warms the pipeline from the repository's served versions in the control
model's thread while the old one keeps answering, then swaps the reference. Requests that
already hold the old pipeline finish on it; it is closed when the last one is done. A control
model (rather than a file watch) lets ``release`` wait for "loaded and warmed" or a refusal and
roll back on failure, over the same authenticated-by-network Triton endpoints.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .repo_pipeline import Identities, Loaded, build_pipeline, swap_frames
from .repository import STAGES

log = logging.getLogger("fusionrt.triton.server")

SOURCE_CACHE = 8  # prepared source identities kept per pipeline version


class Slot:
    """The serving pipeline, swapped atomically; each user holds it until done."""

    def __init__(self, repo: Path):
        self.repo = repo
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._users: dict[int, int] = {}
        self._idle = threading.Condition(self._lock)
        self.current = self._prepare(build_pipeline(repo))

    @staticmethod
    def _prepare(loaded: Loaded) -> Loaded:
        loaded.sources = Identities(loaded.pipe, SOURCE_CACHE)  # type: ignore[attr-defined]
        loaded.run_lock = threading.Lock()  # type: ignore[attr-defined]
        return loaded

    @contextmanager
    def use(self):
        with self._lock:
            cur = self.current
            self._users[id(cur)] = self._users.get(id(cur), 0) + 1
        try:
            yield cur
        finally:
            with self._lock:
                self._users[id(cur)] -= 1
                self._idle.notify_all()

    def load(self) -> dict:
        """Build + warm the repository's served versions, then swap; old one closed when idle."""
        with self._load_lock:
            new = self._prepare(build_pipeline(self.repo))  # raises: the old keeps serving
            with self._lock:
                old, self.current = self.current, new
                self._idle.wait_for(lambda: self._users.get(id(old), 0) == 0, timeout=120)
                self._users.pop(id(old), None)
            old.pipe.close()
            log.info("serving versions %s (was %s)", new.versions, old.versions)
            return {"ok": True, "versions": new.versions, "previous": old.versions}

    def status(self) -> dict:
        return {"ok": True, "versions": self.current.versions}


def make_infer_functions(slot: Slot):
    """(pipeline, stage factory, control) callables for PyTriton, numpy in, numpy out."""
    from pytriton.decorators import batch

    @batch
    def pipeline(TARGET: np.ndarray, SOURCE: np.ndarray):
        with slot.use() as cur, cur.run_lock:
            identities = [cur.sources.get(src) for src in SOURCE]
            results = swap_frames(cur.pipe, list(TARGET), identities)
            version = cur.versions.get(STAGES["swap"], 0)
        return {"IMAGE": np.stack([out for out, _ in results]),
                "FACES": np.asarray([[n] for _, n in results], np.int32),
                "VERSION": np.full((len(results), 1), version, np.int32)}

    def stage(name: str):
        @batch
        def run(**feeds):
            with slot.use() as cur:
                engine = cur.engines[name]
                out = engine.run({k: np.ascontiguousarray(v) for k, v in feeds.items()})
                return {k: np.asarray(v) for k, v in out.items()}
        return run

    def control(requests):
        replies = []
        for req in requests:
            cmd = json.loads(req["COMMAND"].reshape(-1)[0])
            action = cmd.get("action")
            if action == "load":
                reply = slot.load()
            elif action == "status":
                reply = slot.status()
            else:
                raise ValueError(f"control | action {action!r}; expected 'load' or 'status'")
            replies.append({"REPLY": np.array([json.dumps(reply).encode()], dtype=np.bytes_)})
        return replies

    return pipeline, stage, control


def _t(name: str, dtype, shape: tuple):
    from pytriton.model_config import Tensor
    return Tensor(name=name, dtype=dtype, shape=shape)


def _spec_t(t, dims: dict):
    """A PyTriton tensor for a contract tensor: batch axis dropped, symbolic axes made exact."""
    return _t(t.name, np.dtype(t.dtype),
              tuple(dims.get(d, -1) if isinstance(d, str) else d for d in t.shape[1:]))


def serve(repo: Path, http_port: int, grpc_port: int, metrics_port: int, max_batch: int = 8,
          max_delay_us: int = 2000) -> None:
    """Start tritonserver with the models bound and block until it stops."""
    from pytriton.model_config import DynamicBatcher, ModelConfig
    from pytriton.triton import Triton, TritonConfig

    from ..pipeline.host.detect import priors

    slot = Slot(repo)
    pipeline, stage, control = make_infer_functions(slot)
    batched = ModelConfig(max_batch_size=max_batch,
                          batcher=DynamicBatcher(max_queue_delay_microseconds=max_delay_us))
    cfg = TritonConfig(http_address="127.0.0.1", http_port=http_port, grpc_address="127.0.0.1",
                       grpc_port=grpc_port, metrics_port=metrics_port,
                       metrics_address="127.0.0.1", allow_gpu_metrics=False)
    with Triton(config=cfg) as triton:
        img = (-1, -1, 3)
        triton.bind("fusionrt_pipeline", pipeline,
                    inputs=[_t("TARGET", np.uint8, img), _t("SOURCE", np.uint8, img)],
                    outputs=[_t("IMAGE", np.uint8, img), _t("FACES", np.int32, (1,)),
                             _t("VERSION", np.int32, (1,))], config=batched, strict=True)
        det = slot.current.pipe.settings.det_size
        dims = {"H": det, "W": det, "A": len(priors(det))}
        for st, name in STAGES.items():
            spec = slot.current.engines[st].spec
            triton.bind(name, stage(st), inputs=[_spec_t(t, dims) for t in spec.inputs],
                        outputs=[_spec_t(t, dims) for t in spec.outputs], config=batched)
        triton.bind("fusionrt_control", control,
                    inputs=[_t("COMMAND", np.bytes_, (1,))],
                    outputs=[_t("REPLY", np.bytes_, (1,))], config=ModelConfig(batching=False))
        log.info("fusionrt triton server: http 127.0.0.1:%d, grpc %d, metrics %d; versions %s",
                 http_port, grpc_port, metrics_port, slot.current.versions)
        triton.serve()


def add_server_args(p: argparse.ArgumentParser) -> None:
    """The server's options: shared by ``fusionrt triton serve`` and this module's ``main``,
    which that command starts in the PyTriton venv."""
    p.add_argument("--repo", type=Path, required=True)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--max-batch", type=int, default=8)
    add_delay_arg(p, "--max-delay-us")


def _delay_ms(text: str) -> float:
    ms = float(text)
    if not ms >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"got '{text}'; expected milliseconds >= 0")
    return ms


def _us_as_ms(text: str) -> float:
    return _delay_ms(text) / 1000.0


def add_delay_arg(p: argparse.ArgumentParser, old: str, default_ms: float = 2.0) -> None:
    """``--max-delay-ms``, the spelling ``fusionrt serve`` uses too; ``old``, the microseconds
    flag these commands had, still works (hidden). Triton's batcher counts microseconds:
    ``delay_us`` converts."""
    p.add_argument("--max-delay-ms", type=_delay_ms, default=default_ms,
                   help="longest wait of Triton's dynamic batcher for a batch to fill, in ms")
    p.add_argument(old, type=_us_as_ms, dest="max_delay_ms", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)


def delay_us(ms: float) -> int:
    return int(round(ms * 1000))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fusionrt.triton.server")
    add_server_args(p)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve(a.repo, a.http_port, a.grpc_port, a.metrics_port, a.max_batch, delay_us(a.max_delay_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
