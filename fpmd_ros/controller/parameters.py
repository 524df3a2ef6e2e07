"""The policy_controller's parameter table: defaults, types, ranges and descriptions, declared
with descriptors so rclpy enforces types and ranges on every set (see the policy_controller
docstring for what each one does)."""

from __future__ import annotations

from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter

from fpmd_ros.controller.rules import MAX_RATE_HZ, SAFE_ACTIONS
from fpmd_ros.interface import OBSERVATION_MODES, TRIGGERS
from fpmd_ros.node_main import InvalidParameterError
from fpmd_ros.params import descriptor as _descriptor


class ControllerParameterError(InvalidParameterError):
    """A policy_controller parameter has an invalid value; the message names it and what is
    expected."""


_UNCONFIGURED_ONLY = 'changeable only while the node is unconfigured (read by configure)'

# name -> (default, descriptor). A Parameter.Type default declares the parameter unset.
PARAMETERS = {
    'policy': ('', _descriptor(
        'Path of the exported policy: .onnx (onnxruntime, the deploy path) or a .pt training '
        'checkpoint (torch).', ParameterType.PARAMETER_STRING,
        constraints='an existing .onnx or .pt file; ' + _UNCONFIGURED_ONLY)),
    'observation_mode': ('observation', _descriptor(
        'Input: observation (std_msgs/Float32MultiArray on "observation"), joint_states '
        '(sensor_msgs/JointState on "joint_states", mapped by joint name) or image '
        '(sensor_msgs/Image rgb8 on "image_raw", frame-stacked as in training; pixel policies '
        'only, and pixel policies only with image).', ParameterType.PARAMETER_STRING,
        constraints='one of: ' + ', '.join(OBSERVATION_MODES) + '; ' + _UNCONFIGURED_ONLY)),
    'control_rate_hz': (0.0, _descriptor(
        'Control loop rate; 0 = the model\'s rate (1 / control_period_s). Must not be below the '
        'model\'s rate.', ParameterType.PARAMETER_DOUBLE, float_range=(0.0, MAX_RATE_HZ),
        constraints=f'0, or 1..{MAX_RATE_HZ:g} and >= the model rate')),
    'state_timeout_s': (0.2, _descriptor(
        'Input older than this (steady clock, from its arrival) is stale: the safe action is '
        'published.', ParameterType.PARAMETER_DOUBLE, float_range=(0.001, 60.0))),
    'safe_action': ('zero', _descriptor(
        'Action on stale, malformed or failing input: zero (zeros clipped into the action '
        'bounds; for a position-controlled robot policy its default pose), hold (the last '
        'published command) or default (default_action).',
        ParameterType.PARAMETER_STRING, constraints='one of: ' + ', '.join(SAFE_ACTIONS))),
    'default_action': (Parameter.Type.DOUBLE_ARRAY, _descriptor(
        'The safe action for safe_action=default, in env units, one value per actuator; '
        'checked against the model whenever it is set.',
        ParameterType.PARAMETER_DOUBLE_ARRAY,
        constraints='act_dim finite values inside the action bounds')),
    'max_action_delta': (0.0, _descriptor(
        'Largest change of any action component per control tick (env units); 0 = no rate '
        'limit. Not applied to the safe action.', ParameterType.PARAMETER_DOUBLE,
        float_range=(0.0, 1.0e6))),
    'joint_names': (Parameter.Type.STRING_ARRAY, _descriptor(
        'joint_states mode: joints whose positions then velocities form the observation, in '
        'order. Unset: the model\'s joint_names.', ParameterType.PARAMETER_STRING_ARRAY,
        constraints='unique non-empty names; ' + _UNCONFIGURED_ONLY)),
    'exclude_joint_positions': (Parameter.Type.STRING_ARRAY, _descriptor(
        'joint_states mode: joints of joint_names whose position is not part of the '
        'observation (e.g. [rootx] for HalfCheetah/Hopper/Walker2d). Unset: none.',
        ParameterType.PARAMETER_STRING_ARRAY,
        constraints='a subset of joint_names; ' + _UNCONFIGURED_ONLY)),
    'task_file': ('', _descriptor(
        'joint_states mode with a robot policy whose observation has site terms (e.g. '
        'goal_offset): the task file for forward kinematics. Empty: the path in the policy\'s '
        'metadata, else that file looked up as sim/<name>.yaml (working directory, checkout, '
        'installed package). Its sha256 and its model\'s must equal the metadata\'s.',
        ParameterType.PARAMETER_STRING,
        constraints='the task file the policy was trained on; ' + _UNCONFIGURED_ONLY)),
    'command_timeout_s': (0.5, _descriptor(
        'joint_states mode with a velocity-command robot policy: a cmd_vel older than this '
        '(steady clock, from its arrival) gives a zero velocity command.',
        ParameterType.PARAMETER_DOUBLE, float_range=(0.001, 60.0),
        constraints=_UNCONFIGURED_ONLY)),
    'expected_task': ('', _descriptor(
        'If not empty, the model\'s task must equal it (e.g. Hopper-v5).',
        ParameterType.PARAMETER_STRING, constraints=_UNCONFIGURED_ONLY)),
    'inference_threads': (1, _descriptor(
        'Intra-op threads of onnxruntime (or torch for a checkpoint).',
        ParameterType.PARAMETER_INTEGER, int_range=(1, 64), constraints=_UNCONFIGURED_ONLY)),
    'trigger': ('timer', _descriptor(
        'When a control step runs: timer (every control_rate_hz tick) or observation (on each '
        'input message; the timer then only publishes the safe action for missing or stale '
        'input).', ParameterType.PARAMETER_STRING,
        constraints='one of: ' + ', '.join(TRIGGERS) + '; ' + _UNCONFIGURED_ONLY)),
    'autostart': (False, _descriptor(
        'main() configures and activates the node right away (no lifecycle manager needed).',
        ParameterType.PARAMETER_BOOL, read_only=True)),
}
CONFIGURE_PARAMETERS = frozenset({'policy', 'observation_mode', 'joint_names',
                                  'exclude_joint_positions', 'expected_task',
                                  'inference_threads', 'trigger', 'task_file',
                                  'command_timeout_s'})
