"""Offline and live evaluation of models on recorded rosbag2 data: metrics, bag I/O, reports."""
