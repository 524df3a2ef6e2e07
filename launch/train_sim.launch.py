"""Train a policy against MuJoCo sim nodes: ``ros2 launch fpmd_ros train_sim.launch.py``.

N lockstep ``mujoco_sim`` nodes (namespaces ``env_0`` ... ``env_{N-1}``) and one ``trainer``; the
launch ends when the trainer exits. Thin over :func:`fpmd_ros.graph.train_sim_graph`, which
holds the nodes, parameters and argument table (``python -m fpmd_ros.runner train_sim`` runs the
same graph without the ROS 2 CLI). ``ros2 launch fpmd_ros train_sim.launch.py --show-args``
lists the arguments.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fpmd_ros.graph import TRAIN_SIM_ARGUMENTS, train_sim_graph


def _nodes(context, *args, **kwargs):
    values = {row.name: LaunchConfiguration(row.name).perform(context)
              for row in TRAIN_SIM_ARGUMENTS}
    actions = []
    for spec in train_sim_graph(values):
        node = Node(**spec.launch_kwargs(), output='screen')
        actions.append(node)
        if spec.ends_launch:
            actions.append(RegisterEventHandler(OnProcessExit(
                target_action=node,
                on_exit=[EmitEvent(event=Shutdown(reason=f'{spec.name} exited'))])))
    return actions


def generate_launch_description():
    return LaunchDescription([
        *[DeclareLaunchArgument(row.name, default_value=row.default,
                                description=row.description) for row in TRAIN_SIM_ARGUMENTS],
        OpaqueFunction(function=_nodes),
    ])
