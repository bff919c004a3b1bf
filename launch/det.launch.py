"""Launch the detection node on a camera topic.

    ros2 launch trt_perception det.launch.py image_topic:=/camera/image_raw
    ros2 launch trt_perception det.launch.py model_spec:=/path/to/ssd_mobilenet_v2.yaml backend:=tensorrt

Arguments: model_spec, image_topic, namespace, params_file, backend, use_compressed (see
perception.launch.py). Outputs: <namespace>/detection/detections (and overlay when
enabled), label_info, and /diagnostics.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    """perception.launch.py with the detection node, the CenterNet model and detection.yaml."""
    return LaunchDescription([
        DeclareLaunchArgument("model_spec", default_value="centernet_mobilenetv3_coco",
                              description="Model spec file, or the name of a bundled spec"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution(
                [FindPackageShare("trt_perception"), "config", "params", "detection.yaml"]
            ),
            description="Node parameters YAML"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(Path(__file__).with_name("perception.launch.py"))),
            launch_arguments={
                "model_spec": LaunchConfiguration("model_spec"),
                "params_file": LaunchConfiguration("params_file"),
                "executable": "detection_node", "node_name": "detection",
            }.items(),
        ),
    ])
