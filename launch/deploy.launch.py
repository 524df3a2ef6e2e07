"""Run an exported policy: ``ros2 launch fpmd_ros deploy.launch.py policy:=<file> [sim:=true]``.

The ``policy_controller`` lifecycle node, configured and then activated on start (with
``sim:=true`` also a realtime ``mujoco_sim`` of the policy's task wired to it). Thin over
:func:`fpmd_ros.graph.deploy_graph`, which holds the nodes, parameters, remappings and argument
table (``python -m fpmd_ros.runner deploy`` runs the same graph without the ROS 2 CLI).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from fpmd_ros.graph import DEPLOY_ARGUMENTS, deploy_graph


def _nodes(context, *args, **kwargs):
    values = {row.name: LaunchConfiguration(row.name).perform(context)
              for row in DEPLOY_ARGUMENTS}
    actions = []
    for spec in deploy_graph(values):
        if not spec.lifecycle:
            actions.append(Node(**spec.launch_kwargs(), output='screen'))
            continue
        node = LifecycleNode(**spec.launch_kwargs(), output='screen')
        # configure on start; activate as soon as configuring reached 'inactive'
        activate = RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
            entities=[EmitEvent(event=ChangeState(
                lifecycle_node_matcher=matches_action(node),
                transition_id=Transition.TRANSITION_ACTIVATE))]))
        configure = EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(node),
            transition_id=Transition.TRANSITION_CONFIGURE))
        actions += [activate, node, configure]
    return actions


def generate_launch_description():
    return LaunchDescription([
        *[DeclareLaunchArgument(row.name, default_value=row.default,
                                description=row.description) for row in DEPLOY_ARGUMENTS],
        OpaqueFunction(function=_nodes),
    ])
