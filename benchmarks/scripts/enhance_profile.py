"""Where the enhance preset's frame time goes (issue 19): the 1080p GPU path with inswapper_128 +
gfpgan_1.4 + box/occlusion masks (synthetic random weights: speed only), as ``fusionrt bench
--preset enhance`` runs it.

1. a transcode of a generated clip through ``FaceSwapper.frame_stage`` (per-stage GPU ms per
   frame, thread waits, FPS);
2. one batch of 32 decoded frames processed repeatedly under ``torch.profiler`` (top CUDA and
   CPU ops → prof_cuda.txt, prof_cpu.txt);
3. the enhancer and occluder calls alone, and the stand-in modules in FP16/BF16, NCHW/
   channels-last, eager and as a CUDA graph.

Usage (on a GPU, repository root, models synthesised into FUSIONRT_HOME first):
    for m in inswapper_128 arcface_w600k_r50 xseg_1 gfpgan_1.4; do
        python3 -m fusionrt.cli models synth $m; done
    python3 benchmarks/scripts/enhance_profile.py --out "$OUT/prof" [--seconds 8]
Writes OUT/prof.json, prof_cuda.txt, prof_cpu.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _timed(torch, fn, n: int = 20) -> float:
    """Mean ms per call after 3 warm-up calls, synchronised."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1000


def _standins(torch, res: dict) -> None:
    from fusionrt.models.arch.standin_enhance import gfpgan_standin
    from fusionrt.models.arch.standin_mask import xseg_standin
    for name, make, batches in (("gfpgan", gfpgan_standin, (1, 8)), ("xseg", xseg_standin, (16, 32))):
        m = make().cuda().eval()
        for dt in (torch.float16, torch.bfloat16):
            for cl in (False, True):
                mm = m.to(dt)
                if cl:
                    mm = mm.to(memory_format=torch.channels_last)
                for b in batches:
                    x = (torch.randn(b, 3, 512, 512, device="cuda", dtype=dt) if name == "gfpgan"
                         else torch.rand(b, 256, 256, 3, device="cuda", dtype=dt))
                    if cl and name == "gfpgan":
                        x = x.to(memory_format=torch.channels_last)
                    key = f"{name}_{str(dt)[6:]}_{'cl' if cl else 'nchw'}_b{b}_ms"
                    res[key] = _timed(torch, lambda: mm(x), 10)
        mm, b = m.half().to(memory_format=torch.channels_last), batches[-1]
        x = (torch.randn(b, 3, 512, 512, device="cuda").half().to(memory_format=torch.channels_last)
             if name == "gfpgan" else torch.rand(b, 256, 256, 3, device="cuda").half())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                mm(x)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            mm(x)
        res[f"{name}_fp16_cl_graph_b{b}_ms"] = _timed(torch, g.replay)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=8.0, help="clip length for the transcode")
    ap.add_argument("--masks", default="box,occlusion")
    args = ap.parse_args(argv)
    import av
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    from fusionrt.bench.clip import make_test_video
    from fusionrt.bench.config import BenchConfig
    from fusionrt.bench.stages import read_images
    from fusionrt.pipeline.settings import PipelineConfig
    from fusionrt.pipeline.swapper import FaceSwapper
    from fusionrt.pipeline.video.loop import VideoConfig, transcode

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fusionrt-profile-"))
    clip = make_test_video(work / "clip.mp4", args.seconds, 30, (1920, 1080), audio=False)
    source = read_images((BenchConfig().source,))[0]
    cfg = PipelineConfig(swapper="inswapper_128", kernels="device", device="cuda",
                         allow_synthetic=True, precision="fp16", gen_batch=32,
                         enhancer="gfpgan_1.4", masks=tuple(args.masks.split(",")), timing=True)
    res: dict = {}
    with FaceSwapper.open(cfg) as sw:
        sw.set_source(source)
        t = time.perf_counter()
        sw.warmup(32, 1080, 1920)
        res["warmup_s"] = time.perf_counter() - t
        st = transcode(clip, work / "out.mp4", sw.frame_stage(32),
                       VideoConfig(batch=32, encoders=4, preset="ultrafast"))
        res["transcode"] = dict(frames=st.frames, faces=st.faces, seconds=st.seconds,
                                fps=st.frames / st.seconds, stage_ms=st.stage_ms,
                                waits_s=st.waits_s)
        print(json.dumps(res["transcode"], indent=1), flush=True)
        frames = []
        with av.open(str(clip)) as c:
            for f in c.decode(video=0):
                frames.append(f.to_ndarray(format="bgr24"))
                if len(frames) == 32:
                    break
        raw0 = torch.from_numpy(np.stack(frames)).cuda()
        once = lambda: sw.process(raw0.clone(), "bgr", 1080, 1920)  # noqa: E731
        res["batch32_wall_ms"] = _timed(torch, once, 5)
        res["batch32_faces"] = sum(once())
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            for _ in range(2):
                once()
            torch.cuda.synchronize()
        ka = p.key_averages()
        (args.out / "prof_cuda.txt").write_text(
            ka.table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=70))
        (args.out / "prof_cpu.txt").write_text(
            ka.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70))
        k = sw.kernels
        with torch.inference_mode():
            x = torch.rand(8, 3, 512, 512, device="cuda") * 255
            res["enhance_crops_b8_ms"] = _timed(torch, lambda: k.enhancer.enhance_crops(x))
            for b in (16, 32):
                for s in (128, 512):
                    x = torch.rand(b, 3, s, s, device="cuda") * 255
                    res[f"occluder_{s}_b{b}_ms"] = _timed(torch, lambda: k.occluder.masks(x))
            _standins(torch, res)
    (args.out / "prof.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
