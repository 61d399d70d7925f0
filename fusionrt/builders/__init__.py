"""Everything that makes files or modules: ONNX export, synthetic models, FP16/INT8 graphs,
calibration, quality gates, torch module rewrites, AOT packages, TensorRT plans — and
``open.open_engine``, which builds what an engine needs and then loads it."""
