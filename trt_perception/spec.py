"""Model specs: the YAML files that tell the pipeline how to feed a model and read its outputs.

``load_model_spec`` reads a spec file (or a bundled spec by name, from ``config/models``), checks
every key and returns a frozen ``ModelSpec``. Any problem raises ``SpecError`` naming the key, e.g.
``input.normalization.mean: expected 3 numbers, got 2``. Relative paths resolve from the folder of
the spec file. The ``decoder`` mapping is kept as written, after ``decoders.create_decoder`` has
validated it (so its errors, too, come with the spec file's path).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from trt_perception.decoders import create_decoder
from trt_perception.decoders.params import checked_data_file, is_finite_number
from trt_perception.errors import SpecError

TASKS = ("segmentation", "detection")
BACKENDS = ("auto", "onnxruntime", "tensorrt")
LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "float16", "uint8")
COLOR_ORDERS = ("RGB", "BGR")
RESIZE_MODES = ("fixed_shape", "keep_aspect_ratio")
PAD_PLACEMENTS = ("centered", "top_left")
INTERPOLATIONS = ("nearest", "linear", "cubic", "area", "pil_bilinear")
SAMPLINGS = ("half_pixel", "align_corners", "asymmetric")
MULTIPLE_ROUNDINGS = ("nearest", "up")
# The longest network input side accepted (a fixed input.size, a dynamic rule's sides, and what a rule
# makes of an image): four times the largest real detector inputs (1536 to 4096 pixels), and a float32
# NCHW input of 16384x16384 already takes 3 GiB. A size mistyped by a digit or two asks for hundreds
# of GiB per frame: a spec error instead.
MAX_NETWORK_SIDE = 16384
# How the scaled sides become whole pixels (``DynamicSize.side_rounding``).
SIDE_ROUNDINGS = ("truncate", "transformers")
STD_CAPS = ("sqrt_count", "count")
NORMALIZATIONS = ("none", "unit", "symmetric", "mean_std", "per_image_standardization")
VALUE_RANGES = ("unit", "byte")
OUTPUT_RESOLUTIONS = ("source", "network")
TENSORRT_PRECISIONS = ("fp32", "fp16", "int8")

SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class DynamicSize:
    """Network input size chosen per image: short side scaled to ``short_side``, then each side
    rounded to a multiple of ``multiple_of``; the long side is capped at ``max_long_side``.

    ``rounding``: ``nearest`` multiple (the image is stretched to it, as PaddleOCR / RapidOCR do) or
    ``up`` (room for letterbox padding); None: ``up`` with keep_aspect_ratio, else ``nearest``.
    ``upscale_only``: images whose short side already reaches ``short_side`` keep their scale (1).
    ``side_rounding``: ``truncate`` each scaled side (PaddleOCR / RapidOCR), or ``transformers``:
    Hugging Face's ``get_size_with_aspect_ratio`` (DETR's image processors), which rounds a short
    side capped by ``max_long_side`` and truncates the long side scaled from the unrounded one.
    """

    short_side: int
    multiple_of: int = 1
    max_long_side: int | None = None
    rounding: str | None = None
    upscale_only: bool = False
    side_rounding: str = "truncate"


@dataclass(frozen=True)
class PostAffine:
    """``clip(value * scale + offset, low, high)`` applied after the normalization."""

    scale: float = 1.0
    offset: float = 0.0
    clip: tuple[float, float] | None = None


@dataclass(frozen=True)
class NormalizationSpec:
    """How pixel values (0..255) become network input values.

    ``none``: unchanged; ``unit``: /255; ``symmetric``: /127.5 - 1; ``mean_std``: (x - mean) / std
    with mean and std given per model channel for values in 0..1 (``range: unit``) or 0..255
    (``range: byte``); ``per_image_standardization``: like ``tf.image.per_image_standardization``.

    For ``per_image_standardization``, ``statistics_range`` (YAML key ``range``, default ``byte``)
    says whether the statistics are taken on 0..1 or 0..255 values and ``reciprocal_std_cap`` caps ``1/std``: ``(factor, "sqrt_count")`` is
    ``factor * sqrt(N)`` (TensorFlow, factor 1), ``(factor, "count")`` is ``factor * N``, N = values
    in the image. ``post_affine`` (any type) is applied last.
    """

    type: str = "unit"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    range: str = "unit"
    statistics_range: str = "byte"
    reciprocal_std_cap: tuple[float, str] = (1.0, "sqrt_count")
    post_affine: PostAffine | None = None


@dataclass(frozen=True)
class InputSpec:
    """The model's image input and how to fill it."""

    size: tuple[int, int] | DynamicSize
    name: str | None = None
    layout: str = "NCHW"
    dtype: str = "float32"
    color_order: str = "RGB"
    resize: str = "fixed_shape"
    pad_value: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pad_placement: str = "centered"
    interpolation: str = "linear"
    sampling: str = "half_pixel"
    normalization: NormalizationSpec = field(default_factory=NormalizationSpec)


