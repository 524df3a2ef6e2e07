"""A node on a private rclpy context with its own executor, for tools inside a bigger process.

rclpy is imported on construction, so modules that subclass this stay importable (and quick to
start, e.g. for --show-args) without touching ROS."""

from __future__ import annotations


class PrivateParticipant:
    """`self.node` spun by `self.executor` on a context of its own: not the default context
    (no signal handlers installed) and not the process's --ros-args (args=[])."""

    def __init__(self, node_name: str):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.context = Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node(node_name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def close(self) -> None:
        import rclpy

        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.executor.shutdown(timeout_sec=1.0)
        if self.context.ok():
            rclpy.shutdown(context=self.context)
