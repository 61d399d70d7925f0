"""Triton deployment: model repository generation, a PyTriton server, and the release pipeline.

``repository`` writes a Triton model repository (one model per stage plus the pipeline model),
``configs`` makes each ``config.pbtxt`` from Triton's own protobuf schema, ``server`` serves the
pipeline inside a real Triton server through PyTriton (in its own venv: PyTriton pins numpy < 2),
``release`` ships a new model version into a repository without downtime.
"""
