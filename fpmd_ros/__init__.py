"""ROS 2 adapters for fpmd_core.

This package holds only the ROS side: message conversions, the ``mujoco_sim`` node, the
``trainer`` node, the ``policy_controller`` lifecycle node and the node graphs that the launch
files start. All learning code lives in :mod:`fpmd_core`, which never imports ROS.
"""
