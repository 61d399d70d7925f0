"""A short synthetic test clip from the example photos: a slow pan/zoom over
examples/astronaut.png, then over examples/grace_hopper.jpg, H.264 (libx264, yuv420p) with a
440 Hz sine on AAC audio. The bench's end-to-end video row and the tests make their clips with
it (nothing is committed); ``python tests/videos.py --out clip.mp4`` makes a demo clip.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PHOTOS = ("astronaut.png", "grace_hopper.jpg")
TONE_HZ = 440.0
AUDIO_RATE = 48_000
ZOOM = 0.15        # zoom in by 15% over each half: faces stay in view, motion is visible
PAN = 0.06         # pan 6% of the photo width over each half


def _parse_size(size: str | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, str):
        w, _, h = size.lower().partition("x")
        size = (int(w), int(h))
    w, h = size
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise ValueError(f"size | got {w}x{h}; expected positive even width and height (yuv420p)")
    return w, h


def _view(img: np.ndarray, size: tuple[int, int], t: float) -> np.ndarray:
    """The photo scaled to cover ``size``, zoomed and panned by progress ``t`` in [0, 1]."""
    w, h = size
    ih, iw = img.shape[:2]
    p = 0.5 - 0.5 * math.cos(math.pi * t)  # ease in/out so the motion is smooth
    z = max(w / iw, h / ih) * (1.0 + ZOOM * p)
    cx, cy = iw / 2 + PAN * iw * (p - 0.5), ih / 2
    m = np.array([[z, 0.0, w / 2 - z * cx], [0.0, z, h / 2 - z * cy]])
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def make_test_video(out: str | Path = "clip.mp4", seconds: float = 3.0, fps: int = 25,
                    size: str | tuple[int, int] = (640, 480), audio: bool = True) -> Path:
    """Write the clip to ``out`` (container from the extension) and return its path.

    Args:
        out: destination, .mp4/.mkv/.mov.
        seconds: length; the first half shows the astronaut, the second Grace Hopper.
        fps: frame rate (constant).
        size: ``(width, height)`` or ``"WxH"``; both even.
        audio: add the 440 Hz AAC track (off for a video-only clip).
    """
    w, h = _parse_size(size)
    n = max(2, round(seconds * fps))
    photos = []
    for name in PHOTOS:
        img = cv2.imread(str(EXAMPLES / name), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"example photo '{EXAMPLES / name}' | missing or unreadable")
        photos.append(img)
    out = Path(out)
    with av.open(str(out), "w") as container:
        vs = container.add_stream("libx264", rate=Fraction(fps), options={"crf": "20", "preset": "veryfast"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = container.add_stream("aac", rate=AUDIO_RATE, layout="mono") if audio else None
        half = (n + 1) // 2
        for i in range(n):
            photo, k, m = (photos[0], i, half) if i < half else (photos[1], i - half, n - half)
            frame = av.VideoFrame.from_ndarray(_view(photo, (w, h), k / max(1, m - 1)), format="bgr24")
            frame.pts = i
            container.mux(vs.encode(frame))
        container.mux(vs.encode(None))
        if aus is not None:
            _write_tone(container, aus, n / fps)
    return out


def _write_tone(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    chunk = stream.codec_context.frame_size or 1024
    total = round(seconds * AUDIO_RATE)
    for start in range(0, total, chunk):
        t = np.arange(start, min(start + chunk, total)) / AUDIO_RATE
        samples = (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
