"""Fleet evaluation: one model over many bags, one Ray task per bag (or per time slice of a long
bag), merged into one exact result.

Each task runs ``run_bag_eval`` on one bag (the same pipeline and spec the node uses) and returns
its ``EvaluationResult`` with the metric accumulators behind it; the driver merges them in the
order the bags were given (``merge_results``), so the totals equal one process evaluating the
bags one after another: summed confusion matrices, COCO over all detections and ground truth at
once, latency percentiles over every frame. A bag that fails is reported with its reason and the
others still complete. Each finished bag's result is stored next to its output bag, and a re-run
with the same settings reuses it unless ``force`` is set.

Ray is optional (``pip install 'ray>=2.9'``, the package's ``fleet`` extra) and imported only here, when a fleet job
starts.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import pickle
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from trt_perception.errors import SpecError, TrtPerceptionError
from trt_perception.evaluation import bag_io
from trt_perception.evaluation.bag_eval import BagEvalOptions, image_stamps, run_bag_eval
from trt_perception.evaluation.evaluator import EvaluationResult, merge_results
from trt_perception.evaluation.report import metrics_dict
from trt_perception.spec import ModelSpec, load_model_spec

BAG_SUFFIXES = (".mcap", ".db3")
RESULT_FILE = "result.pkl"
RESULT_VERSION = 1
# A time slice reads ground truth this far beyond its window: truth logged up to this long before or
# after its image (a live labeller's delay) counts with its image exactly as in one run over the bag.
TRUTH_MARGIN_S = 5.0
OBJECT_STORE_BYTES = 128 * 1024**2  # results are small (counts, boxes, per-frame latencies)
PROGRESS_PERIOD_S = 2.0


class FleetError(TrtPerceptionError):
    """A fleet job that cannot start (no Ray, no bags, options that do not fit many bags)."""


@dataclass
class FleetOptions:
    """Many bags, one model: ``per_bag`` holds everything but the bag and the output folder."""

    bags: list[Path]
    per_bag: BagEvalOptions
    ray_address: str | None = None  # None: start a local cluster
    workers: int | None = None  # local cluster: CPUs (so tasks at once); default: all cores
    cpus_per_task: int = 1
    gpus_per_task: float = 0.0
    force: bool = False  # re-run bags whose results exist
    slice_seconds: float | None = None  # split bags into tasks of this much recording (None: one task per bag)
    progress: bool = True


@dataclass
class BagOutcome:
    """What became of one bag: a result, or the reason there is none."""

    bag: str
    label: str
    result: EvaluationResult | None
    error: str | None
    reused: bool = False
    note: str | None = None  # why the bag ran otherwise than asked (one task instead of slices)


@dataclass
class FleetResult:
    """The merged result (None when no bag succeeded) and every bag's outcome, in input order."""

    merged: EvaluationResult | None
    outcomes: list[BagOutcome]
    wall_seconds: float

    @property
    def failed(self) -> list[BagOutcome]:
        """Bags without a result, or read only up to damage."""
        return [o for o in self.outcomes if o.result is None or o.result.read_error]


# ----------------------------------------------------------------------------- which bags


def is_bag_folder(path: Path) -> bool:
    """A rosbag2 folder (it has ``metadata.yaml``)."""
    return (path / "metadata.yaml").is_file()


def expand_bag_arguments(items: Iterable[str]) -> list[Path]:
    """The bags named by paths, glob patterns, folders of bags and text files listing bags.

    A folder with ``metadata.yaml`` is one bag; another folder stands for the bags in it (sub-folders
    with ``metadata.yaml``, ``.mcap`` and ``.db3`` files), in name order. A ``.txt`` file lists one
    bag, pattern or folder per line (``#`` starts a comment; relative paths are relative to the list).
    A path that does not exist is kept, so its task reports it as missing. Duplicates are dropped.
    """
    bags: dict[Path, None] = {}
    for item in items:
        for bag in _expand(item, Path.cwd(), allow_lists=True):
            bags.setdefault(bag, None)
    return list(bags)


