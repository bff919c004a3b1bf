"""One perception node (segmentation or detection) on a camera topic; seg.launch.py and
det.launch.py include it with their node and defaults.

    ros2 launch trt_perception perception.launch.py executable:=detection_node node_name:=detection \
        model_spec:=yolov8n_coco params_file:=/path/to/detection.yaml image_topic:=/camera/image_raw

No Fast DDS environment is set here: the node itself picks the shipped large-images profile unless
FASTRTPS_DEFAULT_PROFILES_FILE / FASTDDS_DEFAULT_PROFILES_FILE is set (docs/nodes.md, QoS), so
`ros2 run` and `ros2 launch` behave the same.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    """The node with its parameters file, spec/backend/compressed overrides and topic remappings."""
    image_topic = LaunchConfiguration("image_topic")
    return LaunchDescription([
        DeclareLaunchArgument("executable", description="segmentation_node or detection_node"),
        DeclareLaunchArgument("node_name", description="Name of the node (its outputs are ~/...)"),
        DeclareLaunchArgument("model_spec", description="Model spec file, or the name of a bundled spec"),
        DeclareLaunchArgument("params_file", description="Node parameters YAML"),
        DeclareLaunchArgument("image_topic", default_value="image_raw", description="Camera image topic"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto, onnxruntime or tensorrt; empty keeps the spec's"),
        DeclareLaunchArgument("use_compressed", default_value="false",
                              description="Subscribe <image_topic>/compressed (jpeg/png) instead"),
        Node(
            package="trt_perception",
            executable=LaunchConfiguration("executable"),
            name=LaunchConfiguration("node_name"),
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
