"""Camera images for the policy, without ROS: message decoding and preprocessing.

* ``imgmsg``     -- sensor_msgs/Image and CompressedImage fields -> numpy, with
                    cv_bridge's ``imgmsg_to_cv2`` semantics, checked field by field;
                    picks the system cv_bridge when it passes a self-test
* ``preprocess`` -- any supported encoding -> the policy's rgb8 input
                    (center-crop to the output aspect, INTER_AREA resize)

Both take message objects (or anything with the same fields) and never import
rclpy, so the learning code and offline tools can use them.
"""
