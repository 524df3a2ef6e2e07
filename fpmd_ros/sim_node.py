"""Entry point of the ``mujoco_sim`` console script and of ``python -m fpmd_ros.sim_node``; the
node itself is the :mod:`fpmd_ros.sim` package (its docstring describes the node; import its
names from there).

Kept light on purpose: nothing heavy (rclpy, MuJoCo, torch) is imported before
:func:`fpmd_ros.node_main.run_node` has installed its signal handlers, so a Ctrl-C at any moment
of the start exits 0 instead of killing the process with SIGINT.
"""

from __future__ import annotations

import sys

from fpmd_ros.interface import SIM_NODE_NAME


def main(args=None) -> int:
    """Run the mujoco_sim until SIGINT/SIGTERM; see fpmd_ros.node_main for exit codes."""
    from fpmd_ros.node_main import run_node

    def make_node():
        from fpmd_ros.sim.node import make_node

        return make_node()

    return run_node(SIM_NODE_NAME, make_node, args=args)


if __name__ == '__main__':
    sys.exit(main())
