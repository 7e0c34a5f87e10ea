"""Development tooling: what tests, benchmarks and reports need, and a model never does.

Nothing under ``nattk.backbones`` imports this package. Ahead-of-time Triton compiles
and their SASS counters (:mod:`.triton_aot`, :mod:`.triton_sass`), the table of
published layer shapes (:mod:`.layer_shapes`), ONNX Runtime checks
(:mod:`.onnx_runtime`), the commit a benchmark ran at (:mod:`.provenance`) and the
proof that a refactor of ``configs/`` left every resolved config as it was
(:mod:`.config_equivalence`).
"""
