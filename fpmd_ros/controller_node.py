"""``policy_controller``: an exported policy driving a robot through ROS 2 topics (lifecycle node).

A thin adapter (see docs/ROS_INTERFACE.md, section policy_controller): everything about the
policy (observation normalisation, the one-step flow sampler, scaling to the action bounds) is
inside the model run by :func:`fpmd_core.runtime.load_policy`; this node only checks the model
against its parameters, moves numbers between messages and the model (:mod:`fpmd_ros.messages`)
and keeps the robot safe when its input is stale or wrong.

Lifecycle
    unconfigured --configure--> inactive: load the policy (``.onnx`` with onnxruntime, or a
        ``.pt`` training checkpoint with torch), check its metadata against the parameters
        (observation size or image shape and observation mode, action bounds and actuators,
        joint names, control rate, task), warm it up, create the topics. Any problem ->
        FAILURE with one logged line naming the parameter or file and what was expected (also
        kept in :attr:`PolicyController.failure_reason`).
    inactive --activate--> active: start the control timer (steady clock) at ``control_rate_hz``
        (with ``trigger`` = ``observation``: the staleness watchdog, see below).
    active --deactivate--> inactive: publish the safe action once, stop the timer.
    cleanup / shutdown / error: release the policy, timers and topics (a shutdown from active
        publishes the safe action first).

Parameters (those marked [unconfigured] may only change while the node is unconfigured: they
are read by configure; a change at any other time is refused with that reason)
    ``policy`` (str) [unconfigured]            path of the .onnx policy or .pt checkpoint.
    ``observation_mode`` (str) [unconfigured]  ``observation`` | ``joint_states`` | ``image``.
        ``image`` needs a pixel policy (metadata ``obs_shape`` [H, W, 3k]) and a pixel policy
        needs ``image``: configure fails otherwise, naming the parameter and the expected value.
    ``control_rate_hz`` (0 or 1..2000)          0 = the model's rate (1 / control_period_s). A rate
        below the model's is refused (each action would be held longer than in training); a
        faster one is allowed (fresher state; the plant still holds each command).
    ``state_timeout_s`` (0.001..60, 0.2)       input older than this (steady clock, from its
        arrival) is stale. 0.2 s leaves room for scheduling jitter on a busy host at the 20-125
        Hz rates of the MuJoCo tasks; lower it for fast real robots.
    ``safe_action`` (str, ``zero``)            ``zero`` | ``hold`` | ``default``. ``zero`` by
        default: the tasks' actuators are motors (torques), where holding a command keeps
        pushing, and mujoco_sim zeroes the controls on its own command timeout too.
    ``default_action`` (double[], env units)   the ``default`` safe action, one value per
        actuator, inside the action bounds. Unset by default.
    ``max_action_delta`` (0..1e6, env units)   largest change of any action component per tick;
        0 = no rate limit. It applies to policy actions, never to the safe action.
    ``joint_names`` (str[]) [unconfigured]     joint_states mode: the joints whose positions and
        velocities form the observation (mapping below). Unset: the model's ``joint_names``.
    ``exclude_joint_positions`` (str[]) [unconfigured]  joint_states mode: joints (from
        ``joint_names``) whose position is left out, e.g. ``[rootx]`` for Gymnasium's
        HalfCheetah/Hopper/Walker2d, whose observation omits the x position. Unset: none.
    ``expected_task`` (str) [unconfigured]     if set, the model's task must equal it.
    ``inference_threads`` (int 1..64) [unconfigured]  onnxruntime / torch intra-op threads.
    ``trigger`` (str, ``timer``) [unconfigured]  when a control step runs (see below):
        ``timer`` (each tick of the control timer) or ``observation`` (on each input message).
    ``autostart`` (bool, read-only, false)     ``main()`` configures and activates the node at
        once (for runs without a lifecycle manager or launch file).
    Defaults not given above: ``policy`` '', ``observation_mode`` observation,
    ``control_rate_hz`` 0, ``max_action_delta`` 0, ``expected_task`` '', ``inference_threads`` 1,
    ``trigger`` timer.
    Unset array parameters are left out (an empty list would be typed as a byte array by rclpy).

Observation from ``joint_states`` (sensor_msgs/JointState), mapped by name
    observation = [position of each joint in ``joint_names`` minus ``exclude_joint_positions``,
    in that order] + [velocity of each joint in ``joint_names``, in that order]. The message's
    own order does not matter and extra joints are ignored; a missing joint, a short array or a
    NaN/Inf in a used value makes the message malformed. Configure checks that the resulting size
    equals the model's ``obs_dim``; joint names that differ from the model's are allowed (a real
    robot may name its joints differently) and are logged as a warning with the correspondence.
    This matches tasks whose observation is joint positions then velocities (Gymnasium
    InvertedPendulum; HalfCheetah, Hopper, Walker2d with ``exclude_joint_positions: [rootx]``;
    not Ant/Humanoid, nor dm_control tasks with sin/cos or body terms); for those use
    ``observation`` mode.

Observation from ``image_raw`` (sensor_msgs/Image), pixel policies
    Each frame must be ``rgb8`` with the model's H x W (metadata ``obs_shape``), ``step`` >= 3 W
    (padded rows are cropped) and ``step`` x H bytes of data; anything else (another encoding
    such as ``bgr8``, another size, a short step, empty or short data) makes it malformed. The
    observation is the last k = ``frame_stack`` good frames stacked on the channel axis, oldest
    first, by :class:`fpmd_core.frames.FrameStack`, the training env's own frame stack. Every
    new message that a control step sees is decoded and pushed once: with ``trigger`` =
    ``observation`` that is every image (run the camera at the model's rate, which includes its
    ``action_repeat``: consecutive training frames are one control period apart); with the
    timer, the newest image at each tick (a tick without a new image reuses the last result and
    pushes nothing). A malformed frame never enters the stack. The first frame, and the first
    after a gap longer than ``state_timeout_s`` since the previous good one (stale input, a long
    run of malformed frames, deactivation), refills all k slots as the training env does at a
    reset. The policy gets the raw uint8 stack: the scaling (/255 - 0.5) and the convolutional
    encoder are inside the ONNX graph.

Topics (relative names, so the node can live in a namespace; remap ``commands`` to a
ros2_control ``forward_command_controller``'s ``~/commands``)
    sub ``observation`` (std_msgs/Float32MultiArray), ``joint_states`` (sensor_msgs/JointState) or
        ``image_raw`` (sensor_msgs/Image; remap it to the camera's topic, e.g.
        ``image_raw:=camera/image_raw`` for mujoco_sim) by mode: sensor-data QoS (BEST_EFFORT,
        KEEP_LAST 1; matches reliable and best-effort publishers). The callback only caches the
        newest message and its steady-clock arrival time; every check happens in the control tick.
        An ``observation`` message may carry a labelled layout, which must then equal the model's
        ``obs_terms`` (no layout or unlabelled segments: only the size is checked).
    pub ``commands`` (std_msgs/Float64MultiArray, RELIABLE, KEEP_LAST 1, VOLATILE): the action in
        env units, actuator order, one layout segment labelled ``action``.
    pub ``~/action`` (sensor_msgs/JointState, RELIABLE, KEEP_LAST 10): the same command stamped
        with the node clock at the tick, names = the model's actuator names, position = command;
        only built and published while someone subscribes (it is for recording).
    pub ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, ~1 Hz, while configured): achieved
        rate, inference latency p50/p99, input age and topic, safety state and reason, model
        hash; in image mode also the image size, frame_stack, frames stacked and stack refills.
        Level: ERROR while the input is stale/malformed or inference fails; WARN while waiting
        for the first input, after a recovered trouble within the last period, or below 80 % of
        the target rate; OK otherwise (and while inactive).

Each control step
    1. input freshness (``state_timeout_s``); 2. the observation from the newest message (size /
    layout / joint names / NaN-Inf checked; images: encoding / size / step / data checked, then
    stacked); 3. one inference (only when a new message has arrived since the last one;
    otherwise the previous result is reused); 4. clip to the action bounds; 5. rate limit
    against the last published command; 6. publish.

When a control step runs (``trigger``)
    ``timer`` (default): on every tick of the steady-clock control timer, whether or not a new
        input has arrived; the loop runs at ``control_rate_hz`` independently of the sensor.
        Not synchronised with the plant, it adds 0..1 control period of delay between an
        observation and the command computed from it (the plant holds the previous command
        meanwhile), and when the plant steps at the same rate the phase between the two clocks
        decides, step by step, whether a command is one period late.
    ``observation``: on the arrival of every input message (``observation``, ``joint_states`` or
        ``image_raw``), so the command for state x_t is published about one inference after x_t
        arrives: the plant (a sampled-data system such as mujoco_sim in realtime mode or a
        ros2_control loop publishing joint_states) gets the command for its newest state before its
        next step, as in training. The control timer is then a staleness watchdog: every message
        pushes its next tick back to ``state_timeout_s`` after that message, so while input flows
        it never fires; with no input yet, or once the newest input is stale, it ticks at
        ``control_rate_hz`` and each tick publishes the safe action, until a message arrives.
        The achieved rate is then the input rate. Use it when the sensor stream runs at (or
        near) the model's control rate; ``deploy`` runs it this way (see the README).
    No input yet, stale input, a malformed message, an inference exception or a non-finite result
    publishes the safe action instead: ``zero`` (zeros, clipped into the bounds), ``hold`` (the
    last published command; zero if none yet) or ``default`` (``default_action``). Entering and
    leaving trouble is logged once (throttled); diagnostics go to ERROR while in trouble. A
    command is never NaN: a non-finite value anywhere falls back to zero.

Exit
    ``main()`` handles SIGINT/SIGTERM itself (rclpy's handlers would shut the context down first)
    so that an active node publishes the safe action before it exits: a forward_command_controller
    would otherwise hold the last command forever.
"""

