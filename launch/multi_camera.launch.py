"""Several cameras into one perception node (one network; the newest frames run as one batch):
perception.launch.py with ``cameras`` (default front,rear,left) and executable segmentation_node.

    ros2 launch trt_perception multi_camera.launch.py cameras:=front,rear,left
    ros2 launch trt_perception multi_camera.launch.py executable:=detection_node node_name:=detection \\
        cameras:=left,right image_topic_format:=/stereo/{camera}/image_rect model_spec:=yolov8n_coco

Camera NAME is read from ``image_topic_format`` with ``{camera}`` replaced (default
``/{camera}/image_raw``; ``<...>/compressed`` with use_compressed) and its results go to
``<namespace>/<node_name>/NAME/labels`` (``.../NAME/detections``, ...); one /diagnostics status per
camera. ``executable`` may also be ``segmentation_lifecycle_node`` / ``detection_lifecycle_node``
(then bring it up with ``ros2 lifecycle set``). The other arguments are perception.launch.py's; a node
that exits with an error fails the launch as there.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration


def generate_launch_description() -> LaunchDescription:
    """perception.launch.py with several cameras; cameras, executable and node_name as the user gives them."""
    return LaunchDescription([
        DeclareLaunchArgument("cameras", default_value="front,rear,left", description="Comma-separated camera names"),
        DeclareLaunchArgument("executable", default_value="segmentation_node",
                              description="segmentation_node, detection_node or their *_lifecycle_node"),
        DeclareLaunchArgument("node_name", default_value="segmentation", description="Name of the node"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(Path(__file__).with_name("perception.launch.py"))),
            launch_arguments={
                name: LaunchConfiguration(name) for name in ("cameras", "executable", "node_name")
            }.items(),
        ),
    ])
