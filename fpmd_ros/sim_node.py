"""Entry point of the ``mujoco_sim`` console script and of ``python -m fpmd_ros.sim_node``; the
node itself is the :mod:`fpmd_ros.sim` package (its docstring describes the node).

Kept light on purpose: nothing heavy (rclpy, MuJoCo, torch) is imported before
:func:`fpmd_ros.node_main.run_node` has installed its signal handlers, so a Ctrl-C at any moment
of the start exits 0 instead of killing the process with SIGINT.

The sim's public names (``MujocoSimNode``, ``SimParameterError``, the QoS profiles, ...) stay
importable from here for existing callers; they are loaded on first access.
"""

from __future__ import annotations

import sys

from fpmd_ros.interface import SIM_NODE_NAME

# name -> the module of fpmd_ros that defines it
_MOVED = {
    'MujocoSimNode': 'sim.node', 'SimParameterError': 'sim.node', 'PARAMETERS': 'sim.node',
    'MODES': 'sim.node', 'check_parameter': 'sim.node', 'resolve_camera': 'sim.node',
    'make_node': 'sim.node',
    'Episodes': 'sim.episodes',
    'LOCKSTEP_QOS': 'qos', 'REALTIME_COMMAND_QOS': 'qos', 'EPISODE_QOS': 'qos',
    'EPISODE_START_QOS': 'qos', 'STATE_QOS': 'qos', 'CLOCK_QOS': 'qos',
    'CAMERA_REALTIME_QOS': 'qos',
}
NODE_NAME = SIM_NODE_NAME


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    import importlib

    return getattr(importlib.import_module(f'fpmd_ros.{_MOVED[name]}'), name)


def main(args=None) -> int:
    """Run the mujoco_sim until SIGINT/SIGTERM; see fpmd_ros.node_main for exit codes."""
    from fpmd_ros.node_main import run_node

    def make_node():
        from fpmd_ros.sim.node import make_node

        return make_node()

    return run_node(SIM_NODE_NAME, make_node, args=args)


if __name__ == '__main__':
    sys.exit(main())
