"""rosbag2 reading and writing (mcap and sqlite3) with ``rosbags``, no ROS install needed.

Message types come from rosbags' built-in ROS 2 type stores (Humble, Jazzy, Kilted) plus the
vision_msgs definitions this repository keeps in ``interfaces/vision_msgs/msg`` (field for field
upstream's, so written bags carry upstream's type hashes). Messages are streamed one at a time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError, WriterError
from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.store import Typestore

from trt_perception.errors import TrtPerceptionError
from trt_perception.image_decoding import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    decode_compressed,
    decode_image,
    encode_image,
)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)

DISTRO_STORES = {
    "humble": Stores.ROS2_HUMBLE,
    "jazzy": Stores.ROS2_JAZZY,
    "kilted": Stores.ROS2_KILTED,
}
DEFAULT_DISTRO = "jazzy"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagError(TrtPerceptionError):
    """A bag cannot be read or written (missing, not a rosbag2, unknown topic, ...)."""


class BagReadError(BagError):
    """Reading stopped part way through a damaged bag; the messages before it were fine."""


# ----------------------------------------------------------------------------- types


def vision_msgs_definition_dir() -> Path:
    """Folder with the vision_msgs ``*.msg`` files: the source tree's, the installed package's
    (``share/trt_perception/interfaces/vision_msgs/msg``), else an installed vision_msgs package's."""
    candidates = [Path(__file__).resolve().parents[2] / "interfaces" / "vision_msgs" / "msg"]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        candidates.append(Path(prefix) / "share" / "trt_perception" / "interfaces" / "vision_msgs" / "msg")
    candidates += [Path(prefix) / "share" / "vision_msgs" / "msg" for prefix in prefixes]
    for folder in candidates:
        if any(folder.glob("*.msg")):
            return folder
    raise BagError(
        "vision_msgs message definitions not found; looked in "
        + ", ".join(str(folder) for folder in candidates)
    )