from __future__ import annotations

import collections
import enum
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import (
    ParameterType,
    SetParametersResult,
)
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray, Float64MultiArray

from fpmd_ros import messages
from fpmd_ros.interface import OBSERVATION_MODES, TRIGGERS, model_rate_hz
from fpmd_ros.params import declare_all
from fpmd_ros.params import descriptor as _descriptor

NODE_NAME = 'policy_controller'
SAFE_ACTIONS = ('zero', 'hold', 'default')
MAX_RATE_HZ = 2000.0
RATE_TOLERANCE = 0.01  # a control rate up to 1 % below the model's still counts as the same
WARMUP_INFERENCES = 10
DIAGNOSTICS_PERIOD_S = 1.0
LATENCY_WINDOW = 2000  # inference latencies kept for the p50/p99 in diagnostics
LOW_RATE_FRACTION = 0.8  # achieved rate below this fraction of the target -> WARN
LOG_THROTTLE_S = 1.0

# --- QoS ------------------------------------------------------------------------------------------
# Sensor input: only the newest message matters. BEST_EFFORT matches reliable and best-effort
# writers alike (mujoco_sim offers RELIABLE) and never waits for retransmissions; depth 1.
INPUT_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
# Commands: the forward_command_controller contract. RELIABLE so a reliable reader (ros2_control
# subscribes with system-default QoS) matches; KEEP_LAST 1 so a slow reader never blocks the loop
# and never receives an outdated command after a newer one.
COMMAND_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# ~/action is for recording (rosbag): reliable with a little buffer.
ACTION_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                        reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
DIAGNOSTICS_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)

# diagnostic_msgs/DiagnosticStatus levels
OK, WARN, ERROR = 0, 1, 2


class ControllerParameterError(ValueError):
    """A policy_controller parameter has an invalid value; the message names it and what is
    expected."""


