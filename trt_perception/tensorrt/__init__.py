"""TensorRT in one place, one way down: ``backend`` (run an engine; the spec's engine or one from the
cache) -> ``engine_cache`` (build once, reuse) -> ``engine_builder`` (ONNX -> engine) ->
``calibrator`` (INT8) -> ``runtime_support`` (importing TensorRT and CuPy, version, GPU identity,
logger), which imports none of the others. Nothing here imports TensorRT until it is called.
"""