@cache
def typestore(distro: str = DEFAULT_DISTRO) -> Typestore:
    """The ROS 2 type store of ``distro`` (humble, jazzy, kilted) with vision_msgs registered."""
    if distro not in DISTRO_STORES:
        raise BagError(f"unsupported ROS distro {distro!r}; use one of {sorted(DISTRO_STORES)}")
    store = get_typestore(DISTRO_STORES[distro])
    types: dict[str, Any] = {}
    for path in sorted(vision_msgs_definition_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store


def bag_distro(reader: Reader) -> str:
    """The distro a bag was recorded with when known and supported, else the default."""
    distro = getattr(reader, "ros_distro", None)
    return distro if distro in DISTRO_STORES else DEFAULT_DISTRO


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class BagMessage:
    """One message as stored: topic, type, log time (ns) and CDR bytes."""

    topic: str
    msgtype: str
    log_time: int
    data: bytes


def open_reader(path: str | Path) -> Reader:
    """Open a rosbag2 (directory, or a single ``.mcap`` / ``.db3`` file) for reading."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError, ValueError, KeyError, RecursionError) as error:  # Recursion: nested metadata.yaml
        raise BagError(
            f"cannot open bag {path}: {error} (an interrupted recording can often be repaired with "
            "`mcap recover` or `ros2 bag reindex`)"
        ) from error
    return reader


def topic_types(reader: Reader) -> dict[str, str]:
    """Topic name -> message type of every topic in the bag."""
    return {connection.topic: connection.msgtype for connection in reader.connections}


def describe_topics(reader: Reader) -> str:
    """``topic (type, N msgs)`` for every topic, for error messages."""
    counts: dict[str, int] = {}
    for connection in reader.connections:
        counts[connection.topic] = counts.get(connection.topic, 0) + connection.msgcount
    types = topic_types(reader)
    if not types:
        return "the bag has no topics"
    return "available topics: " + ", ".join(
        f"{topic} ({types[topic]}, {counts[topic]} msgs)" for topic in sorted(types)
    )


def require_topic(reader: Reader, topic: str, allowed_types: Sequence[str]) -> str:
    """The message type of ``topic``; BagError listing the bag's topics when absent or of another type."""
    types = topic_types(reader)
    if topic not in types:
        raise BagError(f"topic {topic!r} is not in bag {reader.path}; {describe_topics(reader)}")
    if types[topic] not in allowed_types:
        raise BagError(
            f"topic {topic!r} carries {types[topic]}, expected one of {list(allowed_types)}"
        )
    return types[topic]


def iter_messages(
    reader: Reader, topics: Sequence[str], start: int | None = None, stop: int | None = None
) -> Iterator[BagMessage]:
    """The messages of ``topics`` in log-time order, one at a time (constant memory); with ``start`` /
    ``stop`` only those logged in ``[start, stop)`` ns."""
    connections = [c for c in reader.connections if c.topic in topics]
    if not connections:
        return
    count = 0
    stream = reader.messages(connections=connections, start=start, stop=stop)
    while True:
        try:
            connection, log_time, data = next(stream)
        except StopIteration:
            return
        except Exception as error:  # storage back ends raise their own (sqlite, mcap, zstd) errors
            raise BagReadError(
                f"bag {reader.path} is damaged: reading stopped after {count} messages "
                f"({type(error).__name__}: {error})"
            ) from error
        count += 1
        yield BagMessage(connection.topic, connection.msgtype, log_time, bytes(data))


def deserialize(message: BagMessage, store: Typestore) -> Any:
    """The message object; BagError naming topic and time when the CDR bytes are corrupt."""
    try:
        return store.deserialize_cdr(message.data, message.msgtype)
    except Exception as error:  # rosbags raises assorted low-level errors on bad bytes
        raise BagError(
            f"corrupt {message.msgtype} message on {message.topic} at {message.log_time} ns "
            f"({type(error).__name__}: {error})"
        ) from error


def stamp_ns(header: Any) -> int:
    """A ``std_msgs/Header`` stamp in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def image_from_message(message: Any, msgtype: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Pixels of a deserialized Image or CompressedImage (ImageDecodeError when unusable, or larger
    than ``max_pixels``, checked before decoding; 0: no limit)."""
    if msgtype == COMPRESSED_IMAGE_TYPE:
        return decode_compressed(message.data, message.format, max_pixels)
    return decode_image(
        message.data, message.height, message.width, message.encoding, message.step,
        bool(message.is_bigendian), max_pixels,
    )


def detections_from_message(message: Any) -> tuple[npt.NDArray[np.float64], list[str], list[float]]:
    """``xyxy`` boxes, class names and scores of a Detection2DArray (best hypothesis per box)."""
    boxes, names, scores = [], [], []
    for detection in message.detections:
        center, half_w, half_h = detection.bbox.center.position, detection.bbox.size_x / 2, detection.bbox.size_y / 2
        boxes.append([center.x - half_w, center.y - half_h, center.x + half_w, center.y + half_h])
        best = max(detection.results, key=lambda result: result.hypothesis.score, default=None)
        names.append(best.hypothesis.class_id if best else detection.id)
        scores.append(float(best.hypothesis.score) if best else 1.0)
    return np.asarray(boxes, np.float64).reshape(-1, 4), names, scores


# ----------------------------------------------------------------------------- building messages


def header_message(store: Typestore, stamp: int, frame_id: str) -> Any:
    """A std_msgs/Header for a stamp in nanoseconds."""
    time_type = store.types["builtin_interfaces/msg/Time"]
    header_type = store.types["std_msgs/msg/Header"]
    return header_type(stamp=time_type(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), frame_id=frame_id)


def image_message(store: Typestore, header: Any, pixels: npt.NDArray, encoding: str) -> Any:
    """A sensor_msgs/Image of an HxW or HxWxC array whose dtype and channels fit ``encoding``."""
    raw = encode_image(pixels, encoding)
    return store.types[IMAGE_TYPE](
        header=header, height=raw.height, width=raw.width, encoding=raw.encoding,
        is_bigendian=int(raw.is_bigendian), step=raw.step, data=raw.data,
    )


def compressed_image_message(store: Typestore, header: Any, data: bytes, format_: str) -> Any:
    """A sensor_msgs/CompressedImage."""
    return store.types[COMPRESSED_IMAGE_TYPE](
        header=header, format=format_, data=np.frombuffer(data, np.uint8)
    )


def detection_array_message(
    store: Typestore,
    header: Any,
    boxes: npt.ArrayLike,
    class_names: Sequence[str],
    scores: Sequence[float],
) -> Any:
    """A vision_msgs/Detection2DArray: bbox centre/size from ``xyxy`` boxes, one hypothesis each."""
    types = store.types
    detections = []
    for (x1, y1, x2, y2), name, score in zip(
        np.asarray(boxes, np.float64).reshape(-1, 4), class_names, scores, strict=True
    ):
        center = types["vision_msgs/msg/Pose2D"](
            position=types["vision_msgs/msg/Point2D"](x=(x1 + x2) / 2, y=(y1 + y2) / 2), theta=0.0
        )
        result = types["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=types["vision_msgs/msg/ObjectHypothesis"](class_id=str(name), score=float(score)),
            pose=_default_pose_with_covariance(store),
        )
        detections.append(
            types["vision_msgs/msg/Detection2D"](
                header=header,
                results=[result],
                bbox=types["vision_msgs/msg/BoundingBox2D"](center=center, size_x=x2 - x1, size_y=y2 - y1),
                id="",
            )
        )
    return types[DETECTIONS_TYPE](header=header, detections=detections)


def _default_pose_with_covariance(store: Typestore) -> Any:
    types = store.types
    pose = types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
        orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
    )
    return types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36, np.float64))


# ----------------------------------------------------------------------------- writing


class BagWriter:
    """A new rosbag2 with topics added on first use; a context manager."""

    def __init__(self, path: str | Path, storage: str = "mcap", distro: str = DEFAULT_DISTRO) -> None:
        if storage not in STORAGES:
            raise BagError(f"unsupported bag storage {storage!r}; use one of {sorted(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"output bag {self.path} exists already; choose a new path")
        self.store = typestore(distro)
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> BagWriter:
        try:
            self._writer.open()
        except (WriterError, OSError) as error:
            raise BagError(f"cannot create bag {self.path}: {error}") from error
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._writer.close()

    def _connection(self, topic: str, msgtype: str) -> Any:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
        connection = self._connections[topic]
        if connection.msgtype != msgtype:
            raise BagError(f"topic {topic!r} already carries {connection.msgtype}, not {msgtype}")
        return connection

    def write(self, topic: str, msgtype: str, log_time: int, message: Any) -> None:
        """Serialize and write one message object."""
        self._writer.write(self._connection(topic, msgtype), log_time, self.store.serialize_cdr(message, msgtype))

    def write_raw(self, topic: str, msgtype: str, log_time: int, data: bytes) -> None:
        """Write CDR bytes as they are (e.g. copying a message from another bag)."""
        self._writer.write(self._connection(topic, msgtype), log_time, data)