@dataclass(frozen=True)
class DetectionSpec:
    """Detection filtering defaults (the pipeline lets callers change them at run time)."""

    score_threshold: float = 0.3
    nms_iou: float | None = 0.45
    class_agnostic: bool = False
    max_detections: int = 100
    classes: tuple[str | int, ...] | None = None


@dataclass(frozen=True)
class TensorRTSpec:
    """Settings of the TensorRT backend (ignored by ONNX Runtime).

    ``cuda_graph``: record each input shape's copies and engine execution as a CUDA graph on its
    first frame and replay it afterwards (less launch overhead; a new input shape is recorded again,
    so it pays off when the image size stays the same from frame to frame).
    ``precision``: what an engine built from the ONNX model (engine cache) computes in: ``fp32``,
    ``fp16`` or ``int8`` (TensorRT <= 10; INT8 calibrated from ``calibration_images`` through this
    spec's preprocessing, or read from / written to ``calibration_cache``).
    """

    cuda_graph: bool = False
    precision: str = "fp32"
    calibration_images: Path | None = None
    calibration_cache: Path | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A validated model spec; paths are absolute."""

    name: str
    task: str
    input: InputSpec
    decoder: Mapping[str, Any]
    model: Path | None = None
    engine: Path | None = None
    backend: str = "auto"
    labels: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    output_resolution: str = "source"
    detection: DetectionSpec = field(default_factory=DetectionSpec)
    tensorrt: TensorRTSpec = field(default_factory=TensorRTSpec)
    source: Path | None = None
    base_dir: Path | None = None  # where the decoder's relative paths (anchors file) resolve from

    @property
    def num_classes(self) -> int | None:
        """Number of classes when labels are given."""
        return None if self.labels is None else len(self.labels)


class _Section:
    """Reads the keys of one mapping of the spec, remembering its dotted path for error messages."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, Mapping):
            raise SpecError(f"{path or 'spec'}: expected a mapping, got {_describe(data)}")
        self.data = dict(data)
        self.path = path

    def key(self, name: str) -> str:
        """The dotted key of ``name`` in this section (e.g. ``input.size``), for messages."""
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        """Whether ``name`` is present and not null."""
        return name in self.data and self.data[name] is not None

    def take(self, name: str, default: object = None, required: bool = False) -> Any:
        """Remove and return ``name``'s value (null counts as missing: ``default``, or an error when
        ``required``)."""
        value = self.data.pop(name, None)
        if value is None:
            if required:
                raise SpecError(f"{self.key(name)}: required key is missing")
            return default
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        """One of ``choices`` (required when ``default`` is None)."""
        value = self.take(name, default, required=default is None)
        if value not in choices:
            raise SpecError(f"{self.key(name)}: expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def integer(self, name: str, default: int | None = None, minimum: int = 1) -> int:
        """An integer >= ``minimum`` (required when ``default`` is None)."""
        value = self.take(name, default, required=default is None)
        return _integer(value, self.key(name), minimum)

    def number(self, name: str, default: float | None, low: float, high: float) -> float:
        """A finite number in ``[low, high]`` (required when ``default`` is None)."""
        value = self.take(name, default, required=default is None)
        return _number(value, self.key(name), low, high)

    def boolean(self, name: str, default: bool) -> bool:
        """``true`` or ``false`` (YAML booleans only)."""
        value = self.take(name, default)
        if not isinstance(value, bool):
            raise SpecError(f"{self.key(name)}: expected true or false, got {_describe(value)}")
        return value

    def text(self, name: str, default: str | None = None) -> str | None:
        """A non-empty string, or ``default`` when missing."""
        value = self.take(name, default)
        if value is not None and (not isinstance(value, str) or not value):
            raise SpecError(f"{self.key(name)}: expected a non-empty string, got {_describe(value)}")
        return value

    def file_path(self, name: str, base_dir: Path) -> Path | None:
        """A path, resolved from ``base_dir`` when relative; None when missing."""
        value = self.take(name)
        return None if value is None else _resolve(value, self.key(name), base_dir)

    def section(self, name: str, required: bool = False) -> _Section:
        """The nested mapping ``name`` as a section (empty when missing and not ``required``)."""
        return _Section(self.take(name, {}, required), self.key(name))

    def finish(self) -> None:
        """Reject keys nobody read."""
        if self.data:
            names = ", ".join(self.key(str(name)) for name in self.data)
            raise SpecError(f"{names}: unknown key{'s' if len(self.data) > 1 else ''}")


def _describe(value: object) -> str:
    """A value with its type for messages, e.g. ``str 'yes'``."""
    return f"{type(value).__name__} {value!r}"


def _integer(value: object, key: str, minimum: int) -> int:
    """``value`` as an integer >= ``minimum`` (booleans refused); errors name ``key``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{key}: expected an integer, got {_describe(value)}")
    if value < minimum:
        raise SpecError(f"{key}: must be at least {minimum}, got {value}")
    return value


def _number(value: object, key: str, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a finite float in ``[low, high]`` (booleans refused); errors name ``key``."""
    if not is_finite_number(value):
        raise SpecError(f"{key}: expected a number, got {_describe(value)}")
    if not low <= value <= high:
        raise SpecError(f"{key}: must be between {low} and {high}, got {value}")
    return float(value)


def _numbers(value: object, key: str, count: int) -> tuple[float, ...]:
    """A list of exactly ``count`` finite numbers; errors name ``key`` or ``key[i]``."""
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{key}: expected {count} numbers, got {_describe(value)}")
    if len(value) != count:
        raise SpecError(f"{key}: expected {count} numbers, got {len(value)}")
    return tuple(_number(item, f"{key}[{index}]") for index, item in enumerate(value))


def _resolve(path_value: object, key: str, base_dir: Path) -> Path:
    """A non-empty path string, ``~`` expanded, relative paths resolved from ``base_dir``."""
    if not isinstance(path_value, str) or not path_value:
        raise SpecError(f"{key}: expected a file path, got {_describe(path_value)}")
    path = Path(path_value).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def _network_side(value: object, key: str) -> int:
    """A network input side in pixels: an integer from 1 to MAX_NETWORK_SIDE."""
    side = _integer(value, key, 1)
    if side > MAX_NETWORK_SIDE:
        raise SpecError(f"{key}: {side} pixels; a network input side is at most {MAX_NETWORK_SIDE}")
    return side


def _parse_size(value: object, key: str) -> tuple[int, int] | DynamicSize:
    """``input.size``: ``[height, width]`` or a dynamic ``{short_side, multiple_of, max_long_side}``."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise SpecError(f"{key}: expected [height, width], got {len(value)} numbers")
        return (_network_side(value[0], f"{key}[0]"), _network_side(value[1], f"{key}[1]"))
    if not isinstance(value, Mapping):
        raise SpecError(
            f"{key}: expected [height, width] or {{short_side, multiple_of, max_long_side}}, got {_describe(value)}"
        )
    section = _Section(value, key)
    rounding = section.take("rounding")
    if rounding is not None and rounding not in MULTIPLE_ROUNDINGS:
        raise SpecError(f"{key}.rounding: expected one of {', '.join(MULTIPLE_ROUNDINGS)}, got {rounding!r}")
    dynamic = DynamicSize(
        short_side=_network_side(section.take("short_side", required=True), section.key("short_side")),
        multiple_of=_network_side(section.take("multiple_of", 1), section.key("multiple_of")),
        max_long_side=(
            None if not section.has("max_long_side")
            else _network_side(section.take("max_long_side"), section.key("max_long_side"))
        ),
        rounding=rounding,
        upscale_only=section.boolean("upscale_only", False),
        side_rounding=section.choice("side_rounding", SIDE_ROUNDINGS, "truncate"),
    )
    section.finish()
    if dynamic.side_rounding == "transformers" and dynamic.upscale_only:
        raise SpecError(f"{key}.upscale_only: not part of side_rounding transformers (Hugging Face enlarges every image)")
    if dynamic.max_long_side is not None and dynamic.max_long_side < dynamic.short_side:
        raise SpecError(f"{key}.max_long_side: must be at least short_side ({dynamic.short_side})")
    for name in ("short_side", "max_long_side"):
        side = getattr(dynamic, name)
        if side is None:
            continue
        rounded = math.ceil(side / dynamic.multiple_of) * dynamic.multiple_of
        if rounded > MAX_NETWORK_SIDE:
            raise SpecError(
                f"{key}.{name}: {side} rounded to a multiple of {dynamic.multiple_of} can give {rounded} pixels; "
                f"a network input side is at most {MAX_NETWORK_SIDE}"
            )
    return dynamic


def _parse_post_affine(section: _Section) -> PostAffine:
    """``input.normalization.post_affine``: ``{scale, offset, clip: [low, high]}``."""
    clip: tuple[float, float] | None = None
    if section.has("clip"):
        low, high = _numbers(section.take("clip"), section.key("clip"), 2)
        if low > high:
            raise SpecError(f"{section.key('clip')}: low must not exceed high, got {[low, high]}")
        clip = (low, high)
    affine = PostAffine(
        scale=_number(section.take("scale", 1.0), section.key("scale")),
        offset=_number(section.take("offset", 0.0), section.key("offset")),
        clip=clip,
    )
    section.finish()
    return affine


def _parse_std_cap(section: _Section) -> tuple[float, str]:
    """``reciprocal_std_cap: {factor, of: sqrt_count | count}`` (default TensorFlow's 1 * sqrt(N))."""
    cap = section.section("reciprocal_std_cap")
    factor = _number(cap.take("factor", 1.0), cap.key("factor"), 0.0)
    if factor <= 0:
        raise SpecError(f"{cap.key('factor')}: must be positive, got {factor}")
    of = cap.choice("of", STD_CAPS, "sqrt_count")
    cap.finish()
    return factor, of


def _parse_normalization(section: _Section) -> NormalizationSpec:
    """``input.normalization``; ``mean_std`` needs 3 means and 3 positive stds."""
    kind = section.choice("type", NORMALIZATIONS, "unit")
    post_affine = _parse_post_affine(section.section("post_affine")) if section.has("post_affine") else None
    if kind == "per_image_standardization":
        value_range = section.choice("range", VALUE_RANGES, "byte")
        cap = _parse_std_cap(section)
        section.finish()
        return NormalizationSpec(kind, statistics_range=value_range, reciprocal_std_cap=cap, post_affine=post_affine)
    if kind != "mean_std":
        section.finish()
        return NormalizationSpec(kind, post_affine=post_affine)
    mean = _numbers(section.take("mean", required=True), section.key("mean"), 3)
    std = _numbers(section.take("std", required=True), section.key("std"), 3)
    if any(value <= 0 for value in std):
        raise SpecError(f"{section.key('std')}: every value must be positive, got {list(std)}")
    value_range = section.choice("range", VALUE_RANGES, "unit")
    section.finish()
    return NormalizationSpec(kind, mean, std, value_range, post_affine=post_affine)  # type: ignore[arg-type]


def _parse_pad_value(value: object, key: str) -> tuple[float, float, float]:
    """``input.pad_value``: one pixel value 0..255 (8-bit units, as the preprocessor's pixels) for all
    channels, or one per channel."""
    values = _numbers(value, key, 3) if isinstance(value, (list, tuple)) else (_number(value, key),) * 3
    for index, channel in enumerate(values):
        if not 0 <= channel <= 255:
            where = key if not isinstance(value, (list, tuple)) else f"{key}[{index}]"
            raise SpecError(f"{where}: must be a pixel value between 0 and 255, got {channel}")
    return values[0], values[1], values[2]


def _parse_input(section: _Section) -> InputSpec:
    """The ``input`` section; a uint8 input must have normalization none."""
    size = _parse_size(section.take("size", required=True), section.key("size"))
    pad_value = _parse_pad_value(section.take("pad_value", 0), section.key("pad_value"))
    spec = InputSpec(
        size=size,
        name=section.text("name"),
        layout=section.choice("layout", LAYOUTS, "NCHW"),
        dtype=section.choice("dtype", DTYPES, "float32"),
        color_order=section.choice("color_order", COLOR_ORDERS, "RGB"),
        resize=section.choice("resize", RESIZE_MODES, "fixed_shape"),
        pad_value=pad_value,
        pad_placement=section.choice("pad_placement", PAD_PLACEMENTS, "centered"),
        interpolation=section.choice("interpolation", INTERPOLATIONS, "linear"),
        sampling=section.choice("sampling", SAMPLINGS, "half_pixel"),
        normalization=_parse_normalization(section.section("normalization")),
    )
    section.finish()
    if spec.sampling != "half_pixel" and spec.interpolation != "linear":
        raise SpecError(
            f"{section.key('sampling')}: {spec.sampling} works with interpolation linear, "
            f"got {spec.interpolation}"
        )
    if spec.dtype == "uint8" and any(value != int(value) for value in spec.pad_value):
        raise SpecError(f"{section.key('pad_value')}: a uint8 input takes whole pixel values, got {list(spec.pad_value)}")
    if spec.dtype == "uint8" and spec.normalization.post_affine is not None:
        raise SpecError(f"{section.key('normalization.post_affine')}: a uint8 input takes raw pixels")
    if spec.dtype == "uint8" and spec.normalization.type != "none":
        raise SpecError(
            f"{section.key('normalization.type')}: a uint8 input takes raw pixels, so the "
            f"normalization must be none, got {spec.normalization.type}"
        )
    return spec


def _parse_labels(value: object, key: str, base_dir: Path) -> tuple[str, ...]:
    """Inline label list, or a file with one name per line (trailing empty lines ignored)."""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise SpecError(f"{key}[{index}]: expected a class name (non-empty text), got {_describe(item)}")
        names = list(value)
    else:
        path = checked_data_file(_resolve(value, key, base_dir), key, "labels")
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()  # a byte order mark is no part of the first name
        except OSError as error:
            raise SpecError(f"{key}: cannot read labels file {path}: {error.strerror or error}") from error
        except UnicodeDecodeError as error:
            raise SpecError(f"{key}: labels file {path} is not UTF-8 text (byte {error.start}: {error.reason})") from None
        while lines and not lines[-1].strip():
            lines.pop()
        names = [line.strip() for line in lines]
        for number, name in enumerate(names, start=1):
            if not name:
                raise SpecError(f"{key}: line {number} of {path} is empty")
    if not names:
        raise SpecError(f"{key}: no labels given")
    return tuple(names)


def _parse_palette(value: object, key: str) -> tuple[tuple[int, int, int], ...]:
    """A non-empty list of ``[r, g, b]`` integers 0..255."""
    if not isinstance(value, (list, tuple)) or not value:
        raise SpecError(f"{key}: expected a list of [r, g, b] colours, got {_describe(value)}")
    colours = []
    for index, colour in enumerate(value):
        channels = _numbers(colour, f"{key}[{index}]", 3)
        if any(c != int(c) or not 0 <= c <= 255 for c in channels):
            raise SpecError(f"{key}[{index}]: expected integers 0..255, got {list(colour)}")
        colours.append((int(channels[0]), int(channels[1]), int(channels[2])))
    return tuple(colours)


def _parse_detection(section: _Section) -> DetectionSpec:
    """The ``detection`` section (an explicit ``nms_iou: null`` turns host NMS off)."""
    classes = section.take("classes")
    if classes is not None:
        if not isinstance(classes, (list, tuple)) or not classes:
            raise SpecError(f"{section.key('classes')}: expected a list of class names or indices")
        for index, item in enumerate(classes):
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise SpecError(f"{section.key('classes')}[{index}]: expected a class name or index, got {_describe(item)}")
        classes = tuple(classes)
    no_nms = "nms_iou" in section.data and section.data.pop("nms_iou") is None
    detection = DetectionSpec(
        score_threshold=section.number("score_threshold", 0.3, 0.0, 1.0),
        nms_iou=None if no_nms else section.number("nms_iou", 0.45, 0.0, 1.0),
        class_agnostic=section.boolean("class_agnostic", False),
        max_detections=section.integer("max_detections", 100),
        classes=classes,
    )
    section.finish()
    return detection


def _parse_tensorrt(section: _Section, base_dir: Path) -> TensorRTSpec:
    """The ``tensorrt`` section."""
    tensorrt = TensorRTSpec(
        cuda_graph=section.boolean("cuda_graph", False),
        precision=section.choice("precision", TENSORRT_PRECISIONS, "fp32"),
        calibration_images=section.file_path("calibration_images", base_dir),
        calibration_cache=section.file_path("calibration_cache", base_dir),
    )
    if tensorrt.precision == "int8" and tensorrt.calibration_images is None and tensorrt.calibration_cache is None:
        raise SpecError(
            f"{section.key('precision')}: int8 needs {section.key('calibration_images')} (a folder of "
            f"images like the camera's) or {section.key('calibration_cache')} (an existing calibration cache)"
        )
    section.finish()
    return tensorrt


def parse_model_spec(data: object, base_dir: Path, source: Path | None = None) -> ModelSpec:
    """Validate a spec already read from YAML; relative paths resolve from ``base_dir``."""
    root = _Section(data, "")
    task = root.choice("task", TASKS)
    model = root.file_path("model", base_dir)
    engine = root.file_path("engine", base_dir)
    if model is None and engine is None:
        raise SpecError("model: required key is missing (give model, engine or both)")
    decoder = root.take("decoder", required=True)
    if not isinstance(decoder, Mapping) or "type" not in decoder:
        raise SpecError(f"decoder: expected a mapping with a type, got {_describe(decoder)}")
    if task != "detection" and root.has("detection"):
        raise SpecError("detection: only valid when task is detection")
    labels, palette = root.take("labels"), root.take("palette")
    spec = ModelSpec(
        name=root.text("name", source.stem if source else "model") or "model",
        task=task,
        model=model,
        engine=engine,
        backend=root.choice("backend", BACKENDS, "auto"),
        input=_parse_input(root.section("input", required=True)),
        labels=None if labels is None else _parse_labels(labels, "labels", base_dir),
        palette=None if palette is None else _parse_palette(palette, "palette"),
        output_resolution=root.choice("output_resolution", OUTPUT_RESOLUTIONS, "source"),
        decoder=MappingProxyType(dict(decoder)),
        detection=_parse_detection(root.section("detection")),
        tensorrt=_parse_tensorrt(root.section("tensorrt"), base_dir),
        source=source,
        base_dir=base_dir,
    )
    root.finish()
    if spec.backend == "onnxruntime" and spec.model is None:
        raise SpecError("model: required when backend is onnxruntime")
    create_decoder(spec.task, spec.decoder, spec.num_classes, base_dir)  # decoder.<key> errors now, before any model loads
    return spec


def package_config_dirs(subfolder: str) -> list[Path]:
    """The existing folders ``config/<subfolder>`` of this package: the source tree's, then the installed
    share folder (found through the ament index on ROS, else under this Python's prefix after ``pip install``)."""
    dirs = [Path(__file__).resolve().parent.parent / "config" / subfolder]
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("trt_perception")) / "config" / subfolder)
    except (ImportError, LookupError, ValueError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        pass
    dirs.append(Path(sys.prefix) / "share" / "trt_perception" / "config" / subfolder)
    return list(dict.fromkeys(folder for folder in dirs if folder.is_dir()))


def bundled_spec_dirs() -> list[Path]:
    """Folders holding the bundled specs (``config/models``, see ``package_config_dirs``)."""
    return package_config_dirs("models")


def bundled_spec_names() -> list[str]:
    """Names of the bundled specs (file names without ``.yaml``)."""
    return sorted({path.stem for folder in bundled_spec_dirs() for path in folder.glob("*.yaml")})


def _find_spec_file(path_or_name: str | Path) -> Path:
    """A spec file path as given, or a bundled spec's file by name."""
    path = Path(path_or_name).expanduser()
    if path.suffix in SPEC_SUFFIXES or len(path.parts) > 1 or path.is_file():  # a folder of that name is no spec
        if not path.is_file():
            raise SpecError(f"model spec file not found: {path}")
        return path
    for folder in bundled_spec_dirs():
        candidate = folder / f"{path_or_name}.yaml"
        if candidate.is_file():
            return candidate
    raise SpecError(
        f"model spec {str(path_or_name)!r} is neither a file nor a bundled spec "
        f"(bundled: {', '.join(bundled_spec_names()) or 'none found'})"
    )


# Largest spec file read (a spec is a few KB); with aliases refused, parsing costs at most linear time.
MAX_SPEC_BYTES = 1 << 20
# Deepest nesting of lists and mappings in a spec (real ones nest 4 levels); PyYAML composes
# recursively, so a file of 100 KB of '[' would otherwise end in a RecursionError.
MAX_SPEC_DEPTH = 32


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (``*name`` could expand a 1 KB file into gigabytes),
    without nesting deeper than ``MAX_SPEC_DEPTH`` and without duplicate keys (PyYAML keeps the last
    value of a key given twice, silently dropping the first)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: PyYAML's own check reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in a model spec", event.start_mark
            )
        if self._depth >= MAX_SPEC_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"lists and mappings nested more than {MAX_SPEC_DEPTH} deep", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _one_line_yaml_error(error: yaml.YAMLError) -> str:
    """PyYAML's error on one line: what went wrong and where (its own text spans several lines)."""
    if not isinstance(error, yaml.MarkedYAMLError):
        return " ".join(str(error).split())
    parts = [part for part in (error.context, error.problem) if part]
    mark = error.problem_mark or error.context_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return "; ".join(parts) + where


def load_model_spec(path_or_name: str | Path) -> ModelSpec:
    """Load and validate a spec file, or a bundled spec given by name (e.g. ``selfie_segmentation``).

    The file may not exceed ``MAX_SPEC_BYTES`` nor use YAML aliases.
    """
    path = _find_spec_file(path_or_name).resolve()
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: {path.stat().st_size} bytes, more than a model spec may have ({MAX_SPEC_BYTES})")
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SpecLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {_one_line_yaml_error(error)}") from None
    except OSError as error:
        raise SpecError(f"{path}: cannot read model spec: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    try:
        return parse_model_spec(data, path.parent, path)
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from error
