"""A segmentation frame's whole GPU sequence around the network, replayed as CUDA graphs.

Per frame shape two graphs are captured once (the first frame of a shape runs the same calls
plainly) and replayed for every later frame, so nothing is allocated and no Python kernel set-up
runs per frame:

* ``upload``: the frame, staged in page-locked host memory (``staging`` hands out the buffer so a
  transport can write the received bytes there directly), goes up in one copy and one kernel writes
  the network input (``GpuPreprocessor``) into a buffer that stays on the device;
* ``publish``: a NaN/Inf check of the scores, the labels (decision + resampling), their palette
  colours and the overlay in one fused kernel (``GpuSegmentationDecoder.launch``), and one copy of
  everything published (check flag, labels, colour mask, overlay) into page-locked host memory.

The network runs between the two on the same stream with its input and outputs on the device.
With ``mapped=True`` (Jetson, where host and device share one DRAM) the page-locked buffers are
mapped into the device's address space and nothing is copied: the preprocessing kernel reads the
staged frame in place and the fused kernel writes the published images straight into host memory.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trt_perception.errors import InferenceError
from trt_perception.geometry import ResizeGeometry
from trt_perception.gpu._cupy import require_cupy
from trt_perception.gpu.preprocess import GpuPreprocessor, raw_bytes
from trt_perception.gpu.segmentation import DecodePlan, GpuSegmentationDecoder
from trt_perception.gpu.visualize import DevicePalette
from trt_perception.row_bands import run_in_bands

# cudaHostAlloc flags: usable from every context, mapped into the device's address space.
_HOST_ALLOC_PORTABLE, _HOST_ALLOC_MAPPED = 1, 2
# Graphs kept per kind (frame shapes / output configurations); older ones are dropped.
MAX_GRAPHS = 4
# Alignment of the regions of the published buffer; the first holds the int32 check flag.
_ALIGN = 256
# A frame in ordinary memory of at least this many bytes is copied into the staging buffer in
# slices on several cores (``row_bands``; numpy lets go of the GIL while copying).
PARALLEL_COPY_MIN_BYTES = 1 << 20


def _aligned(size: int) -> int:
    return (size + _ALIGN - 1) // _ALIGN * _ALIGN


class PinnedBuffer:
    """``size`` bytes of page-locked host memory mapped into the device's address space, seen as
    ``host`` (numpy uint8) and ``device`` (cupy uint8). Freed when the last view goes."""

    def __init__(self, size: int) -> None:
        cupy = require_cupy()
        self._runtime = cupy.cuda.runtime
        self.pointer = self._runtime.hostAlloc(size, _HOST_ALLOC_PORTABLE | _HOST_ALLOC_MAPPED)
        self.size = size
        block = (ctypes.c_uint8 * size).from_address(self.pointer)
        block._owner = self  # type: ignore[attr-defined]  # numpy views keep the allocation alive
        self.host: npt.NDArray[np.uint8] = np.ctypeslib.as_array(block)
        get_device_pointer = getattr(self._runtime, "hostGetDevicePointer", None)  # absent from some CuPy builds
        device_pointer = get_device_pointer(self.pointer, 0) if get_device_pointer else self.pointer  # UVA: same address
        memory = cupy.cuda.UnownedMemory(device_pointer, size, self)
        self.device = cupy.ndarray((size,), cupy.uint8, cupy.cuda.MemoryPointer(memory, 0))

    def __del__(self) -> None:
        if getattr(self, "pointer", 0):
            self._runtime.freeHost(self.pointer)
            self.pointer = 0


@dataclass
class PublishedFrame:
    """What one frame publishes: views into page-locked memory, valid until the next frame."""

    labels: npt.NDArray[np.unsignedinteger]
    color_mask: npt.NDArray[np.uint8] | None
    overlay: npt.NDArray[np.uint8] | None
    device_labels: Any  # the labels where the kernel wrote them (cupy), e.g. for GpuVisualizer


@dataclass
class _Upload:
    """One image layout: its checked geometry and byte layout, network input and upload graph."""

    geometry: ResizeGeometry
    size: int  # bytes of a frame, rows padded as received
    step: int  # bytes per row
    tensor: Any  # the network input the graph writes (device)
    graph: Any
    frame: Any  # the frame's bytes on the device (cupy uint8)


@dataclass
class _Publish:
    """One output configuration: its plan, buffers and (after the first frame) its graph."""

    plan: DecodePlan
    host: PinnedBuffer
    device: Any  # the device buffer the kernels write (host.device when mapped)
    frame: PublishedFrame
    regions: tuple[Any, Any, Any]  # flag, colours, overlay (device views or None; the labels: frame.device_labels)
    graph: Any = None  # captured right after the first frame, before the entry is kept


class SegmentationFramePath:
    """Upload + preprocess and decode + colour + overlay + download of one segmentation model as
    two CUDA graphs per frame shape; same values as ``GpuPreprocessor`` and ``GpuSegmentationDecoder``.

    ``upload`` enqueues and returns the network input (a device array); run the network on
    ``stream``, then ``publish`` its outputs: it waits for the device once and returns views.
    """

    def __init__(
        self, preprocessor: GpuPreprocessor, decoder: GpuSegmentationDecoder, palette: npt.NDArray[np.uint8],
        mapped: bool = False, stream: Any = None,
    ) -> None:
        self.cupy = require_cupy()
        self.preprocessor, self.decoder, self.mapped = preprocessor, decoder, mapped
        self.palette = DevicePalette(palette)
        self.stream = stream if stream is not None else self.cupy.cuda.Stream(non_blocking=True)
        self._staging: PinnedBuffer | None = None
        self._device_frame: Any = None
        # image layout (shape, strides, dtype, channel order) -> what its frames need, graph included
        self._uploads: OrderedDict[tuple[Any, ...], _Upload] = OrderedDict()
        self._publishes: OrderedDict[tuple[Any, ...], _Publish] = OrderedDict()
        self.last_image: tuple[Any, int] = (None, 0)  # the frame on the device (bytes, step)

    # ------------------------------------------------------------------ upload

    def staging(self, size: int) -> npt.NDArray[np.uint8]:
        """Page-locked bytes (at least ``size``) a transport can write the next frame into, rows
        padded as received; ``upload`` then copies nothing on the host. Reused while large enough."""
        if self._staging is None or self._staging.size < size:
            self._staging = PinnedBuffer(size)
            self._device_frame = None if self.mapped else self.cupy.empty(size, self.cupy.uint8)
            self._uploads.clear()  # their graphs read the old buffers
            self._publishes.clear()
        return self._staging.host[:size]

    def upload(self, pixels: npt.NDArray, channel_order: str) -> tuple[Any, ResizeGeometry]:
        """Enqueue the frame's upload and preprocessing; the network input and the geometry.

        The checks, geometry and byte layout of an image depend only on its shape, strides, dtype
        and channel order: they are worked out once per such layout, so a frame of a known layout
        costs a dictionary lookup and a graph launch (plus a host copy if it is not staged)."""
        if not isinstance(pixels, np.ndarray):
            self.preprocessor.check(pixels, channel_order)  # raises the CPU path's message
        key = (pixels.shape, pixels.strides, pixels.dtype, channel_order)
        entry = self._uploads.get(key)
        if entry is None:
            geometry = self.preprocessor.check(pixels, channel_order)
            span, step = raw_bytes(pixels)
            size = span.size
        else:
            self._uploads.move_to_end(key)
            geometry, size, step = entry.geometry, entry.size, entry.step
        if self._staging is None or self._staging.size < size:  # never for a kept layout: staging() drops them all
            self.staging(size)
        assert self._staging is not None
        if pixels.__array_interface__["data"][0] != self._staging.pointer:
            self._stage(raw_bytes(pixels)[0])
        if entry is not None:
            entry.graph.launch(self.stream)
        else:
            with self.stream:
                tensor = self.cupy.empty(self.preprocessor.input_shape(geometry.network_size), self.preprocessor.spec.dtype)
                arguments = (size, step, channel_order, geometry, tensor)
                self._enqueue_upload(*arguments)
                graph = self._capture(lambda: self._enqueue_upload(*arguments))
            entry = self._uploads[key] = _Upload(geometry, size, step, tensor, graph, self._frame_on_device(size))
            if len(self._uploads) > MAX_GRAPHS:
                self._uploads.popitem(last=False)
        self.last_image = (entry.frame, step)
        return entry.tensor, geometry

    def _stage(self, span: npt.NDArray[np.uint8]) -> None:
        """Copy a frame's bytes into the staging buffer, in parallel slices when it is large."""
        assert self._staging is not None
        target = self._staging.host[: span.size]

        def copy_slice(start: int, stop: int) -> None:
            np.copyto(target[start:stop], span[start:stop])

        run_in_bands(copy_slice, span.size, span.size, PARALLEL_COPY_MIN_BYTES)

    def _frame_on_device(self, size: int) -> Any:
        assert self._staging is not None
        return (self._staging.device if self.mapped else self._device_frame)[:size]

    def _enqueue_upload(self, size: int, step: int, channel_order: str, geometry: ResizeGeometry, tensor: Any) -> None:
        assert self._staging is not None
        if not self.mapped:
            runtime = self.cupy.cuda.runtime
            runtime.memcpyAsync(self._device_frame.data.ptr, self._staging.pointer, size, runtime.memcpyHostToDevice, self.stream.ptr)
        self.preprocessor.run_on_device(self._frame_on_device(size), step, geometry, channel_order, out=tensor)

    # ------------------------------------------------------------------ publish

    def publish(
        self, outputs: Mapping[str, Any], geometry: ResizeGeometry, at_source: bool,
        color_mask: bool = False, overlay: bool = False, alpha: float = 0.5, channel_order: str = "RGB",
    ) -> PublishedFrame:
        """Labels (and the colour mask / overlay when asked) of the network's device ``outputs`` for
        the frame last uploaded (``channel_order`` its encoding); waits for the device once."""
        if overlay and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
        name, tensor = self.decoder.select(outputs)
        image, step = self.last_image
        key = (name, int(tensor.data.ptr), tuple(tensor.shape), tensor.dtype.str, geometry, at_source,
               color_mask, overlay, alpha if overlay else None, channel_order if overlay else None,
               int(image.data.ptr) if overlay else None, step if overlay else None)
        with self.stream:
            entry = self._publishes.get(key)
            if entry is not None:
                self._publishes.move_to_end(key)
                entry.graph.launch(self.stream)
            else:
                entry = self._new_publish(name, tensor, geometry, at_source, color_mask, overlay)
                arguments = (entry, overlay, alpha, channel_order)
                self._enqueue_publish(*arguments)
                entry.graph = self._capture(lambda: self._enqueue_publish(*arguments))
                self._publishes[key] = entry
                if len(self._publishes) > MAX_GRAPHS:
                    self._publishes.popitem(last=False)
        self.stream.synchronize()
        if entry.host.host[:4].view(np.int32)[0]:
            raise InferenceError(f"output '{name}' contains NaN or infinite values")
        return entry.frame

    def _new_publish(self, name: str, tensor: Any, geometry: ResizeGeometry, at_source: bool,
                     color_mask: bool, overlay: bool) -> _Publish:
        if tensor.dtype not in (np.float32, np.float16) or not tensor.flags.c_contiguous:
            raise InferenceError(f"output '{name}': the GPU frame path takes C-contiguous float32/float16 scores, got {tensor.dtype}")
        plan = self.decoder.plan(name, tensor, geometry, at_source)
        height, width = plan.output_size
        sizes = [4, height * width * plan.label_dtype.itemsize, height * width * 3 * color_mask, height * width * 3 * overlay]
        offsets = np.cumsum([0] + [_aligned(size) for size in sizes]).tolist()
        host = PinnedBuffer(offsets[-1])
        device = host.device if self.mapped else self.cupy.empty(offsets[-1], self.cupy.uint8)
        views = [host.host[offsets[i] : offsets[i] + sizes[i]] for i in range(4)]
        flag, labels = device[offsets[0] : offsets[0] + sizes[0]], device[offsets[1] : offsets[1] + sizes[1]]
        colours, blended = (device[offsets[i] : offsets[i] + sizes[i]] if sizes[i] else None for i in (2, 3))
        frame = PublishedFrame(
            views[1].view(plan.label_dtype).reshape(height, width),
            views[2].reshape(height, width, 3) if color_mask else None,
            views[3].reshape(height, width, 3) if overlay else None,
            labels.view(plan.label_dtype).reshape(height, width),
        )
        return _Publish(plan, host, device, frame, (flag, colours, blended))

    def _enqueue_publish(self, entry: _Publish, overlay: bool, alpha: float, channel_order: str) -> None:
        runtime = self.cupy.cuda.runtime
        flag, colours, blended = entry.regions
        plan = entry.plan
        runtime.memsetAsync(flag.data.ptr, 0, 4, self.stream.ptr)
        image, step = self.last_image
        self.decoder.launch(
            plan, entry.frame.device_labels, colours, blended,
            self.palette.table(plan.label_dtype), (image, step, channel_order) if overlay else None, alpha,
            flag.view(np.int32),
        )
        if not self.mapped:
            runtime.memcpyAsync(entry.host.pointer, entry.device.data.ptr, entry.host.size, runtime.memcpyDeviceToHost, self.stream.ptr)

    def _capture(self, enqueue: Any) -> Any:
        """A CUDA graph of what ``enqueue`` puts on the stream (which runs nothing while capturing)."""
        self.stream.begin_capture()
        try:
            enqueue()
        finally:
            graph = self.stream.end_capture()
        return graph
