"""Entry point of the ``policy_controller`` console script and of ``python -m
fpmd_ros.controller_node``; the node itself is the :mod:`fpmd_ros.controller` package.

Kept light on purpose: nothing heavy (rclpy, torch, onnxruntime) is imported before
:func:`fpmd_ros.node_main.run_node` has installed its signal handlers, so a Ctrl-C at any moment
of the start exits 0 instead of killing the process with SIGINT.

The controller's public names (``PolicyController``, ``PARAMETERS``, ``DIAGNOSTICS_QOS``, ...)
stay importable from here for existing callers; they are loaded on first access.
"""

from __future__ import annotations

import sys

from fpmd_ros.interface import CONTROLLER_NODE_NAME

# name -> the module of fpmd_ros that defines it
_MOVED = {
    'PolicyController': 'controller.node', 'DIAGNOSTICS_PERIOD_S': 'controller.node',
    'autostart': 'controller.node',
    'PARAMETERS': 'controller.parameters', 'CONFIGURE_PARAMETERS': 'controller.parameters',
    'ControllerParameterError': 'controller.parameters',
    'ConfigureError': 'controller.rules', 'check_parameter': 'controller.rules',
    'check_default_action': 'controller.rules', 'resolve_rate': 'controller.rules',
    'clip_to_bounds': 'controller.rules', 'safe_action': 'controller.rules',
    'rate_limit': 'controller.rules', 'SAFE_ACTIONS': 'controller.rules',
    'MAX_RATE_HZ': 'controller.rules',
    'Safety': 'controller.safety', 'SafetyMonitor': 'controller.safety',
    'JointObservationMap': 'controller.inputs', 'make_input': 'controller.inputs',
    'load_checked_policy': 'controller.policy',
    'INPUT_QOS': 'qos', 'COMMAND_QOS': 'qos', 'ACTION_QOS': 'qos', 'DIAGNOSTICS_QOS': 'qos',
}
NODE_NAME = CONTROLLER_NODE_NAME


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    import importlib

    return getattr(importlib.import_module(f'fpmd_ros.{_MOVED[name]}'), name)


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