class ConfigureError(ValueError):
    """Configure cannot succeed; the message is the reason logged and returned."""


# --- parameters -----------------------------------------------------------------------------------



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
        'bounds), hold (the last published command) or default (default_action).',
        ParameterType.PARAMETER_STRING, constraints='one of: ' + ', '.join(SAFE_ACTIONS))),
    'default_action': (Parameter.Type.DOUBLE_ARRAY, _descriptor(
        'The safe action for safe_action=default, in env units, one value per actuator.',
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
                                  'inference_threads', 'trigger'})


def check_parameter(name: str, value) -> str | None:
    """Why ``value`` is invalid for ``name`` on its own (None if valid). Types and ranges are
    enforced by the descriptors; checks against the model are in :func:`check_against_model`."""
    if name == 'observation_mode' and value not in OBSERVATION_MODES:
        return (f"parameter 'observation_mode' is {value!r}; expected one of: "
                f"{', '.join(OBSERVATION_MODES)}")
    if name == 'trigger' and value not in TRIGGERS:
        return f"parameter 'trigger' is {value!r}; expected one of: {', '.join(TRIGGERS)}"
    if name == 'safe_action' and value not in SAFE_ACTIONS:
        return f"parameter 'safe_action' is {value!r}; expected one of: {', '.join(SAFE_ACTIONS)}"
    if name == 'control_rate_hz' and value is not None and 0.0 < value < 1.0:
        return (f"parameter 'control_rate_hz' is {value}; expected 0 (the model's rate) or "
                f"1..{MAX_RATE_HZ:g} Hz")
    if name == 'default_action' and value is not None:
        values = np.asarray(value, dtype=np.float64)
        if values.size and not np.all(np.isfinite(values)):
            return f"parameter 'default_action' is {list(value)}; expected finite values"
    if name in ('joint_names', 'exclude_joint_positions') and value is not None:
        names = list(value)
        if any(not str(n).strip() for n in names):
            return f"parameter {name!r} has an empty joint name; expected non-empty names"
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            return f"parameter {name!r} repeats {', '.join(duplicates)}; expected unique names"
    return None


def resolve_rate(control_rate_hz: float, meta: dict) -> float:
    """The control rate to run at (0 -> the model's), or ConfigureError if incompatible."""
    model_rate = model_rate_hz(meta)
    rate = float(control_rate_hz) or model_rate
    if rate < model_rate * (1.0 - RATE_TOLERANCE):
        raise ConfigureError(
            f"parameter 'control_rate_hz' is {rate:g} Hz but the model was trained at "
            f"{model_rate:g} Hz (control_period_s {meta['control_period_s']:g}); expected 0 "
            f"(= the model's rate) or a rate >= {model_rate:g} Hz: a slower loop would hold "
            'each action longer than in training')
    if rate > MAX_RATE_HZ:
        raise ConfigureError(f"the model's control rate {rate:g} Hz exceeds {MAX_RATE_HZ:g} Hz; "
                             "set 'control_rate_hz' explicitly")
    return rate


def check_default_action(default_action, meta: dict) -> np.ndarray:
    """``default_action`` as an array that fits the model, or ConfigureError."""
    act_dim = meta['act_dim']
    if default_action is None or len(default_action) == 0:
        raise ConfigureError(
            "parameter 'safe_action' is 'default' but 'default_action' is not set; expected "
            f"{act_dim} values (one per actuator: {', '.join(meta['actuator_names'])})")
    values = np.asarray(default_action, dtype=np.float64)
    if values.size != act_dim:
        raise ConfigureError(
            f"parameter 'default_action' has {values.size} values; expected {act_dim} (one per "
            f"actuator: {', '.join(meta['actuator_names'])})")
    if not np.all(np.isfinite(values)):
        raise ConfigureError(f"parameter 'default_action' is {values.tolist()}; expected finite "
                             'values')
    low, high = np.asarray(meta['action_low']), np.asarray(meta['action_high'])
    outside = np.flatnonzero((values < low) | (values > high))
    if outside.size:
        i = int(outside[0])
        raise ConfigureError(
            f"parameter 'default_action'[{i}] is {values[i]:g}, outside the action bounds "
            f"[{low[i]:g}, {high[i]:g}] of actuator {meta['actuator_names'][i]!r}")
    return values


# --- pure helpers: safe action, rate limit, joint mapping, safety state ---------------------------

