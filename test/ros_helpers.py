"""Helpers shared by the ROS tests: isolated contexts, bounded spinning, message builders."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

DEFAULT_TIMEOUT_S = 10.0
_NAME_NUMBERS = itertools.count()


def fresh_name(prefix: str) -> str:
    """A node or namespace name that no other test run and no earlier test of this process used.

    Fast DDS's graph can list a destroyed node of this process for a while, and a new node of the
    same name in the next test was then seen not to be discovered within 30 s."""
    return f'{prefix}_p{os.getpid()}_{next(_NAME_NUMBERS)}'


def spin_until(executor, predicate: Callable[[], bool], timeout_s: float = DEFAULT_TIMEOUT_S,
               step_s: float = 0.02) -> bool:
    """Spin ``executor`` until ``predicate()`` is true or ``timeout_s`` (wall clock) passes.

    Returns the final value of the predicate; never blocks longer than ``timeout_s`` + ``step_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bool(predicate())
        executor.spin_once(timeout_sec=min(step_s, remaining))
    return True


def wait_for_subscribers(executor, publisher, count: int = 1,
                         timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Spin until ``publisher`` has matched at least ``count`` subscriptions."""
    return spin_until(executor, lambda: publisher.get_subscription_count() >= count, timeout_s)


def make_joint_state(stamp_sec: int, stamp_nanosec: int, names, positions, velocities, efforts,
                     frame_id: str = ''):
    """Build a ``sensor_msgs/JointState`` with the given content."""
    from sensor_msgs.msg import JointState

    msg = JointState()
    msg.header.stamp.sec = int(stamp_sec)
    msg.header.stamp.nanosec = int(stamp_nanosec)
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = [float(x) for x in positions]
    msg.velocity = [float(x) for x in velocities]
    msg.effort = [float(x) for x in efforts]
    return msg


def reliable_qos(depth: int = 10):
    """RELIABLE, KEEP_LAST(depth), VOLATILE QoS profile."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=depth,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def controller_factory(ros_context, ros_executor, make_probe):
    """make(**parameters) -> (PolicyController with those parameter overrides, probe), on the
    test executor; the first call makes the probe (`make_probe(context, executor)`), which
    every controller of the test shares."""
    from rclpy.parameter import Parameter

    from fpmd_ros.controller.node import PolicyController

    probes = []

    def make(**parameters):
        node = PolicyController(
            context=ros_context,
            parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        ros_executor.add_node(node)
        if not probes:
            probes.append(make_probe(ros_context, ros_executor))
        return node, probes[0]

    return make
