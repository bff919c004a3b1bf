"""trt_perception: semantic segmentation and object detection for ROS 2 camera streams.

The data path is the architecture:
image message -> ``image_decoding`` -> ``preprocess`` -> ``backends`` -> ``decoders`` -> messages.
Everything outside ``trt_perception.ros`` is independent of ROS.
"""

__version__ = "0.1.0"
