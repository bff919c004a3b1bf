"""Unit tests of the ROS-free parts of the perception nodes: frame slot, statistics, throttle, parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trt_perception.ros.dds_profile import (
    PROFILE_VARIABLES,
    large_images_profile,
    profile_variables,
    use_large_images_profile,
)
from trt_perception.ros.parameters import (
    COMMON_PARAMETERS,
    SEGMENTATION_PARAMETERS,
    ParameterDefinition,
    check_value,
    detection_parameters,
)
from trt_perception.ros.statistics import (
    STAGES,
    Health,
    HealthLimits,
    HealthMonitor,
    LatencyWindow,
    NodeStatistics,
    RateMeter,
)
from trt_perception.ros.throttle import MessageThrottle, quote_limited


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_meter_counts_events_in_window() -> None:
    clock = FakeClock()
    meter = RateMeter(window_seconds=2.0, clock=clock)
    assert meter.rate() == 0.0
    for _ in range(11):  # 10 intervals of 0.1 s -> 10 Hz
        meter.tick()
        clock.now += 0.1
    assert meter.rate() == pytest.approx(10.0)
    clock.now += 10.0  # everything expires
    assert meter.rate() == 0.0


def test_latency_window_mean_and_max_of_last_samples() -> None:
    window = LatencyWindow(size=3)
    for sample in (100.0, 1.0, 2.0, 6.0):
        window.add(sample)
    assert window.count == 3
    assert window.mean() == pytest.approx(3.0)
    assert window.maximum() == 6.0


def test_statistics_report_has_counts_rates_stages_and_last_error() -> None:
    clock = FakeClock()
    stats = NodeStatistics(window_seconds=5.0, clock=clock)
    for _ in range(4):
        stats.frame_received()
        clock.now += 0.5
    stats.frame_dropped()
    stats.frame_processed({"decode": 1.0, "inference": 30.0, "publish": 2.0, "unknown_stage": 9.0})
    stats.frame_processed({"decode": 3.0, "inference": 10.0})
    stats.frame_failed("unknown encoding 'yuv9'", bad_input=True)
    clock.now += 1.0
    report = stats.report()
    values = dict(report.key_values)
    assert values["input_rate_hz"] == "2.00"
    assert values["frames_received"] == "4"
    assert values["frames_processed"] == "2"
    assert values["frames_dropped"] == "1"
    assert values["frames_bad_input"] == "1"
    assert values["latency_decode_ms_mean"] == "2.000"
    assert values["latency_inference_ms_max"] == "30.000"
    assert values["latency_publish_ms_mean"] == "2.000"
    assert "latency_unknown_stage_ms_mean" not in values
    assert all(f"latency_{stage}_ms_mean" in values for stage in STAGES)
    assert values["last_error"] == "unknown encoding 'yuv9'"
    assert report.seconds_since_error == pytest.approx(1.0)


def test_throttle_logs_each_distinct_message_once_per_period_with_repeat_count() -> None:
    clock = FakeClock()
    throttle = MessageThrottle(period=5.0, clock=clock)
    assert throttle.admit("bad step") == "bad step"
    assert throttle.admit("bad encoding") == "bad encoding"
    assert throttle.admit("bad step") is None
    assert throttle.admit("bad step") is None
    clock.now += 5.0
    assert throttle.admit("bad step") == "bad step (2 more since last report)"
    assert throttle.admit("bad step") is None


def test_throttle_treats_messages_differing_only_in_numbers_as_one_kind() -> None:
    clock = FakeClock()
    throttle = MessageThrottle(period=5.0, clock=clock)
    texts = [
        f"rgb8 image data truncated: {size} bytes, step 1152 x height 384 needs 442368" for size in range(100, 2100, 100)
    ]
    admitted = [throttle.admit(text) for text in texts]
    assert admitted[0] == texts[0]
    assert admitted[1:] == [None] * 19
    assert throttle.admit("unknown image encoding 'yuv9'") == "unknown image encoding 'yuv9'"
    clock.now += 5.0
    assert throttle.admit("rgb8 image data truncated: 7 bytes, step 3 x height 5 needs 15") == (
        "rgb8 image data truncated: 7 bytes, step 3 x height 5 needs 15 (19 more since last report)"
    )


def test_throttle_forgets_old_messages_when_many_distinct_ones_arrive() -> None:
    clock = FakeClock()
    throttle = MessageThrottle(period=1.0, clock=clock, total_lines=1000)
    words = ["".join(chr(ord("a") + int(digit)) for digit in str(index)) for index in range(throttle.max_messages + 1)]
    kinds = [f"unknown encoding {word}" for word in words]
    assert all(throttle.admit(kind) == kind for kind in kinds)
    clock.now += 2.0
    throttle.admit("another")
    assert len(throttle._last_logged) == 1


def test_throttle_keys_on_the_kind_not_on_text_a_sender_chose() -> None:
    clock = FakeClock()
    throttle = MessageThrottle(period=5.0, clock=clock)
    encodings = [f"{'z' * 1000}{index}x" for index in range(50)] + ["it's", 'say "hi"']
    admitted = [throttle.admit(f"unknown image encoding {encoding!r}; supported: rgb8") for encoding in encodings]
    assert admitted[0] is not None and all(text is None for text in admitted[1:])
    assert len(admitted[0]) < 500 and admitted[0].endswith("more characters)")
    assert throttle.admit("compressed image data is empty") == "compressed image data is empty"
    assert throttle.suppressed_total == len(encodings) - 1


def test_throttle_limits_total_lines_and_reports_what_it_held_back() -> None:
    clock = FakeClock()
    throttle = MessageThrottle(period=0.0, clock=clock, total_lines=3, total_window=10.0)
    lines = [throttle.admit(f"problem {letter}") for letter in "abcdef"]
    assert lines == ["problem a", "problem b", "problem c", None, None, None]
    assert throttle.suppressed_total == 3
    clock.now += 10.0
    assert throttle.admit("problem g") == "problem g (3 other lines suppressed by the log rate limit)"
    assert throttle.admit("problem h") == "problem h"


def test_quote_limited_cuts_long_text_and_says_how_much() -> None:
    assert quote_limited("abc", limit=5) == "abc"
    assert quote_limited("a" * 12, limit=5) == "aaaaa... (7 more characters)"


def test_health_reports_stall_only_while_a_publisher_exists() -> None:
    clock = FakeClock()
    stats = NodeStatistics(clock=clock)
    monitor = HealthMonitor(HealthLimits(stall_seconds=3.0), clock=clock)
    clock.now += 5.0
    assert monitor.assess(stats, 0.0, publishers=0) == []
    assert monitor.assess(stats, 0.0, publishers=2) == [Health("ERROR", "no frame for 5.0 s while 2 publishers exist")]
    stats.frame_received()
    clock.now += 2.0
    assert monitor.assess(stats, 0.0, publishers=2) == []
    clock.now += 1.5
    assert monitor.assess(stats, 0.0, publishers=1)[0].level == "ERROR"


def test_health_warns_on_rate_out_of_range_and_on_lost_share_per_interval() -> None:
    clock = FakeClock()
    stats = NodeStatistics(clock=clock)
    monitor = HealthMonitor(HealthLimits(min_rate_hz=8.0, max_rate_hz=12.0, max_lost_share=0.5), clock=clock)
    for _ in range(10):
        stats.frame_received()
    for _ in range(6):
        stats.frame_dropped()
    assert monitor.assess(stats, 10.0, publishers=1) == [
        Health("WARN", "6 of 10 frames dropped or skipped since the last report (more than 50%)")
    ]
    for _ in range(10):
        stats.frame_received()
    stats.frame_failed("bad", bad_input=True)
    assert monitor.assess(stats, 10.0, publishers=1) == []  # 1 of the 10 new frames
    assert monitor.assess(stats, 30.0, publishers=1) == [
        Health("WARN", "input rate 30.00 Hz outside the expected [8, 12] Hz")
    ]


def test_parameter_values_checked_against_type_range_and_choices() -> None:
    by_name = {p.name: p for p in COMMON_PARAMETERS + SEGMENTATION_PARAMETERS}
    assert check_value(by_name["overlay_alpha"], 0.3) is None
    assert "<= 1.0" in (check_value(by_name["overlay_alpha"], 1.5) or "")
    assert "number" in (check_value(by_name["overlay_alpha"], "half") or "")
    assert "finite" in (check_value(by_name["overlay_alpha"], float("nan")) or "")
    assert check_value(by_name["input_reliability"], "reliable") is None
    assert "one of" in (check_value(by_name["input_reliability"], "sometimes") or "")
    assert "integer" in (check_value(by_name["input_depth"], 2.5) or "")
    assert ">= 1" in (check_value(by_name["input_depth"], 0) or "")
    assert "bool" in (check_value(by_name["publish_overlay"], 1) or "")
    assert check_value(by_name["output_resolution"], "network") is None


def test_every_default_passes_its_own_check_and_names_are_unique() -> None:
    definitions = COMMON_PARAMETERS + SEGMENTATION_PARAMETERS + detection_parameters(0.3, None, 100, False, ["person"])
    assert len({d.name for d in definitions}) == len(definitions)
    for definition in definitions:
        assert check_value(definition, definition.default) is None, definition.name
        assert definition.description


def test_detection_parameters_take_defaults_from_spec() -> None:
    by_name = {p.name: p for p in detection_parameters(0.25, None, 50, True, ["person", "3"])}
    assert by_name["score_threshold"].default == 0.25
    assert by_name["nms_iou"].default == 1.0  # no host NMS
    assert by_name["max_detections"].default == 50
    assert by_name["class_agnostic"].default is True
    assert by_name["classes"].default == "person,3"
    assert all(d.runtime for d in by_name.values())
    with_nms = {p.name: p for p in detection_parameters(0.3, 0.45, 100, False, [])}
    assert with_nms["nms_iou"].default == 0.45


def test_constraints_text_describes_rules() -> None:
    definition = ParameterDefinition("x", 0.5, "x", runtime=True, minimum=0.0, maximum=1.0)
    assert definition.constraints == "range [0.0, 1.0]; changeable at run time"


def test_large_images_profile_is_set_for_fast_dds_when_no_profile_is_chosen() -> None:
    profile = large_images_profile()
    assert profile is not None and "<segment_size>33554432</segment_size>" in profile.read_text()
    for rmw in ({}, {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}):
        environ = dict(rmw)
        assert str(profile) in use_large_images_profile(environ)
        assert all(environ[name] == str(profile) for name in PROFILE_VARIABLES)


@pytest.mark.parametrize(
    ("library", "variable"),
    [("libfastrtps.so.2.14", "FASTRTPS_DEFAULT_PROFILES_FILE"), ("libfastdds.so.3.2", "FASTDDS_DEFAULT_PROFILES_FILE")],
)
def test_profile_goes_to_the_variable_the_installed_fast_dds_reads(tmp_path: Path, library: str, variable: str) -> None:
    (tmp_path / "ros" / "lib").mkdir(parents=True)
    (tmp_path / "ros" / "lib" / library).touch()
    (tmp_path / "ros" / "lib" / library.split(".so")[0]).with_suffix(".so").touch()
    environ = {"AMENT_PREFIX_PATH": f"{tmp_path / 'empty'}:{tmp_path / 'ros'}"}
    assert profile_variables(environ) == (variable,)
    line = use_large_images_profile(environ)
    assert set(environ) == {"AMENT_PREFIX_PATH", variable} and variable in line
    assert profile_variables({"AMENT_PREFIX_PATH": str(tmp_path / "empty")}) == PROFILE_VARIABLES


@pytest.mark.parametrize(
    "environ",
    [{"FASTRTPS_DEFAULT_PROFILES_FILE": "/my/profile.xml"}, {"FASTDDS_DEFAULT_PROFILES_FILE": ""},
     {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}],
)
def test_large_images_profile_leaves_a_chosen_profile_or_other_rmw_alone(environ: dict[str, str]) -> None:
    before = dict(environ)
    line = use_large_images_profile(environ)
    assert environ == before
    assert all(f"{name}={value!r}" in line or value in line for name, value in before.items())


@pytest.mark.parametrize("node", ["segmentation", "detection"])
def test_params_files_give_every_parameter_its_default(node: str) -> None:
    # The detection filter defaults come from the model spec, so detection.yaml leaves them out.
    task = SEGMENTATION_PARAMETERS if node == "segmentation" else detection_parameters(0.3, None, 100, False, [])
    spec_defaults = {"score_threshold", "nms_iou", "max_detections", "class_agnostic"} if node == "detection" else set()
    params_file = Path(__file__).resolve().parents[1] / "config" / "params" / f"{node}.yaml"
    values = yaml.safe_load(params_file.read_text())["/**"]["ros__parameters"]
    # cameras (a list) is only shown commented out: rcl reads an empty YAML list as no value at all
    expected = {d.name: d.default for d in COMMON_PARAMETERS + task if d.name not in spec_defaults | {"cameras"}}
    expected["model_spec"] = {"segmentation": "selfie_segmentation", "detection": "centernet_mobilenetv3_coco"}[node]
    assert values == expected