def _expand(item: str, base: Path, allow_lists: bool) -> list[Path]:
    if glob.has_magic(item):
        pattern = item if Path(item).is_absolute() else str(base / item)
        matches = sorted(Path(p) for p in glob.glob(pattern))
        return [bag for match in matches for bag in _expand(str(match), base, False)] or [Path(pattern)]
    path = Path(item) if Path(item).is_absolute() else base / item
    if path.is_file() and path.suffix == ".txt" and allow_lists:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise FleetError(f"cannot read the list of bags {path}: {error}") from None
        lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
        return [bag for line in lines if line for bag in _expand(line, path.parent, False)]
    if path.is_dir() and not is_bag_folder(path):
        children = sorted(c for c in path.iterdir() if is_bag_folder(c) or c.suffix in BAG_SUFFIXES)
        return children or [path]
    return [path]


def bag_label(bag: Path) -> str:
    """A folder name for a bag's outputs: its name and a hash of its absolute path (unique, stable)."""
    digest = hashlib.sha1(str(bag.absolute()).encode()).hexdigest()[:8]
    return f"{bag.stem if bag.suffix in BAG_SUFFIXES else bag.name}-{digest}"


# ----------------------------------------------------------------------------- one bag (a Ray task)


def evaluate_bag(options: BagEvalOptions, label: str) -> BagOutcome:
    """Evaluate one bag into ``options.out`` (the job's folder for this bag, emptied first); every
    failure becomes the outcome's reason instead of an exception."""
    shutil.rmtree(options.out, ignore_errors=True)
    try:
        result = run_bag_eval(options)
    except (TrtPerceptionError, OSError, ValueError) as error:
        return BagOutcome(str(options.bag), label, None, _one_line(error))
    (options.out / "metrics.json").write_text(
        json.dumps(metrics_dict(result, {"bag": str(options.bag)}), indent=2) + "\n", encoding="utf-8"
    )
    return BagOutcome(str(options.bag), label, result, None)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if isinstance(error, TrtPerceptionError) else f"{type(error).__name__}: {text}"


class ProgressBoard:
    """Frames done per task, shared by the tasks (a Ray actor) and read by the driver."""

    def __init__(self) -> None:
        self.frames: dict[str, int] = {}

    def add(self, task: str, frames: int) -> None:
        """``frames`` more frames of ``task`` are done."""
        self.frames[task] = self.frames.get(task, 0) + frames

    def total(self) -> int:
        """Frames done over all bags."""
        return sum(self.frames.values())


class FrameReporter:
    """``BagEvalOptions.frame_done`` for a task: tells the board, at most every half second."""

    def __init__(self, board: Any, task: str, period_s: float = 0.5) -> None:
        self.board, self.task, self.period_s = board, task, period_s
        self.pending, self.last = 0, time.monotonic()

    def __call__(self) -> None:
        self.pending += 1
        if time.monotonic() - self.last >= self.period_s:
            self.flush()

    def flush(self) -> None:
        """Report what is pending."""
        if self.pending:
            self.board.add.remote(self.task, self.pending)
            self.pending, self.last = 0, time.monotonic()


def _ray_task(options: BagEvalOptions, label: str, board: Any, cpus: int) -> BagOutcome:
    """What a Ray worker runs: one bag (or slice) with ``cpus`` threads, frames reported to ``board``."""
    import cv2

    cv2.setNumThreads(cpus)
    reporter = FrameReporter(board, str(options.out))
    outcome = evaluate_bag(dataclasses.replace(options, frame_done=reporter), label)
    reporter.flush()
    return outcome


# ----------------------------------------------------------------------------- stored results


def _file_stamps(files: Iterable[Path]) -> list[list[Any]]:
    """Path, size and modification time of each existing file."""
    stats = [(f, f.stat()) for f in files if f.is_file()]
    return [[str(f), stat.st_size, stat.st_mtime_ns] for f, stat in stats]


