"""ROS 2 glue: nodes that feed camera images through the inference core and publish the results."""
