#!/usr/bin/env python3
"""Make a short test clip (``fusionrt.bench.clip``): a pan/zoom over the example photos, H.264
with an AAC tone. Tests import it (``from videos import make_test_video``: pytest puts tests/ on
sys.path, as for ``conftest``). For a demo clip, from the repository root:

    python tests/videos.py --out clip.mp4 --seconds 3 --fps 25 --size 640x480
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from fusionrt.bench.clip import make_test_video  # noqa: E402,F401  (re-exported for the tests)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="clip.mp4")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--size", default="640x480", help="WxH, both even")
    ap.add_argument("--no-audio", action="store_true", help="video only")
    args = ap.parse_args()
    try:
        path = make_test_video(args.out, args.seconds, args.fps, args.size, audio=not args.no_audio)
    except ValueError as e:
        ap.error(str(e))
    print(path)


if __name__ == "__main__":
    main()
