"""Launch the detection node on a camera topic: perception.launch.py with executable detection_node.

    ros2 launch trt_perception det.launch.py image_topic:=/camera/image_raw
    ros2 launch trt_perception det.launch.py model_spec:=/path/to/ssd_mobilenet_v2.yaml backend:=tensorrt

Arguments (see perception.launch.py): node_name (default detection), executable (default
detection_node), model_spec, image_topic, namespace, params_file (default
config/params/detection.yaml, which names the default model spec), backend, use_compressed.
Outputs: <namespace>/detection/detections (and overlay when enabled), label_info, and /diagnostics.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration


def generate_launch_description() -> LaunchDescription:
    """perception.launch.py for the detection node; node_name and executable as the user gives them."""
    return LaunchDescription([
        DeclareLaunchArgument("executable", default_value="detection_node", description="The node executable"),
        DeclareLaunchArgument(
            "node_name", default_value="detection", description="Name of the node (its outputs are ~/...)"
        ),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(Path(__file__).with_name("perception.launch.py"))),
            launch_arguments={
                "executable": LaunchConfiguration("executable"), "node_name": LaunchConfiguration("node_name")
            }.items(),
        ),
    ])
