"""fusionrt.bench: ``fusionrt bench`` — engines × precisions × batch sizes × stages.

runner (the matrix and the timing method), timers (CUDA events / perf_counter / stub), config
(settings and per-device defaults), stages + reference (inputs and the FP32 reference), artifacts
(which file each precision loads), pipeline_row (the whole-pipeline row), machine (versions,
GPU memory probes), report + markdown (JSON, Markdown, PNG, ``--compare``), commands (CLI).
"""
