"""The face swap itself: ``plan.py`` (which engine, device and options run each stage, and
why), ``swapper.py`` (``FaceSwapper``, the one orchestrator), the two kernel sets ``host/``
(numpy/OpenCV) and ``device/`` (torch), and ``video/`` (the one video loop)."""
