"""Run an exported policy: ``ros2 launch fpmd_ros deploy.launch.py policy:=<file> [sim:=true]``.

The ``policy_controller`` lifecycle node, configured and then activated once, on start (with
``sim:=true`` also a realtime ``mujoco_sim`` of the policy's task wired to it); if that configure
fails, the launch ends with the reason (and returns non-zero). When the controller exits, the
launch ends too (non-zero unless the controller stopped cleanly). Later transitions are the user's
(``ros2 lifecycle set ...``): the launch does not re-activate the node. Thin over
:mod:`fpmd_ros.graph`, which holds the nodes, parameters, remappings, argument table and the
start-up rule (``python -m fpmd_ros.runner deploy`` runs the same graph without the ROS 2 CLI).
"""

import functools

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown, matches_action
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from fpmd_ros.graph import (
    DEPLOY_ARGUMENTS,
    configure_outcome,
    deploy_graph,
    ending_node_shutdown_reason,
    launch_arguments,
)


def _after_configure(context, node, name):
    # Raises GraphError unless configuring reached 'inactive': the launch service then logs it,
    # shuts down with it as the reason and returns 1.
    configure_outcome(name, context.locals.event.goal_state)
    return [EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                        transition_id=Transition.TRANSITION_ACTIVATE))]


def _on_ending_node_exit(spec, event, context):
    # A failure raises GraphError here: the launch service logs it, shuts down with it as the
    # reason and returns 1 (it has no other way to return non-zero).
    reason = ending_node_shutdown_reason(spec, event.returncode, context.is_shutdown)
    return [] if reason is None else [EmitEvent(event=Shutdown(reason=reason))]


def _nodes(context, *args, **kwargs):
    values = launch_arguments(context.launch_configurations, DEPLOY_ARGUMENTS)
    actions = []
    for spec in deploy_graph(values):
        if spec.lifecycle:
            node = LifecycleNode(**spec.launch_kwargs(), output='screen')
            actions += _configured_on_start(node, spec.fully_qualified_name)
        else:
            node = Node(**spec.launch_kwargs(), output='screen')
            actions.append(node)
        if spec.ends_launch:
            actions.append(RegisterEventHandler(OnProcessExit(
                target_action=node, on_exit=functools.partial(_on_ending_node_exit, spec))))
    return actions


def _configured_on_start(node, name):
    """[handler, node, configure]: configure on start; the first configure's outcome activates
    the node or ends the launch. handle_once: a later deactivate -> cleanup -> configure by the
    user must not be followed by an activation the user did not ask for."""
    after_configure = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state='configuring', handle_once=True,
        entities=[OpaqueFunction(function=_after_configure, args=[node, name])]))
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    return [after_configure, node, configure]


def generate_launch_description():
    return LaunchDescription([
        *[DeclareLaunchArgument(row.name, default_value=row.default,
                                description=row.description) for row in DEPLOY_ARGUMENTS],
        OpaqueFunction(function=_nodes),
    ])
