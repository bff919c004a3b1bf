"""Launch the segmentation node on a camera topic.

    ros2 launch trt_perception seg.launch.py image_topic:=/camera/image_raw
    ros2 launch trt_perception seg.launch.py model_spec:=/path/to/mosaic.yaml backend:=tensorrt

Outputs: <namespace>/segmentation/labels (and color_mask / overlay when enabled), label_info, and
/diagnostics.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    """The segmentation node with its parameters file and topic remappings."""
    image_topic = LaunchConfiguration("image_topic")
    return LaunchDescription([
        DeclareLaunchArgument("model_spec", default_value="selfie_segmentation",
                              description="Model spec file, or the name of a bundled spec"),
        DeclareLaunchArgument("image_topic", default_value="image_raw", description="Camera image topic"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("trt_perception"), "config", "params", "segmentation.yaml"]),
            description="Node parameters YAML"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto, onnxruntime or tensorrt; empty keeps the spec's"),
        DeclareLaunchArgument("use_compressed", default_value="false",
                              description="Subscribe <image_topic>/compressed (jpeg/png) instead"),
        Node(
            package="trt_perception",
            executable="segmentation_node",
            name="segmentation",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[
                LaunchConfiguration("params_file"),
                {
                    "model_spec": ParameterValue(LaunchConfiguration("model_spec"), value_type=str),
                    "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                    "use_compressed": ParameterValue(LaunchConfiguration("use_compressed"), value_type=bool),
                },
            ],
            remappings=[("image", image_topic), ("image/compressed", [image_topic, "/compressed"])],
        ),
    ])
