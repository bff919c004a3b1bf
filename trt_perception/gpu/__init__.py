"""GPU pre- and post-processing with CuPy (optional: nothing here is imported by the CPU path).

* ``preprocess.GpuPreprocessor``: raw image bytes as received -> network input in a device buffer,
  one fused kernel (resize, letterbox, colour order, normalization, layout, dtype).
* ``segmentation.GpuSegmentationDecoder``: argmax / threshold (optionally after a fused bilinear
  upsample) and nearest label resampling to source size.
* ``visualize.GpuVisualizer``: palette colouring and overlays; ``detection.filter_detections_gpu``:
  score filter and NMS.

Each mirrors its CPU counterpart, is built from the same spec objects and gives the same results
(``bench/check_gpu.py`` checks this on a GPU). CuPy is imported lazily; without it the classes
raise ``ImportError`` explaining how to install it. ``resize_tables`` (numpy only) holds the index
math the kernels use, tested on CPU against OpenCV.
"""

from trt_perception.gpu._cupy import array_module, gpu_available, require_cupy

__all__ = ["array_module", "gpu_available", "require_cupy"]