def _referenced_files(value: Any, base_dir: Path | None) -> list[Path]:
    """Files that the strings in a spec section name (e.g. ``decoder.anchors.path``), relative to ``base_dir``."""
    if isinstance(value, str):
        path = Path(value).expanduser()
        path = path if path.is_absolute() or base_dir is None else base_dir / path
        return [path] if path.is_file() else []
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [path for item in value for path in _referenced_files(item, base_dir)]
    return []


def spec_key(model_spec: str | Path | ModelSpec) -> dict[str, Any]:
    """What a result depends on in the model spec: every parsed setting (labels from a labels file
    included) and the size and modification time of the model, the engine and the files the decoder
    reads (anchors); a bundled spec given by name counts by its file."""
    try:
        spec = model_spec if isinstance(model_spec, ModelSpec) else load_model_spec(model_spec)
    except SpecError as error:
        return {"error": str(error)}  # the task fails with this error; nothing is stored
    files = [f for f in (spec.model, spec.engine) if f is not None] + _referenced_files(spec.decoder, spec.base_dir)
    return {"spec": repr(spec), "files": _file_stamps(files)}


def settings_key(options: BagEvalOptions, model_key: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a stored bag result depends on: the bag files, the model spec and the files it names (see
    ``spec_key``; ``model_key`` is its result when already known) and every scoring option."""
    bag_files = [options.bag] if options.bag.is_file() else sorted(options.bag.glob("*")) if options.bag.is_dir() else []
    return {
        "version": RESULT_VERSION,
        "bag": _file_stamps(bag_files),
        "model_spec": str(options.model_spec),
        **(spec_key(options.model_spec) if model_key is None else model_key),
        **{field: str(getattr(options, field)) for field in (
            "image_topic", "gt_topic", "ignore_index", "labels_topic", "detections_topic", "storage",
            "worst_frames", "device", "eval_score_threshold", "time_range", "truth_margin_ns", "max_pixels")},
    }


def load_bag_result(folder: Path, key: dict[str, Any] | None = None) -> EvaluationResult | None:
    """The stored result in ``folder`` when it was made with the settings ``key`` (None: any), else None."""
    try:
        with open(folder / RESULT_FILE, "rb") as stream:
            stored = pickle.load(stream)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None
    if not isinstance(stored, dict) or (key is not None and stored.get("key") != key):
        return None
    result = stored.get("result")
    return result if isinstance(result, EvaluationResult) else None


def store_bag_result(folder: Path, key: dict[str, Any], result: EvaluationResult) -> None:
    """Keep a finished bag's result (written to a temporary name, then renamed: never half a file)."""
    partial = folder / (RESULT_FILE + ".partial")
    with open(partial, "wb") as stream:
        pickle.dump({"key": key, "result": result}, stream, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(folder / RESULT_FILE)


# ----------------------------------------------------------------------------- the job


def import_ray() -> Any:
    """The ``ray`` module, or FleetError saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise FleetError(
            f"evaluating many bags needs Ray ({error}); install it with `pip install 'ray>=2.9'` "
            "(the package's fleet extra; trt_perception itself is not on PyPI)"
        ) from None
    return ray


def start_ray(ray: Any, options: FleetOptions) -> bool:
    """Connect to ``ray_address`` or start a small local cluster; True when this call started it."""
    if ray.is_initialized():
        return False
    settings: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    try:
        if options.ray_address is not None:
            ray.init(address=options.ray_address, **settings)
            return True
        ray.init(num_cpus=options.workers, object_store_memory=OBJECT_STORE_BYTES, **settings)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        where = f"the Ray cluster at {options.ray_address}" if options.ray_address else "a local Ray cluster"
        raise FleetError(f"cannot start or join {where}: {_one_line(error)}") from None
    try:
        check_local_resources(ray.cluster_resources(), options)
    except FleetError:
        ray.shutdown()
        raise
    return True


def check_local_resources(resources: dict[str, float], options: FleetOptions) -> None:
    """FleetError when one task asks for more than the local cluster has (it would wait forever)."""
    for name, wanted, option in (("CPU", options.cpus_per_task, "--cpus-per-task"),
                                 ("GPU", options.gpus_per_task, "--gpus-per-task")):
        if wanted > resources.get(name, 0.0):
            raise FleetError(f"{option} {wanted:g}: the local Ray cluster has {resources.get(name, 0.0):g} {name}s")


@dataclass
class WorkUnit:
    """One task: a bag or a time slice of it (``options`` say which and where its outputs go)."""

    label: str  # the bag's label
    options: BagEvalOptions
    key: dict[str, Any] | None  # what its stored result depends on; None when the bag does not exist
    outcome: BagOutcome | None = None
    note: str | None = None  # see ``BagOutcome.note``


# The most tasks one bag is cut into (``time_slices``).
MAX_SLICES_PER_BAG = 10_000


def time_slices(bag: Path, seconds: float) -> list[tuple[int, int]]:
    """Log-time windows ``[start, stop)`` of ``seconds`` covering the bag; [] when it cannot be opened;
    FleetError when they would be more than MAX_SLICES_PER_BAG."""
    try:
        reader = bag_io.open_reader(bag)
    except bag_io.BagError:
        return []  # evaluated whole, so its task reports why it cannot be read
    try:
        start, stop = reader.start_time, reader.end_time + 1
    finally:
        reader.close()
    step = max(1, round(seconds * 1e9))
    count = -(-(stop - start) // step)
    if count > MAX_SLICES_PER_BAG:
        raise FleetError(
            f"{bag}: slices of {seconds:g} s would cut its {(stop - start) / 1e9:g} s into {count} tasks, more than "
            f"{MAX_SLICES_PER_BAG} (each loads the model); choose a longer --slice-seconds"
        )
    return [(first, min(first + step, stop)) for first in range(start, stop, step)]


def repeated_stamp(bag: Path, image_topic: str, reach_ns: int) -> int | None:
    """A header stamp shared by two images of ``image_topic`` logged less than ``reach_ns`` apart, or
    None (also when the bag cannot be read through: its tasks report that). Memory: the stamps of
    ``reach_ns`` of recording."""
    try:
        reader = bag_io.open_reader(bag)
    except bag_io.BagError:
        return None
    try:
        seen: OrderedDict[int, int] = OrderedDict()  # stamp -> log time, oldest first
        for log_time, stamp in image_stamps(reader, bag_io.typestore(bag_io.bag_distro(reader)), image_topic):
            while seen and next(iter(seen.values())) <= log_time - reach_ns:
                seen.popitem(last=False)
            if stamp in seen:
                return stamp
            seen[stamp] = log_time
    except bag_io.BagError:
        return None
    finally:
        reader.close()
    return None


def plan_units(bag: Path, options: FleetOptions) -> list[WorkUnit]:
    """The tasks of one bag: the whole bag, or one per ``slice_seconds`` of its recording.

    With ground truth, a bag whose images repeat a header stamp within one slice's reach (its window
    and the truth margin on either side) runs as one task: ground truth is matched by stamp, and which
    of the images with that stamp a truth belongs to is only known in the bag's order as a whole.
    """
    label = bag_label(bag)
    whole = dataclasses.replace(options.per_bag, bag=bag, out=options.per_bag.out / "bags" / label,
                                progress=False, threads=options.cpus_per_task)
    windows = time_slices(bag, options.slice_seconds) if options.slice_seconds else []
    margin, note = round(TRUTH_MARGIN_S * 1e9), None
    if len(windows) > 1 and options.per_bag.gt_topic is not None:
        reach = windows[0][1] - windows[0][0] + 2 * margin
        stamp = repeated_stamp(bag, options.per_bag.image_topic, reach)
        if stamp is not None:
            windows, note = [], (f"evaluated as one task, not in slices: images logged less than {reach / 1e9:g} s "
                                 f"apart share the header stamp {stamp} ns")
    units = [whole] if len(windows) < 2 else [
        dataclasses.replace(whole, out=whole.out / f"slice-{k:04d}", time_range=window, truth_margin_ns=margin)
        for k, window in enumerate(windows)
    ]
    if not bag.exists():
        return [WorkUnit(label, unit, None, note=note) for unit in units]
    model_key = spec_key(options.per_bag.model_spec)  # the same for every slice: the spec is read once
    return [WorkUnit(label, unit, settings_key(unit, model_key), note=note) for unit in units]


def bag_outcome(units: Sequence[WorkUnit], worst_frames: int) -> BagOutcome:
    """One bag's outcome from its finished units: slices merged in time order; a failed slice fails it."""
    outcomes = [unit.outcome for unit in units]
    if any(o is None for o in outcomes):
        raise ValueError(f"bag {units[0].options.bag} is not finished")
    first = outcomes[0]
    assert first is not None
    if len(outcomes) == 1:
        return dataclasses.replace(first, note=units[0].note)
    failed = next((o for o in outcomes if o is not None and o.result is None), None)
    if failed is not None:
        return BagOutcome(first.bag, first.label, None, failed.error)
    parts = [(f"slice {k}", o.result) for k, o in enumerate(outcomes) if o is not None and o.result is not None]
    merged = merge_results(parts, sum(result.wall_seconds for _, result in parts), worst_frames)
    return BagOutcome(first.bag, first.label, merged, None, reused=all(o is not None and o.reused for o in outcomes))


def run_fleet_eval(options: FleetOptions, stream: TextIO | None = None) -> FleetResult:
    """Evaluate every bag on Ray (reusing stored results unless ``force``) and merge them in bag order.

    Progress goes to ``stream`` (default: standard error) unless ``options.progress`` is off; a line
    for each bag that runs otherwise than asked (``BagOutcome.note``) always does.
    """
    if not options.bags:
        raise FleetError("no bags to evaluate")
    if options.per_bag.gt_coco is not None or options.per_bag.gt_masks is not None:
        raise FleetError("with several bags, ground truth comes from a topic in each bag (--gt-topic); "
                         "--gt-coco / --gt-masks match frames by position within one bag")
    if options.slice_seconds is not None and not options.slice_seconds > 0:
        raise FleetError(f"slice length must be positive, got {options.slice_seconds} s")
    start = time.perf_counter()
    stream = stream or sys.stderr
    units_of = {bag: plan_units(bag, options) for bag in options.bags}
    for bag, units in units_of.items():
        if units[0].note is not None:
            print(f"bag-eval: {bag}: {units[0].note}", file=stream, flush=True)
    for unit in (u for units in units_of.values() for u in units):
        stored = None if options.force or unit.key is None else load_bag_result(unit.options.out, unit.key)
        if stored is not None:
            unit.outcome = BagOutcome(str(unit.options.bag), unit.label, stored, None, reused=True)
    if any(u.outcome is None for units in units_of.values() for u in units):
        _run_on_ray(list(units_of.values()), options, stream)
    ordered = [bag_outcome(units_of[bag], options.per_bag.worst_frames) for bag in options.bags]
    wall_seconds = time.perf_counter() - start
    succeeded = [(o.label, o.result) for o in ordered if o.result is not None]
    merged = merge_results(succeeded, wall_seconds, options.per_bag.worst_frames) if succeeded else None
    return FleetResult(merged, ordered, wall_seconds)


def _run_on_ray(bags: Sequence[Sequence[WorkUnit]], options: FleetOptions, stream: TextIO) -> None:
    """Run every unit without an outcome, one Ray task each, and give each its outcome."""
    ray = import_ray()
    started_here = start_ray(ray, options)
    try:
        board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        task = ray.remote(_ray_task).options(
            num_cpus=options.cpus_per_task, num_gpus=options.gpus_per_task, max_retries=0
        )
        waiting = [units for units in bags if any(u.outcome is None for u in units)]
        pending = {task.remote(unit.options, unit.label, board, options.cpus_per_task): (units, unit)
                   for units in waiting for unit in units if unit.outcome is None}
        progress = JobProgress(len(waiting), stream if options.progress else None)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_PERIOD_S)
            for reference in ready:
                units, unit = pending.pop(reference)
                unit.outcome = _outcome(ray, reference, unit)
                if unit.outcome.result is not None and unit.key is not None:
                    store_bag_result(unit.options.out, unit.key, unit.outcome.result)
                if all(u.outcome is not None for u in units):
                    progress.bag_done(bag_outcome(units, 0))
            progress.show(ray.get(board.total.remote()))
        progress.finish()
    finally:
        if started_here:
            ray.shutdown()


