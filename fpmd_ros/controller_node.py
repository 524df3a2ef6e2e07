"""Entry point of the ``policy_controller`` console script and of ``python -m
fpmd_ros.controller_node``; the node itself is the :mod:`fpmd_ros.controller` package (import
its names from there).

Kept light on purpose: nothing heavy (rclpy, torch, onnxruntime) is imported before
:func:`fpmd_ros.node_main.run_node` has installed its signal handlers, so a Ctrl-C at any moment
of the start exits 0 instead of killing the process with SIGINT.
"""

from __future__ import annotations

import sys

from fpmd_ros.interface import CONTROLLER_NODE_NAME


def main(args=None) -> int:
    """Run the policy_controller until SIGINT/SIGTERM; see fpmd_ros.node_main for exit codes."""
    from fpmd_ros.node_main import run_node

    def make_node():
        from fpmd_ros.controller.node import PolicyController

        return PolicyController()

    def start(node) -> int | None:
        from fpmd_ros.controller.node import autostart

        return autostart(node)

    return run_node(CONTROLLER_NODE_NAME, make_node, args=args, start=start)


if __name__ == '__main__':
    sys.exit(main())
