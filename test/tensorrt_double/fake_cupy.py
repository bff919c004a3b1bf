"""A host-memory stand-in for the small part of CuPy the TensorRT backend uses.

"Device" memory is ordinary host memory with real addresses, so pointers handed to the fake
TensorRT can be read and written with ctypes exactly like the real engine reads device pointers.
Work enqueued on a stream runs at once, or is recorded while the stream captures a CUDA graph and
replayed by ``Graph.launch``. Counters (``stats``) let tests see allocations and copies.
"""

from __future__ import annotations

import ctypes
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Stats:
    """What the backend asked of the fake CUDA runtime."""

    device_allocations: int = 0
    pinned_allocations: int = 0
    copies: dict[str, int] = field(default_factory=lambda: {"h2d": 0, "d2h": 0, "d2d": 0})


IS_SHIM = True
stats = Stats()
device_properties: dict[str, object] = {"name": b"Fake GPU", "major": 8, "minor": 7}


class _Memory:
    def __init__(self, size: int) -> None:
        self.buffer = np.zeros(max(size, 1), np.uint8)
        self.size = size


class MemoryPointer:
    """Like ``cupy.cuda.MemoryPointer``: an owner plus an address, addable by a byte offset."""

    def __init__(self, memory: _Memory, offset: int = 0) -> None:
        self.mem = memory
        self.offset = offset

    @property
    def ptr(self) -> int:
        return int(self.mem.buffer.ctypes.data) + self.offset

    def __add__(self, offset: int) -> MemoryPointer:
        return MemoryPointer(self.mem, self.offset + offset)


class PinnedMemoryPointer(bytearray):
    """Like ``cupy.cuda.PinnedMemoryPointer``: supports the buffer protocol and has ``ptr``."""

    @property
    def ptr(self) -> int:
        return ctypes.addressof(ctypes.c_char.from_buffer(self))


def alloc(size: int) -> MemoryPointer:
    stats.device_allocations += 1
    return MemoryPointer(_Memory(size))


def alloc_pinned_memory(size: int) -> PinnedMemoryPointer:
    stats.pinned_allocations += 1
    return PinnedMemoryPointer(max(size, 1))


class Graph:
    """A recorded sequence of stream work."""

    def __init__(self, work: list[Callable[[], None]]) -> None:
        self.work = work
        self.launches = 0

    def launch(self, stream: Stream | None = None) -> None:
        self.launches += 1
        for item in self.work:
            item()


_streams: dict[int, Stream] = {}


class Stream:
    """A stream whose work runs immediately unless it is capturing a graph."""

    _next_handle = 0x1000

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False) -> None:
        Stream._next_handle += 16
        self.ptr = Stream._next_handle
        self.capturing: list[Callable[[], None]] | None = None
        self.synchronizations = 0
        _streams[self.ptr] = self

    def synchronize(self) -> None:
        if self.capturing is not None:
            raise RuntimeError("cudaErrorStreamCaptureUnsupported: synchronize during capture")
        self.synchronizations += 1

    def begin_capture(self, mode: object = None) -> None:
        self.capturing = []

    def end_capture(self) -> Graph:
        work, self.capturing = self.capturing or [], None
        return Graph(work)

    def is_capturing(self) -> bool:
        return self.capturing is not None

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def enqueue(stream_handle: int, work: Callable[[], None]) -> None:
    """Run ``work`` now, or record it when the stream captures a graph (used by the fake TensorRT)."""
    stream = _streams.get(stream_handle)
    if stream is not None and stream.capturing is not None:
        stream.capturing.append(work)
    else:
        work()


class Device:
    def __init__(self, device: int = 0) -> None:
        self.id = device

    @property
    def compute_capability(self) -> str:
        return f"{device_properties['major']}{device_properties['minor']}"

    def use(self) -> None:
        return None


class ndarray:  # mirrors cupy's class name
    """A minimal device array: shape, dtype, ``data.ptr``, ``get``; backed by host memory."""

    def __init__(self, shape: tuple[int, ...], dtype: object = np.float32, memptr: MemoryPointer | None = None) -> None:
        self.shape = tuple(int(dim) for dim in shape)
        self.dtype = np.dtype(dtype)
        nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.data = memptr if memptr is not None else alloc(nbytes)
        self.nbytes = nbytes
        self.flags = types.SimpleNamespace(c_contiguous=True)

    def _host_view(self) -> np.ndarray:
        raw = (ctypes.c_char * max(self.nbytes, 1)).from_address(self.data.ptr)
        return np.frombuffer(raw, self.dtype, count=self.nbytes // self.dtype.itemsize).reshape(self.shape)

    def get(self, stream: Stream | None = None, out: np.ndarray | None = None) -> np.ndarray:
        stats.copies["d2h"] += 1
        if out is not None:
            np.copyto(out, self._host_view())
            return out
        return self._host_view().copy()

    def set(self, array: np.ndarray, stream: Stream | None = None) -> None:
        stats.copies["h2d"] += 1
        np.copyto(self._host_view(), array)


def asarray(array: np.ndarray) -> ndarray:
    host = np.ascontiguousarray(array)
    device = ndarray(host.shape, host.dtype)
    device.set(host)
    return device


def empty(shape: tuple[int, ...], dtype: object = np.float32) -> ndarray:
    return ndarray(shape, dtype)


def _memcpy(dst: int, src: int, size: int, kind: int) -> None:
    stats.copies[{1: "h2d", 2: "d2h", 3: "d2d"}.get(kind, "d2d")] += 1
    ctypes.memmove(dst, src, size)


def _memcpy_async(dst: int, src: int, size: int, kind: int, stream: int) -> None:
    enqueue(stream, lambda: _memcpy(dst, src, size, kind))


def _stream_synchronize(stream: int) -> None:
    target = _streams.get(stream)
    if target is not None:
        target.synchronize()


runtime = types.SimpleNamespace(
    memcpyHostToHost=0,
    memcpyHostToDevice=1,
    memcpyDeviceToHost=2,
    memcpyDeviceToDevice=3,
    memcpyDefault=4,
    memcpy=_memcpy,
    memcpyAsync=_memcpy_async,
    streamSynchronize=_stream_synchronize,
    getDeviceCount=lambda: 1,
    getDeviceProperties=lambda device: dict(device_properties),
    getDevice=lambda: 0,
)

cuda = types.SimpleNamespace(
    alloc=alloc,
    alloc_pinned_memory=alloc_pinned_memory,
    Stream=Stream,
    Device=Device,
    Graph=Graph,
    MemoryPointer=MemoryPointer,
    PinnedMemoryPointer=PinnedMemoryPointer,
    runtime=runtime,
)


def reset() -> None:
    """Forget counters, streams and the simulated GPU (between tests)."""
    global stats
    stats = Stats()
    _streams.clear()
    device_properties.update({"name": b"Fake GPU", "major": 8, "minor": 7})