def _outcome(ray: Any, reference: Any, unit: WorkUnit) -> BagOutcome:
    """The task's outcome; a task that died (worker crash, out of memory) becomes a failed bag."""
    try:
        outcome: BagOutcome = ray.get(reference)
    except ray.exceptions.RayError as error:
        reason = f"the task failed: {_one_line(error).splitlines()[0][:300]}"
        return BagOutcome(str(unit.options.bag), unit.label, None, reason)
    return outcome


class JobProgress:
    """One progress line for the whole job: bags and frames done, frames per second, ETA."""

    def __init__(self, bags: int, stream: TextIO | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.bags, self.stream, self.clock = bags, stream, clock
        self.bags_done, self.bags_evaluated, self.frames_done, self.frames_finished = 0, 0, 0, 0
        self.start = clock()
        self.last_line = ""

    def bag_done(self, outcome: BagOutcome) -> None:
        """A bag finished (or failed)."""
        self.bags_done += 1
        if outcome.result is not None:
            self.bags_evaluated += 1
            self.frames_finished += outcome.result.frames_on_topic
        if self.stream is not None and outcome.error is not None:
            print(f"bag-eval: {outcome.bag}: {outcome.error}", file=self.stream, flush=True)

    def line(self, frames_done: int) -> str:
        """``bags 3/6, frames 120, 45.2 fps, ETA 4 s``: the ETA assumes the bags not finished yet are as
        long as the evaluated ones on average, less what is done of them already."""
        self.frames_done = max(frames_done, self.frames_done)
        elapsed = self.clock() - self.start
        fps = self.frames_done / elapsed if elapsed > 0 else 0.0
        text = f"bag-eval: bags {self.bags_done}/{self.bags}, frames {self.frames_done}, {fps:.1f} fps"
        if self.bags_evaluated and fps > 0 and self.bags_done < self.bags:
            per_bag = self.frames_finished / self.bags_evaluated
            in_flight = self.frames_done - self.frames_finished
            remaining = max(0.0, per_bag * (self.bags - self.bags_done) - in_flight)
            text += f", ETA {remaining / fps:.0f} s"
        return text

    def show(self, frames_done: int) -> None:
        """Print the line when it changed."""
        line = self.line(frames_done)
        if self.stream is not None and line != self.last_line:
            print(line, file=self.stream, flush=True)
            self.last_line = line

    def finish(self) -> None:
        """The last line, with the totals (the board may not have heard of the last frames yet)."""
        self.show(max(self.frames_done, self.frames_finished))


def bag_rows(fleet: FleetResult) -> list[dict[str, Any]]:
    """One row per bag for the report: status, frames, its own headline metric and speed."""
    rows = []
    for outcome in fleet.outcomes:
        row: dict[str, Any] = {"bag": outcome.bag, "output": f"bags/{outcome.label}"}
        if outcome.note is not None:
            row["note"] = outcome.note
        result = outcome.result
        if result is None:
            row.update(status="failed", reason=outcome.error)
        else:
            row.update(
                status="incomplete" if result.read_error else "reused" if outcome.reused else "ok",
                reason=result.read_error,
                frames_on_topic=result.frames_on_topic,
                frames_processed=result.frames_processed,
                frames_evaluated=result.frames_evaluated,
                fps=None if result.wall_seconds <= 0 else result.frames_processed / result.wall_seconds,
            )
            if result.segmentation is not None:
                row["mean_iou"] = result.segmentation.mean_iou
            if result.detection is not None:
                row["map"] = result.detection.mean_ap
        rows.append(row)
    return rows
