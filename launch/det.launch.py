"""Launch the detection node on a camera topic.

    ros2 launch trt_perception det.launch.py image_topic:=/camera/image_raw
    ros2 launch trt_perception det.launch.py model_spec:=/path/to/ssd_mobilenet_v2.yaml backend:=tensorrt

Outputs: <namespace>/detection/detections (and overlay when enabled), label_info, and
/diagnostics.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    """The detection node with its parameters file and topic remappings."""
    image_topic = LaunchConfiguration("image_topic")
    return LaunchDescription([
        DeclareLaunchArgument("model_spec", default_value="centernet_mobilenetv3_coco",
                              description="Model spec file, or the name of a bundled spec"),
        DeclareLaunchArgument("image_topic", default_value="image_raw", description="Camera image topic"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("trt_perception"), "config", "params", "detection.yaml"]),
            description="Node parameters YAML"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto, onnxruntime or tensorrt; empty keeps the spec's"),
        DeclareLaunchArgument("use_compressed", default_value="false",
                              description="Subscribe <image_topic>/compressed (jpeg/png) instead"),
        Node(
            package="trt_perception",
            executable="detection_node",
            name="detection",
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
