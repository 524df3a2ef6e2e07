"""Names and choices of the ROS interface, defined once for the nodes, the graphs and the runner.

Kept free of rclpy, torch and MuJoCo imports so that launch files can read it cheaply.
"""

from __future__ import annotations

PACKAGE = 'fpmd_ros'

SIM_NODE_NAME = 'mujoco_sim'
TRAINER_NODE_NAME = 'trainer'
CONTROLLER_NODE_NAME = 'policy_controller'

# policy_controller: where the observation comes from, and what starts a control step.
OBSERVATION_MODES = ('observation', 'joint_states', 'image')
TRIGGERS = ('timer', 'observation')

# Robot task files: the topic of each command kind (mujoco_sim publishes the command in force on
# ``~/<topic>`` and takes overrides on ``<topic>``; policy_controller follows ``<topic>``).
ROBOT_COMMAND_TOPICS = {'goal_position': 'goal', 'velocity': 'cmd_vel'}


def builds_robot_observation(observation_mode: str, meta: dict) -> bool:
    """Whether policy_controller builds the observation from a robot's topics (joint_states,
    imu, goal / cmd_vel) as the policy's metadata describes it: a robot policy in joint_states
    mode."""
    return observation_mode == 'joint_states' and bool(meta.get('robot'))


def model_rate_hz(meta: dict) -> float:
    """The control rate a policy was trained at: 1 / its metadata's ``control_period_s``."""
    return 1.0 / float(meta['control_period_s'])


# Process exit codes shared by the nodes, the runner and the rehearsal (scripts see them from
# `ros2 launch` and from `python -m fpmd_ros.runner` alike).
EXIT_OK = 0
EXIT_ERROR = 1  # unexpected error
EXIT_INVALID_PARAMETERS = 2  # a parameter, config or file is invalid: a respawn cannot help
EXIT_INTERRUPTED = 130  # stopped by a signal before its work was safely written (128 + SIGINT)
