"""Shared pytest setup.

At import time (before any test imports rclpy) every test run gets its own DDS domain, so
concurrent runs on one machine never see each other's traffic, and discovery stays on localhost.
Override the domain with FPMD_TEST_DOMAIN_ID.
"""

from __future__ import annotations

import os
import sys

TEST_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TEST_DIR)


def _choose_domain_id() -> int:
    override = os.environ.get('FPMD_TEST_DOMAIN_ID')
    if override:
        return int(override)
    return 1 + os.getpid() % 100  # 1..100: valid for Fast DDS on every platform


os.environ['ROS_DOMAIN_ID'] = str(_choose_domain_id())
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'

if TEST_DIR not in sys.path:
    sys.path.insert(0, TEST_DIR)

import pytest  # noqa: E402


def pytest_report_header(config):
    return (f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} "
            f"ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']}")


@pytest.fixture
def ros_context():
    """A fresh, initialised ``rclpy`` context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        if ctx.ok():
            rclpy.shutdown(context=ctx)


@pytest.fixture
def ros_executor(ros_context):
    """A single-threaded executor on ``ros_context``; nodes added to it are destroyed after."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=ros_context)
    try:
        yield executor
    finally:
        for node in list(executor.get_nodes()):
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)


@pytest.fixture
def one_thread_torch():
    """torch on one thread (tiny nets: one thread is fastest, and the results do not depend on
    the machine's core count); the thread count is restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def seeded_one_thread_torch(one_thread_torch):
    """`one_thread_torch`, with torch's global generator seeded with 0."""
    import torch

    torch.manual_seed(0)
