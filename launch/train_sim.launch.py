"""Train a policy against MuJoCo sim nodes: ``ros2 launch fpmd_ros train_sim.launch.py``.

N lockstep ``mujoco_sim`` nodes (namespaces ``env_0`` ... ``env_{N-1}``) and one ``trainer``; the
launch ends when the trainer exits, and returns non-zero when the trainer failed. Thin over
:mod:`fpmd_ros.graph`, which holds the nodes, parameters, argument table and the rules applied
while the graph runs (``python -m fpmd_ros.runner train_sim`` runs the same graph without the
ROS 2 CLI). ``ros2 launch fpmd_ros train_sim.launch.py --show-args`` lists the arguments.
"""

import functools

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch_ros.actions import Node

from fpmd_ros.graph import (
    TRAIN_SIM_ARGUMENTS,
    ending_node_shutdown_reason,
    launch_arguments,
    train_sim_graph,
)


def _on_ending_node_exit(spec, event, context):
    # A failure raises GraphError here: the launch service logs it, shuts down with it as the
    # reason and returns 1 (it has no other way to return non-zero).
    reason = ending_node_shutdown_reason(spec, event.returncode, context.is_shutdown)
    return [] if reason is None else [EmitEvent(event=Shutdown(reason=reason))]


def _nodes(context, *args, **kwargs):
    values = launch_arguments(context.launch_configurations, TRAIN_SIM_ARGUMENTS)
    actions = []
    for spec in train_sim_graph(values):
        node = Node(**spec.launch_kwargs(), output='screen')
        actions.append(node)
        if spec.ends_launch:
            actions.append(RegisterEventHandler(OnProcessExit(
                target_action=node, on_exit=functools.partial(_on_ending_node_exit, spec))))
    return actions


def generate_launch_description():
    return LaunchDescription([
        *[DeclareLaunchArgument(row.name, default_value=row.default,
                                description=row.description) for row in TRAIN_SIM_ARGUMENTS],
        OpaqueFunction(function=_nodes),
    ])
