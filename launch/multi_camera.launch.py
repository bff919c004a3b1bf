"""Several cameras into one perception node (one network; the newest frames run as one batch).

    ros2 launch trt_perception multi_camera.launch.py cameras:=front,rear,left
    ros2 launch trt_perception multi_camera.launch.py executable:=detection_node node_name:=detection \
        cameras:=left,right image_topic_format:=/stereo/{camera}/image_rect model_spec:=yolov8n_coco

Camera NAME is read from ``image_topic_format`` with ``{camera}`` replaced (default
``/{camera}/image_raw``; ``<...>/compressed`` with use_compressed) and its results go to
``<namespace>/<node_name>/NAME/labels`` (``.../NAME/detections``, ...); one /diagnostics status per
camera. ``executable`` may also be ``segmentation_lifecycle_node`` / ``detection_lifecycle_node``
(then bring it up with ``ros2 lifecycle set``). ``params_file`` and ``model_spec`` work as in
perception.launch.py.
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def multi_camera_node(context: LaunchContext) -> list[Node]:
    """The node with ``cameras`` and one input remapping per camera."""
    cameras = [name.strip() for name in LaunchConfiguration("cameras").perform(context).split(",") if name.strip()]
    topic_format = LaunchConfiguration("image_topic_format").perform(context)
    parameters: dict[str, object] = {"cameras": cameras}
    model_spec = LaunchConfiguration("model_spec").perform(context)
    if model_spec:
        parameters["model_spec"] = model_spec
    remappings = []
    for camera in cameras:
        topic = topic_format.format(camera=camera)
        remappings += [(f"{camera}/image", topic), (f"{camera}/image/compressed", f"{topic}/compressed")]
    return [Node(
        package="trt_perception",
        executable=LaunchConfiguration("executable"),
        name=LaunchConfiguration("node_name"),
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), parameters],
        remappings=remappings,
    )]


def generate_launch_description() -> LaunchDescription:
    """The launch arguments and the node."""
    return LaunchDescription([
        DeclareLaunchArgument("cameras", default_value="front,rear,left", description="Comma-separated camera names"),
        DeclareLaunchArgument("image_topic_format", default_value="/{camera}/image_raw",
                              description="Input topic of each camera, {camera} replaced by its name"),
        DeclareLaunchArgument("executable", default_value="segmentation_node",
                              description="segmentation_node, detection_node or their *_lifecycle_node"),
        DeclareLaunchArgument("node_name", default_value="segmentation", description="Name of the node"),
        DeclareLaunchArgument(
            "params_file",
            default_value=[FindPackageShare("trt_perception"), "/config/params/", LaunchConfiguration("node_name"),
                           ".yaml"],
            description="Node parameters YAML (default: the package's config/params/<node_name>.yaml)"),
        DeclareLaunchArgument("model_spec", default_value="",
                              description="Model spec file or bundled name; empty keeps the parameters file's"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        OpaqueFunction(function=multi_camera_node),
    ])
