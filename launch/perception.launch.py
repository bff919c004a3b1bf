"""One perception node (segmentation or detection) on a camera topic; seg.launch.py and det.launch.py
include it with their node.

    ros2 launch trt_perception perception.launch.py executable:=detection_node node_name:=detection \
        model_spec:=yolov8n_coco params_file:=/path/to/detection.yaml image_topic:=/camera/image_raw

`params_file` defaults to the package's config/params/segmentation.yaml or detection.yaml, by the
executable. `model_spec`, `backend` and `use_compressed` override the parameters file only when given
(empty by default), so the model spec and other values in the parameters file count unless the command
line says otherwise.

When the node exits with an error (a start-up error such as a missing model spec: one FATAL line,
exit 1; or a crash), the launch shuts down with that reason and `ros2 launch` exits 1.

No Fast DDS environment is set here: the node itself picks the shipped large-images profile unless
FASTRTPS_DEFAULT_PROFILES_FILE / FASTDDS_DEFAULT_PROFILES_FILE is set (docs/nodes.md, QoS), so
`ros2 run` and `ros2 launch` behave the same.
"""

from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

# Launch arguments that override the parameters file when not empty, with their parameter types.
OVERRIDES = {"model_spec": str, "backend": str, "use_compressed": bool}


class NodeExitedWithError(RuntimeError):
    """The perception node ended with a non-zero exit code (e.g. a start-up error: it logged one FATAL line)."""


class LaunchArgumentError(ValueError):
    """A launch argument that cannot give the node what it asks for (the launch fails with this reason)."""


def camera_topics(topic_format: str, cameras: list[str]) -> list[str]:
    """Each camera's input topic: ``topic_format`` with ``{camera}`` replaced by its name; with several
    cameras it must hold ``{camera}`` (else every camera would read the one topic), and no other field."""
    problem = f"image_topic_format {topic_format!r} must contain {{camera}} (e.g. /{{camera}}/image_raw)"
    if "{camera}" not in topic_format and len(cameras) > 1:
        raise LaunchArgumentError(f"{problem}, or every camera reads the same topic")
    try:
        return [topic_format.format(camera=camera) for camera in cameras]
    except (KeyError, IndexError, ValueError) as error:
        raise LaunchArgumentError(f"{problem} and no other field in braces: {error!r}") from None


def fail_on_error_exit(context: LaunchContext) -> list[TimerAction]:
    """When the node exited non-zero, fail the launch with that reason: launch shuts down and `ros2 launch`
    exits 1, so a supervisor sees the failure (launch itself would exit 0). The failure is raised a turn
    later, so that every other handler of the exit event (launch_testing's among them) sees it first."""
    event = context.locals.event
    if event.returncode == 0 or context.is_shutdown:
        return []
    reason = f"{event.process_name} exited with code {event.returncode} (see its FATAL line above)"

    def fail(_: LaunchContext) -> None:
        raise NodeExitedWithError(reason)

    return [TimerAction(period=0.0, actions=[OpaqueFunction(function=fail)])]


def default_params_file(context: LaunchContext) -> str:
    """The package's config/params/detection.yaml for the detection executables, else segmentation.yaml
    (whatever the node's name)."""
    task = "detection" if LaunchConfiguration("executable").perform(context).startswith("detection") else "segmentation"
    return f"{FindPackageShare('trt_perception').perform(context)}/config/params/{task}.yaml"


def perception_node(context: LaunchContext) -> list[Node | RegisterEventHandler]:
    """The node with its parameters file, then an override for each non-empty argument of OVERRIDES, and
    the handler that fails the launch when the node exits with an error."""
    overrides: dict[str, object] = {
        name: ParameterValue(LaunchConfiguration(name), value_type=value_type)
        for name, value_type in OVERRIDES.items()
        if LaunchConfiguration(name).perform(context)
    }
    params_file = LaunchConfiguration("params_file").perform(context) or default_params_file(context)
    if not Path(params_file).is_file():  # launch_ros would only warn and start the node without it
        raise LaunchArgumentError(f"params_file {params_file!r} is not a file")
    image_topic = LaunchConfiguration("image_topic")
    remappings = [("image", image_topic), ("image/compressed", [image_topic, "/compressed"])]
    cameras = [name.strip() for name in LaunchConfiguration("cameras").perform(context).split(",") if name.strip()]
    if cameras:  # several cameras into one node: NAME/image remapped to image_topic_format with {camera}
        overrides["cameras"] = cameras
        topic_format = LaunchConfiguration("image_topic_format").perform(context)
        remappings = []
        for camera, topic in zip(cameras, camera_topics(topic_format, cameras)):
            remappings += [(f"{camera}/image", topic), (f"{camera}/image/compressed", f"{topic}/compressed")]
    node = Node(
        package="trt_perception",
        executable=LaunchConfiguration("executable"),
        name=LaunchConfiguration("node_name"),
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[params_file, *([overrides] if overrides else [])],
        remappings=remappings,
    )
    on_exit = OnProcessExit(target_action=node, on_exit=[OpaqueFunction(function=fail_on_error_exit)])
    return [node, RegisterEventHandler(on_exit)]


def generate_launch_description() -> LaunchDescription:
    """The launch arguments and the node."""
    return LaunchDescription([
        DeclareLaunchArgument("executable", description="segmentation_node or detection_node"),
        DeclareLaunchArgument("node_name", description="Name of the node (its outputs are ~/...)"),
        DeclareLaunchArgument(
            "params_file", default_value="",
            description="Node parameters YAML; empty: the package's config/params/segmentation.yaml or "
                        "detection.yaml, by the executable"),
        DeclareLaunchArgument("model_spec", default_value="",
                              description="Model spec file, or the name of a bundled spec; empty keeps the "
                                          "parameters file's"),
        DeclareLaunchArgument("image_topic", default_value="image_raw", description="Camera image topic"),
        DeclareLaunchArgument("cameras", default_value="",
                              description="Comma-separated camera names: several cameras into one node (then "
                                          "image_topic_format names their topics); empty: one camera on image_topic"),
        DeclareLaunchArgument("image_topic_format", default_value="/{camera}/image_raw",
                              description="With cameras: each camera's input topic, {camera} replaced by its name"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto, onnxruntime or tensorrt; empty keeps the parameters file's"),
        DeclareLaunchArgument("use_compressed", default_value="",
                              description="true: subscribe <image_topic>/compressed (jpeg/png) instead; empty "
                                          "keeps the parameters file's"),
        OpaqueFunction(function=perception_node),
    ])
