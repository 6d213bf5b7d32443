"""Demonstrations on disk: the rosbag2 (MCAP) episodes the collector writes and
the cached arrays pretraining reads. No ROS client library imports (MCAP is
read and written with the mcap packages)."""
