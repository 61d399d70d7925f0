"""``fusionrt live``: swap faces in a camera, a network stream or a paced file, frame by frame,
with bounded latency.

    capture thread   source.Source: decode (PyAV: v4l2, rtsp, udp, files), pacing with
                     ``--realtime``, the stage's upload (on the GPU path: one H2D copy)
                     -> a drop-oldest slot (runner.DropOldest: a late compute never queues up)
    caller's thread  the stage's compute: ``FaceSwapper`` at batch 1 (stage.LiveStage)
                     -> a drop-oldest slot
    output thread    the stage's download (one D2H copy), sink.Sink: window, v4l2, udp/rtmp,
                     a file, a virtual camera, or nothing

``stats`` turns what the runner recorded into the ``--stats`` file. A front end: no stage code.
"""
