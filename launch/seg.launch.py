"""Launch the segmentation node on a camera topic.

    ros2 launch trt_perception seg.launch.py image_topic:=/camera/image_raw
    ros2 launch trt_perception seg.launch.py model_spec:=/path/to/mosaic.yaml backend:=tensorrt

Arguments: model_spec, image_topic, namespace, params_file, backend, use_compressed (see
perception.launch.py). Outputs: <namespace>/segmentation/labels (and color_mask / overlay when
enabled), label_info, and /diagnostics.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    """perception.launch.py with the segmentation node, the selfie model and segmentation.yaml."""
    return LaunchDescription([
        DeclareLaunchArgument("model_spec", default_value="selfie_segmentation",
                              description="Model spec file, or the name of a bundled spec"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution(
                [FindPackageShare("trt_perception"), "config", "params", "segmentation.yaml"]
            ),
            description="Node parameters YAML"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(Path(__file__).with_name("perception.launch.py"))),
            launch_arguments={
                "model_spec": LaunchConfiguration("model_spec"),
                "params_file": LaunchConfiguration("params_file"),
                "executable": "segmentation_node", "node_name": "segmentation",
            }.items(),
        ),
    ])