def clip_to_bounds(action, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    # minimum/maximum rather than np.clip: a few µs less per control step, same result.
    return np.minimum(np.maximum(np.asarray(action, dtype=np.float64), low), high)


def safe_action(kind: str, low: np.ndarray, high: np.ndarray, last: np.ndarray | None,
                default: np.ndarray | None) -> np.ndarray:
    """The safe action of ``kind`` (``zero`` | ``hold`` | ``default``), inside the bounds.

    ``hold`` without a previous command, and ``default`` without a default, give zero."""
    if kind == 'hold' and last is not None:
        action = last
    elif kind == 'default' and default is not None:
        action = default
    else:
        action = np.zeros_like(low)
    action = clip_to_bounds(action, low, high)
    return action if np.all(np.isfinite(action)) else clip_to_bounds(np.zeros_like(low), low, high)


def rate_limit(target: np.ndarray, previous: np.ndarray | None, max_delta: float) -> np.ndarray:
    """``target`` moved at most ``max_delta`` per component away from ``previous`` (0: no
    limit; no previous command: no limit)."""
    if max_delta <= 0.0 or previous is None:
        return target
    return np.clip(target, previous - max_delta, previous + max_delta)


@dataclass(frozen=True)
class JointObservationMap:
    """How a JointState becomes the observation: positions of ``position_joints`` then
    velocities of ``joints`` (see the module docstring)."""

    joints: tuple[str, ...]
    position_joints: tuple[str, ...]

    @classmethod
    def from_parameters(cls, joint_names: Sequence[str] | None,
                        exclude_positions: Sequence[str] | None, meta: dict
                        ) -> JointObservationMap:
        """The mapping for the parameters and the model, or ConfigureError naming the
        mismatch."""
        joints = tuple(joint_names) if joint_names else tuple(meta['joint_names'])
        source = "parameter 'joint_names'" if joint_names else "the model's joint_names"
        if not joints:
            raise ConfigureError("joint_states mode needs joint names: parameter 'joint_names' "
                                 'is unset and the model has none')
        excluded = tuple(exclude_positions or ())
        unknown = [n for n in excluded if n not in joints]
        if unknown:
            raise ConfigureError(
                f"parameter 'exclude_joint_positions' names {', '.join(unknown)}, not in "
                f"{source} ({', '.join(joints)})")
        mapping = cls(joints, tuple(n for n in joints if n not in excluded))
        obs_dim = meta['obs_dim']
        if mapping.size != obs_dim:
            hint = ''
            if mapping.size == obs_dim + 1 and 'rootx' in joints and 'rootx' not in excluded:
                hint = "; Gymnasium locomotion tasks omit rootx: exclude_joint_positions: [rootx]"
            raise ConfigureError(
                f'joint_states mapping from {source} gives {mapping.size} values (positions of '
                f'{len(mapping.position_joints)} joints + velocities of {len(joints)}) but the '
                f"model's obs_dim is {obs_dim}; expected joint_names / exclude_joint_positions "
                f'that give {obs_dim} values{hint}')
        return mapping

    @property
    def size(self) -> int:
        return len(self.position_joints) + len(self.joints)

    def observation(self, msg: JointState) -> np.ndarray:
        return messages.joint_state_observation(msg, self.joints, self.position_joints)

    def differences(self, model_joints: Sequence[str]) -> list[str]:
        """'slot <- joint (model: name)' for each joint that differs from the model's."""
        model_joints = list(model_joints)
        notes = []
        for i, name in enumerate(self.joints):
            model = model_joints[i] if i < len(model_joints) else '?'
            if name != model:
                notes.append(f'{name!r} for the model\'s {model!r}')
        return notes


class Safety(enum.Enum):
    INACTIVE = 'inactive'
    WAITING = 'waiting'  # active, no input yet
    OK = 'ok'
    STALE = 'stale'
    MALFORMED = 'malformed'
    INFERENCE_ERROR = 'inference_error'

    @property
    def trouble(self) -> bool:
        return self in (Safety.STALE, Safety.MALFORMED, Safety.INFERENCE_ERROR)

    @property
    def level(self) -> int:
        if self.trouble:
            return ERROR
        return WARN if self is Safety.WAITING else OK


class SafetyMonitor:
    """The controller's safety state across ticks.

    ``update`` returns what to log, once per episode of trouble: ``('error', text)`` when
    trouble starts or changes kind, ``('info', text)`` when good input returns, else None.
    """

    def __init__(self) -> None:
        self.state = Safety.INACTIVE
        self.reason = ''
        self.since_ns = 0
        self.trouble_episodes = 0
        self.safe_ticks = 0  # in the current episode of trouble
        self.window_trouble: Safety | None = None  # worst trouble since the last reset_window()

    def reset(self, state: Safety = Safety.INACTIVE, now_ns: int = 0) -> None:
        self.state, self.reason, self.since_ns, self.safe_ticks = state, '', now_ns, 0

    def update(self, state: Safety, reason: str, now_ns: int) -> tuple[str, str] | None:
        previous = self.state
        self.reason = reason
        if state is not Safety.OK:
            self.safe_ticks += 1
        if state.trouble:
            self.window_trouble = state
        if state is previous:
            return None
        self.state, self.since_ns = state, now_ns
        if state.trouble:
            if not previous.trouble:
                self.trouble_episodes += 1
            return 'error', f'{state.value}: {reason}; publishing the safe action'
        if state is Safety.OK and previous.trouble:
            count, self.safe_ticks = self.safe_ticks, 0
            return 'info', f'input OK again after {previous.value} ({count} safe ticks)'
        if state is Safety.OK:
            self.safe_ticks = 0
        return None

    def reset_window(self) -> Safety | None:
        worst, self.window_trouble = self.window_trouble, None
        return worst


# --- inputs by observation mode ---------------------------------------------------------------

class _Input:
    """One observation source: its topic and type, and message -> observation (ValueError).

    ``observation`` is called once per new message, from the control step (never from the
    subscription callback), with the message's steady-clock arrival time and the current
    ``state_timeout_s`` in ns; stateless inputs ignore both."""

    topic: str
    msg_type: type

    def observation(self, msg, received_ns: int, state_timeout_ns: int) -> np.ndarray:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget what earlier messages left behind (on activate)."""

    def describe(self) -> str:
        raise NotImplementedError

    def diagnostic_values(self) -> dict:
        return {}


class _VectorInput(_Input):
    topic, msg_type = 'observation', Float32MultiArray

    def __init__(self, meta: dict):
        self.obs_dim = meta['obs_dim']
        self.obs_terms = [(str(name), int(size)) for name, size in meta['obs_terms']]

    def observation(self, msg, received_ns: int, state_timeout_ns: int) -> np.ndarray:
        return messages.decode_observation(msg, self.obs_dim, self.obs_terms)

    def describe(self) -> str:
        return f'obs {self.obs_dim}'


class _JointStateInput(_Input):
    topic, msg_type = 'joint_states', JointState

    def __init__(self, mapping: JointObservationMap):
        self.mapping = mapping

    def observation(self, msg, received_ns: int, state_timeout_ns: int) -> np.ndarray:
        return self.mapping.observation(msg)

    def describe(self) -> str:
        return f'obs {self.mapping.size}'


class _ImageInput(_Input):
    """Camera frames (sensor_msgs/Image, rgb8, the model's H x W) stacked as in training.

    Each new message that a control step sees is decoded and pushed into one
    :class:`fpmd_core.frames.FrameStack` (the training env's definition: oldest frame first,
    the newest in the last 3 channels); a message is never pushed twice, so ticks without a new
    image do not fill the stack with copies. A frame that fails to decode raises ValueError and
    does not enter the stack. When the previous good frame arrived more than
    ``state_timeout_s`` before this one (the first frame, after a stale gap or a long run of
    malformed frames, after activation), the stack is refilled with this frame, as the training
    env does at a reset: frames across a gap are not the consecutive steps the policy was
    trained on. The ONNX graph does the scaling (/255 - 0.5) and the encoder, so the stack goes
    to the policy as raw uint8."""

    topic, msg_type = 'image_raw', Image

    def __init__(self, meta: dict, shape: tuple[int, ...]):
        from fpmd_core.frames import FrameStack

        # fpmd_core.runtime.validate_metadata checked obs_dtype and that channels = 3 x frame_stack.
        self.height, self.width, _ = shape
        k = meta['frame_stack']
        self.frame_stack = k
        self._frames = FrameStack(k)
        self._last_good_ns: int | None = None
        self.frames_stacked = 0
        self.refills = 0

    def observation(self, msg, received_ns: int, state_timeout_ns: int) -> np.ndarray:
        frame = messages.decode_image(msg, self.height, self.width)
        if self._last_good_ns is None or received_ns - self._last_good_ns > state_timeout_ns:
            stack = self._frames.reset(frame)
            self.refills += 1
        else:
            stack = self._frames.push(frame)
        self._last_good_ns = received_ns
        self.frames_stacked += 1
        return stack

    def reset(self) -> None:
        self._last_good_ns = None

    def describe(self) -> str:
        return (f'obs {self.height}x{self.width}x{3 * self.frame_stack} '
                f'({self.frame_stack} stacked rgb8 frames)')

    def diagnostic_values(self) -> dict:
        return {'image_size': f'{self.width}x{self.height}', 'frame_stack': self.frame_stack,
                'frames_stacked': self.frames_stacked, 'frame_stack_refills': self.refills}


def make_input(mode: str, meta: dict, joint_names, exclude_positions) -> _Input:
    """The input for ``mode``, or ConfigureError when the mode does not fit the policy (a pixel
    policy needs ``image``; ``image`` needs a pixel policy)."""
    from fpmd_core.runtime import observation_shape

    shape = observation_shape(meta)
    pixels = len(shape) == 3
    if mode in ('observation', 'joint_states') and pixels:
        raise ConfigureError(
            f"parameter 'observation_mode' is {mode!r} but the policy takes camera frames "
            f"(obs_shape {list(shape)}, frame_stack {meta.get('frame_stack')}); expected "
            "'image'")
    if mode == 'observation':
        return _VectorInput(meta)
    if mode == 'joint_states':
        return _JointStateInput(JointObservationMap.from_parameters(
            joint_names, exclude_positions, meta))
    if mode == 'image':
        if not pixels:
            raise ConfigureError(
                "parameter 'observation_mode' is 'image' but the policy takes a state vector "
                f"(obs_shape {list(shape)}); expected 'observation' or 'joint_states' for this "
                'policy, or a pixel policy (trained with task.pixels) for image')
        return _ImageInput(meta, shape)
    raise ConfigureError(f"parameter 'observation_mode' is {mode!r}; expected one of: "
                         f"{', '.join(OBSERVATION_MODES)}")


def load_checked_policy(path: str, expected_task: str, threads: int):
    """The policy at ``path`` with metadata checked for use by this node, or ConfigureError."""
    from fpmd_core.runtime import PolicyError, load_policy

    if not path:
        raise ConfigureError("parameter 'policy' is empty; expected the path of an exported "
                             '.onnx policy or a .pt checkpoint')
    if Path(path).suffix not in ('.onnx', '.pt'):
        raise ConfigureError(f"parameter 'policy' is {path!r}; expected a .onnx or .pt file")
    if not Path(path).is_file():
        raise ConfigureError(f"parameter 'policy': {path}: file not found")
    expected = {'task': expected_task} if expected_task else None
    try:
        policy = load_policy(path, expected=expected, threads=threads)
    except PolicyError as error:
        prefix = "parameter 'expected_task': " if expected and ' task is ' in str(error) else ''
        raise ConfigureError(f'{prefix}{error}') from None
    except Exception as error:  # corrupt checkpoint (CheckpointError), unreadable file, ...
        raise ConfigureError(f"policy {path}: cannot be loaded ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''})") from None
    meta = policy.metadata
    low = np.asarray(meta['action_low'], dtype=np.float64)
    high = np.asarray(meta['action_high'], dtype=np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low <= high)):
        raise ConfigureError(f'policy {path}: action bounds {low.tolist()} .. {high.tolist()} '
                             'are not finite with low <= high')
    if len(meta['actuator_names']) != meta['act_dim']:
        raise ConfigureError(f"policy {path}: {len(meta['actuator_names'])} actuator names for "
                             f"act_dim {meta['act_dim']}")
    if not meta['control_period_s'] > 0:
        raise ConfigureError(f"policy {path}: control_period_s is {meta['control_period_s']}; "
                             'expected > 0')
    return policy


# --- the node ---------------------------------------------------------------------------------

class PolicyController(LifecycleNode):
    """The ``policy_controller`` lifecycle node; raises :class:`ControllerParameterError` for
    parameter overrides that are invalid on their own."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.failure_reason = ''  # why the last configure failed ('' after a success)
        self.policy = None
        self._release()
        try:
            self._declare()
        except BaseException:
            self.destroy_node()
            raise

    def _declare(self) -> None:
        values = declare_all(self, PARAMETERS, ControllerParameterError)
        for name, value in values.items():
            reason = check_parameter(name, value)
            if reason:
                raise ControllerParameterError(reason)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

    def _param(self, name: str):
        """A parameter's value (lists as lists; None for an unset array parameter)."""
        try:
            value = self.get_parameter(name).value
        except ParameterUninitializedException:
            return None
        if isinstance(value, (list, tuple)) or hasattr(value, 'tolist'):
            value = list(value)
        return value

    # --- state -----------------------------------------------------------------------------

    def _release(self) -> None:
        """Forget everything configure made (entities must already be destroyed)."""
        self.policy = None
        self.meta: dict = {}
        self._input: _Input | None = None
        self._subscription = None
        self._command_pub = None
        self._action_pub = None
        self._diagnostics_pub = None
        self._control_timer = None
        self._timer_period_ns = 0
        self._diagnostics_timer = None
        self.safety = SafetyMonitor()
        self.rate_hz = 0.0
        self.trigger = 'timer'
        self.last_command: np.ndarray | None = None
        self._latest_msg = None
        self._latest_ns = 0
        self._latest_seq = 0
        self._computed_seq = 0  # the input seq whose result is cached below
        self._computed: tuple[Safety, str, np.ndarray | None] = (Safety.WAITING, '', None)
        self._latencies_ns: collections.deque[int] = collections.deque(maxlen=LATENCY_WINDOW)
        self._window_ticks = 0
        self._window_start_ns = time.monotonic_ns()
        self._active_since_ns = 0
        self.commands_published = 0
        self.inferences = 0

    @property
    def lifecycle_state(self) -> str:
        """'unconfigured' | 'inactive' | 'active' | 'finalized' | a transition state."""
        return self._state_machine.current_state[1]

    def _destroy_entities(self) -> None:
        for timer in (self._control_timer, self._diagnostics_timer):
            if timer is not None:
                self.destroy_timer(timer)
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
        for pub in (self._command_pub, self._action_pub, self._diagnostics_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._release()

    # --- parameters at runtime -----------------------------------------------------------------

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        configured = self.policy is not None
        proposed = {name: self._param(name) for name in ('control_rate_hz', 'safe_action',
                                                         'default_action')}
        for parameter in parameters:
            value = parameter.value
            if isinstance(value, (list, tuple)) or hasattr(value, 'tolist'):
                value = list(value)
            if parameter.name in CONFIGURE_PARAMETERS and self.lifecycle_state != 'unconfigured':
                return SetParametersResult(successful=False, reason=(
                    f'parameter {parameter.name!r} can only change while the node is '
                    f'unconfigured (it is {self.lifecycle_state}); deactivate and clean up '
                    'first, then configure again'))
            reason = check_parameter(parameter.name, value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if parameter.name in proposed:
                proposed[parameter.name] = value
        if configured:
            try:
                resolve_rate(proposed['control_rate_hz'], self.meta)
                if proposed['safe_action'] == 'default':
                    check_default_action(proposed['default_action'], self.meta)
            except ConfigureError as error:
                return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, parameters) -> None:
        if self.policy is None:
            return
        for parameter in parameters:
            if parameter.name == 'control_rate_hz':
                self.rate_hz = resolve_rate(parameter.value, self.meta)
                if self._control_timer is not None:
                    self._set_timer_period(self._control_period_ns())
                self.get_logger().info(f'control rate {self.rate_hz:g} Hz')
            elif parameter.name in ('state_timeout_s', 'safe_action', 'default_action',
                                    'max_action_delta'):
                self._read_runtime_parameters()

    def _read_runtime_parameters(self) -> None:
        self.state_timeout_ns = int(self._param('state_timeout_s') * 1e9)
        self.safe_kind = self._param('safe_action')
        self.max_delta = float(self._param('max_action_delta'))
        default = self._param('default_action')
        self.default_action = (check_default_action(default, self.meta)
                               if self.safe_kind == 'default' else None)

    # --- lifecycle -------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as error:
            reason = (str(error) if isinstance(error, ConfigureError)
                      else f'unexpected {type(error).__name__}: {error}')
            self.failure_reason = reason
            self.get_logger().error(f'configure failed: {reason}')
            self._destroy_entities()
            return TransitionCallbackReturn.FAILURE
        self.failure_reason = ''
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        threads = int(self._param('inference_threads'))
        path = str(self._param('policy'))
        self.policy = load_checked_policy(path, str(self._param('expected_task')), threads)
        self.meta = meta = self.policy.metadata
        self.rate_hz = resolve_rate(self._param('control_rate_hz'), meta)
        self.trigger = self._param('trigger')
        self._read_runtime_parameters()
        mode = self._param('observation_mode')
        self._input = make_input(mode, meta, self._param('joint_names'),
                                 self._param('exclude_joint_positions'))
        if isinstance(self._input, _JointStateInput):
            notes = self._input.mapping.differences(meta['joint_names'])
            if notes:
                self.get_logger().warning(
                    "parameter 'joint_names' differs from the model's joint_names: using "
                    + ', '.join(notes))
        self.low = np.asarray(meta['action_low'], dtype=np.float64)
        self.high = np.asarray(meta['action_high'], dtype=np.float64)
        self.actuator_names = [str(n) for n in meta['actuator_names']]
        self._warm_up()

        self._command_pub = self.create_publisher(Float64MultiArray, 'commands', COMMAND_QOS)
        self._action_pub = self.create_publisher(JointState, '~/action', ACTION_QOS)
        self._diagnostics_pub = self.create_publisher(
            DiagnosticArray, '/diagnostics', DIAGNOSTICS_QOS)
        self._subscription = self.create_subscription(
            self._input.msg_type, self._input.topic, self._on_input, INPUT_QOS)
        self._window_start_ns = time.monotonic_ns()
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._on_diagnostics,
                                                    clock=Clock(clock_type=ClockType.STEADY_TIME))
        model_rate = model_rate_hz(meta)
        self.get_logger().info(
            f"{meta['algorithm']} policy for {meta['task']} ({Path(path).name}, sha256 "
            f"{self.policy.model_hash[:12]}): {self._input.describe()} from "
            f"{self._subscription.topic_name}, "
            f"actions {meta['act_dim']} ({', '.join(self.actuator_names)}); "
            f'{self.rate_hz:g} Hz' + ('' if abs(self.rate_hz - model_rate) < 1e-6 * model_rate
                                      else f" (model: {model_rate:g} Hz)")
            + f', trigger {self.trigger}, safe action {self.safe_kind}, state timeout '
            f'{self.state_timeout_ns / 1e9:g} s')

    def _warm_up(self) -> None:
        from fpmd_core.runtime import observation_shape

        # The dtype the policy is fed in operation: uint8 frames for pixel policies.
        dtype = np.uint8 if self.meta.get('obs_dtype') == 'uint8' else np.float32
        obs = np.zeros(observation_shape(self.meta), dtype=dtype)
        for _ in range(WARMUP_INFERENCES):
            try:
                action = np.asarray(self.policy(obs), dtype=np.float64)
            except Exception as error:
                raise ConfigureError(f'warm-up inference failed: {type(error).__name__}: '
                                     f'{error}') from None
            if action.shape != (self.meta['act_dim'],) or not np.all(np.isfinite(action)):
                raise ConfigureError(f'warm-up inference returned {action.tolist()}; expected '
                                     f"{self.meta['act_dim']} finite values")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        now = time.monotonic_ns()
        self.safety.reset(Safety.WAITING, now)
        self._input.reset()  # image mode: the first frame after activation refills the stack
        self._active_since_ns = now
        self._control_timer = self.create_timer(1.0 / self.rate_hz, self._on_tick,
                                                clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._timer_period_ns = self._control_period_ns()
        self.get_logger().info(
            f'active: controlling at {self.rate_hz:g} Hz' if self.trigger == 'timer' else
            f'active: controlling on each {self._input.topic} message (safe action at '
            f'{self.rate_hz:g} Hz while there is none for state_timeout_s)')
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control('deactivated')
        return TransitionCallbackReturn.SUCCESS

    def _stop_control(self, why: str) -> None:
        if self._control_timer is not None:
            self.destroy_timer(self._control_timer)
            self._control_timer = None
            action = self._safe_action()
            self._publish(action)
            self.get_logger().info(f'{why}: published the safe action ({self.safe_kind}) '
                                   f'{np.array2string(action, precision=4)} and stopped')
        self.safety.reset(Safety.INACTIVE, time.monotonic_ns())

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._command_pub is not None:
            self._stop_control('shutting down')
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f'error during a transition from {state.label}; releasing the '
                                'policy and topics (back to unconfigured)')
        try:
            if self._command_pub is not None:
                self._stop_control('error')
        finally:
            self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    # --- control loop --------------------------------------------------------------------------

    def _on_input(self, msg) -> None:
        self._latest_msg, self._latest_ns = msg, time.monotonic_ns()
        self._latest_seq += 1
        if self.trigger == 'observation' and self._control_timer is not None:
            self._control_step(self._latest_ns)
            # Push the watchdog's next tick to state_timeout_s from now: while input flows it
            # never wakes the executor (at 1 kHz that was 1000 idle ticks per second).
            self._set_timer_period(self.state_timeout_ns)
            self._control_timer.reset()

    def _control_period_ns(self) -> int:
        return int(round(1e9 / self.rate_hz))

    def _set_timer_period(self, period_ns: int) -> None:
        if period_ns != self._timer_period_ns:
            self._control_timer.timer_period_ns = period_ns
            self._timer_period_ns = period_ns
            # A new period only applies from the next call on: restart the count from now.
            self._control_timer.reset()

    def input_age_s(self, now_ns: int | None = None) -> float | None:
        if self._latest_msg is None:
            return None
        return ((time.monotonic_ns() if now_ns is None else now_ns) - self._latest_ns) / 1e9

    def _safe_action(self) -> np.ndarray:
        return safe_action(self.safe_kind, self.low, self.high, self.last_command,
                           self.default_action)

    def _evaluate(self, now_ns: int) -> tuple[Safety, str, np.ndarray | None]:
        """(state, reason, clipped policy action or None) for this tick."""
        if self._latest_msg is None:
            return Safety.WAITING, f'no input on {self._subscription.topic_name} yet', None
        age_ns = now_ns - self._latest_ns
        if age_ns > self.state_timeout_ns:
            return (Safety.STALE, f'newest input is {age_ns / 1e9:.3f} s old (state_timeout_s '
                    f'{self.state_timeout_ns / 1e9:g})', None)
        if self._computed_seq == self._latest_seq:
            return self._computed  # same message as last tick: same result
        msg, seq, received_ns = self._latest_msg, self._latest_seq, self._latest_ns
        try:
            observation = self._input.observation(msg, received_ns, self.state_timeout_ns)
        except ValueError as error:
            result = (Safety.MALFORMED, f'malformed {self._input.topic} message: {error}', None)
        else:
            result = self._infer(observation)
        self._computed_seq, self._computed = seq, result
        return result

    def _infer(self, observation: np.ndarray) -> tuple[Safety, str, np.ndarray | None]:
        start = time.perf_counter_ns()
        try:
            action = np.asarray(self.policy(observation), dtype=np.float64)
        except ValueError as error:  # ObservationError: the policy refused the input
            return Safety.MALFORMED, f'observation refused by the policy: {error}', None
        except Exception as error:
            return (Safety.INFERENCE_ERROR,
                    f'inference failed: {type(error).__name__}: {error}', None)
        finally:
            self._latencies_ns.append(time.perf_counter_ns() - start)
            self.inferences += 1
        if action.shape != self.low.shape or not np.isfinite(action).all():
            return (Safety.INFERENCE_ERROR,
                    f'policy returned {np.array2string(action, precision=4)}; expected '
                    f'{self.low.size} finite values', None)
        return Safety.OK, '', clip_to_bounds(action, self.low, self.high)

    def _on_tick(self) -> None:
        now = time.monotonic_ns()
        if self.trigger == 'observation':
            self._set_timer_period(self._control_period_ns())  # until the next message
            if self._latest_msg is not None and now - self._latest_ns <= self.state_timeout_ns:
                return  # fresh input: its arrival ran the control step; the watchdog stays quiet
        self._control_step(now)

    def _control_step(self, now: int) -> None:
        self._window_ticks += 1
        try:
            state, reason, action = self._evaluate(now)
            if action is not None:
                action = rate_limit(action, self.last_command, self.max_delta)
        except Exception as error:  # never let a tick raise: the executor would stop
            state, reason, action = (Safety.INFERENCE_ERROR,
                                     f'tick failed: {type(error).__name__}: {error}', None)
        if action is None:
            action = self._safe_action()
        log = self.safety.update(state, reason, now)
        if log is not None:
            level, text = log
            if level == 'error':
                self.get_logger().error(text, throttle_duration_sec=LOG_THROTTLE_S)
            else:
                self.get_logger().info(text, throttle_duration_sec=LOG_THROTTLE_S)
        self._publish(action)

    def _publish(self, action: np.ndarray) -> None:
        action = np.asarray(action, dtype=np.float64)
        if not np.isfinite(action).all():  # unreachable by construction; never publish NaN
            action = clip_to_bounds(np.zeros_like(self.low), self.low, self.high)
        self._command_pub.publish(messages.encode_command(action))
        if self._action_pub.get_subscription_count():  # for recording: built only when wanted
            self._action_pub.publish(messages.joint_state(
                max(self.get_clock().now().nanoseconds, 0), self.actuator_names,
                position=action))
        self.last_command = action
        self.commands_published += 1

    # --- diagnostics ---------------------------------------------------------------------------

    def _on_diagnostics(self) -> None:
        try:
            self._diagnostics_pub.publish(self.diagnostics())
        except Exception as error:  # diagnostics must never take the node down
            self.get_logger().error(f'diagnostics failed: {error!r}',
                                    throttle_duration_sec=10.0)

    def diagnostics(self):
        """The current DiagnosticArray (and start a new measurement window)."""
        now = time.monotonic_ns()
        window_s = max((now - self._window_start_ns) / 1e9, 1e-9)
        achieved = self._window_ticks / window_s
        self._window_ticks, self._window_start_ns = 0, now
        worst = self.safety.reset_window()
        latencies = np.asarray(self._latencies_ns, dtype=np.float64) / 1e6
        p50, p99 = ((float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)))
                    if latencies.size else (math.nan, math.nan))
        age = self.input_age_s(now)
        lifecycle = self.lifecycle_state
        state = self.safety.state
        active = self._control_timer is not None
        if not active:
            level, message = OK, f'{lifecycle}: not controlling'
        elif state.trouble:
            level, message = ERROR, f'{state.value}: {self.safety.reason} -> safe action'
        elif state is Safety.WAITING:
            level, message = WARN, f'waiting for input: {self.safety.reason} -> safe action'
        elif worst is not None:
            level, message = WARN, f'recovered from {worst.value} within the last {window_s:.1f} s'
        elif (achieved < LOW_RATE_FRACTION * self.rate_hz
              and now - self._active_since_ns > 2 * DIAGNOSTICS_PERIOD_S * 1e9):
            level, message = WARN, (f'control rate {achieved:.1f} Hz is below the target '
                                    f'{self.rate_hz:g} Hz')
        else:
            level, message = OK, f'controlling at {achieved:.1f} Hz'
        values = {
            'lifecycle_state': lifecycle,
            'safety_state': state.value,
            'safety_reason': self.safety.reason,
            'target_rate_hz': self.rate_hz,
            'achieved_rate_hz': achieved if active else 0.0,
            'inference_latency_p50_ms': p50,
            'inference_latency_p99_ms': p99,
            'input_age_ms': 'none' if age is None else age * 1e3,
            'model_hash': self.policy.model_hash if self.policy is not None else '',
            'policy': str(self._param('policy')),
            'algorithm': self.meta.get('algorithm', ''),
            'task': self.meta.get('task', ''),
            'observation_mode': str(self._param('observation_mode')),
            'input_topic': self._subscription.topic_name if self._subscription else '',
            'safe_action': getattr(self, 'safe_kind', ''),
            'trigger': self.trigger,
            'commands_published': self.commands_published,
            'inferences': self.inferences,
            'trouble_episodes': self.safety.trouble_episodes,
            **(self._input.diagnostic_values() if self._input is not None else {}),
        }
        status = messages.diagnostic_status(
            f'{self.get_fully_qualified_name()}: control loop', level, message,
            hardware_id=self.meta.get('task', ''), values=values)
        return messages.diagnostic_array(max(self.get_clock().now().nanoseconds, 0), [status])

    def destroy_node(self) -> None:
        if self._control_timer is not None:  # still active: the robot gets the safe action last
            try:
                self._stop_control('stopping')
            except Exception:  # the context may already be shut down
                pass
        self.policy = None
        super().destroy_node()


_STOP = threading.Event()


def _interrupt(signum, frame):
    # Only a flag: an exception raised here can surface inside rclpy's C++ calls (taking a
    # message) as a RuntimeError instead of KeyboardInterrupt, and the node exited with 1.
    _STOP.set()


def main(args=None) -> int:
    """Run the node until SIGINT/SIGTERM; on the way out an active node publishes the safe
    action (a forward_command_controller would otherwise hold the last command forever).

    rclpy's own signal handlers would shut the context down before that is possible, so Python
    handlers are used instead and the executor wakes up at least every 0.1 s to notice them.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = None
    try:
        node = PolicyController()
        if node.get_parameter('autostart').value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                rclpy.logging.get_logger(NODE_NAME).fatal(
                    f'autostart: configure failed: {node.failure_reason}')
                return 1
            node.trigger_activate()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not _STOP.is_set():
            executor.spin_once(timeout_sec=0.1)
    except ControllerParameterError as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(error))
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
