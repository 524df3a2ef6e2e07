"""numpy <-> ROS message conversions: the one place where fpmd_ros builds or parses messages.

Segment layouts
---------------
A ``std_msgs/*MultiArray`` here always carries a flat vector made of consecutive labelled
segments (the observation terms of a task, or the fields of a transition). Each
``layout.dim[i]`` describes one segment: ``label`` is its name, ``size`` its length and
``stride`` equals ``size`` (the stride of a one-dimensional block); ``data_offset`` is 0 and the
sizes sum to ``len(data)``. This makes the observation and transition topics self-describing.

Transition
----------
``transition`` is a ``std_msgs/Float64MultiArray`` with exactly these segments, in this order::

    observation (obs_dim) | reward | terminated | truncated | step | episode | stamp

``terminated``/``truncated`` are 0.0 or 1.0; ``step`` (index within the episode, 0 for the
observation right after a reset) and ``episode`` are non-negative integers. ``stamp`` is the sim
time of the observation in integer nanoseconds: the ``header.stamp`` of the camera frame that
shows it, so pixel trainers pair frames with transitions by it. float64 carries the float32
observation, the float64 reward and stamps below 2**53 ns (104 days) bit-exactly.

Camera images
-------------
``sensor_msgs/Image`` with encoding ``rgb8``, ``step`` >= 3 * width (row padding allowed),
``is_bigendian`` 0; ``decode_image`` refuses anything else by name.

Episode summary
---------------
``episode`` (published by ``mujoco_sim`` once per finished episode) is a
``std_msgs/Float64MultiArray`` with exactly these one-value segments, in this order::

    episode | seed | return | length | terminated

``episode`` is the episode index k, ``seed`` the seed it was reset with, ``return`` the sum of its
rewards, ``length`` its number of env steps and ``terminated`` 1.0 if it ended by termination
(0.0: truncated by the time limit).

Applied command
---------------
``~/applied_command`` (published by a realtime ``mujoco_sim`` once per control step, before the
step) is a ``std_msgs/Float64MultiArray`` with exactly these segments, in this order::

    episode | step | action (act_dim) | held | timed_out

``episode`` and ``step`` name the state the action is applied in (``step`` 0: the episode's
initial state), ``action`` is what the physics gets (env units), ``held`` how many earlier steps
applied the same command (0: it arrived since the previous step; 1 or more: no newer command
arrived in time, so the sim held the last one), ``timed_out`` 1.0 if no command arrived within
``command_timeout_s`` (the action is then zero and ``held`` 0).

Robot IMU, goal and velocity command
------------------------------------
For robot task files (``sim/<name>.yaml``) ``mujoco_sim`` publishes ``imu``
(``sensor_msgs/Imu``: orientation x, y, z, w of the base body in the world frame, angular
velocity in the base frame, rad/s, linear acceleration of the model's accelerometer, m/s^2, or
zeros with ``linear_acceleration_covariance[0] = -1`` when it has none; covariances 0: unknown;
frame_id the base body's name), ``~/goal`` (``geometry_msgs/PointStamped``, metres, frame_id
``world``) and ``~/cmd_vel`` (``geometry_msgs/Twist``: linear.x = vx, linear.y = vy, m/s,
angular.z = yaw rate, rad/s, the rest 0). It takes overrides on ``goal`` and ``cmd_vel``.
``decode_goal``, ``decode_twist`` and ``decode_imu`` are what both sides read them with.

Every ``decode_*``/``parse_*`` function validates what it is given (it comes from another
process) and raises ``ValueError`` naming the problem.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PointStamped, Twist
from sensor_msgs.msg import CameraInfo, Image, Imu, JointState
from std_msgs.msg import Float32MultiArray, Float64MultiArray, MultiArrayDimension, MultiArrayLayout

from fpmd_ros.interface import ROBOT_COMMAND_TOPICS

TRANSITION_LABELS = ('observation', 'reward', 'terminated', 'truncated', 'step', 'episode',
                     'stamp')
EPISODE_LABELS = ('episode', 'seed', 'return', 'length', 'terminated')
APPLIED_COMMAND_LABELS = ('episode', 'step', 'action', 'held', 'timed_out')
COMMAND_LABEL = 'action'

Segments = Sequence[tuple[str, int]]


# --- labelled segment layouts -----------------------------------------------------------------

def segment_layout(segments: Segments) -> MultiArrayLayout:
    """A layout with one ``MultiArrayDimension(label, size, stride=size)`` per segment."""
    layout = MultiArrayLayout()
    layout.data_offset = 0
    for label, size in segments:
        size = int(size)
        if size < 0:
            raise ValueError(f'segment {label!r}: negative size {size}')
        layout.dim.append(MultiArrayDimension(label=str(label), size=size, stride=size))
    return layout


def parse_segment_layout(layout: MultiArrayLayout, data_len: int) -> list[tuple[str, int]]:
    """The (label, size) segments of ``layout``, checked against a vector of ``data_len``.

    An empty layout is read as one unlabelled segment covering the whole vector.
    """
    if layout.data_offset != 0:
        raise ValueError(f'layout: data_offset {layout.data_offset}, expected 0')
    if not layout.dim:
        return [('', int(data_len))]
    segments = []
    for i, dim in enumerate(layout.dim):
        if dim.stride != dim.size:
            raise ValueError(f'layout dim {i} ({dim.label!r}): stride {dim.stride} != size '
                             f'{dim.size}; expected consecutive one-dimensional segments')
        segments.append((dim.label, int(dim.size)))
    total = sum(size for _, size in segments)
    if total != data_len:
        raise ValueError(f'layout sizes sum to {total} but the data has {data_len} values')
    return segments


def _packed(values: np.ndarray) -> array.array:
    # array.array is taken by the generated message setters as is (no per-element checks).
    packed = array.array('f' if values.dtype == np.float32 else 'd')
    packed.frombytes(np.ascontiguousarray(values).tobytes())
    return packed


def _fill(msg, values, segments: Segments | None, dtype):
    values = np.asarray(values, dtype=dtype).ravel()
    if segments is None:
        segments = [('', values.size)] if values.size else []
    msg.layout = segment_layout(segments)
    total = sum(int(size) for _, size in segments)
    if total != values.size:
        raise ValueError(f'segments sum to {total} but {values.size} values were given')
    msg.data = _packed(values)
    return msg


def to_float32_multiarray(values, segments: Segments | None = None) -> Float32MultiArray:
    """A Float32MultiArray of ``values`` with labelled segments (one unlabelled if None)."""
    return _fill(Float32MultiArray(), values, segments, np.float32)


def to_float64_multiarray(values, segments: Segments | None = None) -> Float64MultiArray:
    """A Float64MultiArray of ``values`` with labelled segments (one unlabelled if None)."""
    return _fill(Float64MultiArray(), values, segments, np.float64)


def from_multiarray(msg, expected_segments: Segments | None = None, dtype=np.float64,
                    allow_nonfinite: bool = False) -> np.ndarray:
    """The data of a Float32/Float64MultiArray as a 1-D array of ``dtype``, validated.

    ``expected_segments`` (if given) must equal the message's (label, size) segments exactly.
    """
    data = np.asarray(msg.data, dtype=dtype)
    segments = parse_segment_layout(msg.layout, data.size)
    if expected_segments is not None:
        expected = [(str(label), int(size)) for label, size in expected_segments]
        if segments != expected:
            raise ValueError(f'layout segments {segments}, expected {expected}')
    if not allow_nonfinite and not np.isfinite(data).all():
        raise ValueError(f'non-finite value (NaN/Inf) at index {_first_nonfinite(data)}')
    return data


def _first_nonfinite(data: np.ndarray) -> int:
    return int(np.flatnonzero(~np.isfinite(data))[0])


def _check_finite(what: str, data: np.ndarray, segments: Segments) -> None:
    """ValueError naming the segment of the first non-finite value, if any."""
    if np.all(np.isfinite(data)):
        return
    index, start = _first_nonfinite(data), 0
    for label, size in segments:
        if index < start + size:
            raise ValueError(f'{what} field {label!r} is not finite ({data[index]})')
        start += size


def _check_count(what: str, label: str, value: float) -> None:
    """An index, count or stamp carried in a float64: a non-negative integer, exact below 2**53."""
    if value < 0 or value != np.floor(value) or value > 2.0 ** 53:
        raise ValueError(f'{what} field {label!r} is {value}, expected a non-negative integer')


def _check_flag(what: str, label: str, value: float) -> None:
    if value not in (0.0, 1.0):
        raise ValueError(f'{what} field {label!r} is {value}, expected 0 or 1')


# --- commands (forward_command_controller contract) ----------------------------------------------

def encode_command(action) -> Float64MultiArray:
    """An action in env units as a command: one segment labelled ``action``."""
    action = np.asarray(action, dtype=np.float64).ravel()
    return to_float64_multiarray(action, [(COMMAND_LABEL, action.size)])


def decode_command(msg: Float64MultiArray, act_dim: int) -> np.ndarray:
    """A command's action (float64, length ``act_dim``, all finite), or ValueError.

    The layout is optional (forward_command_controller ignores it); if present it must be
    consistent with the data.
    """
    data = np.asarray(msg.data, dtype=np.float64)
    if data.size != act_dim:
        raise ValueError(f'command has {data.size} values, expected {act_dim} '
                         '(one per actuator, in actuator order)')
    if msg.layout.dim:
        parse_segment_layout(msg.layout, data.size)
    if not np.all(np.isfinite(data)):
        raise ValueError(f'command value {_first_nonfinite(data)} is not finite '
                         f'({data[_first_nonfinite(data)]})')
    return data


# --- transitions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Transition:
    observation: np.ndarray
    """float32 observation (after the step; the initial one when ``step`` is 0)."""
    reward: float
    terminated: bool
    truncated: bool
    step: int
    episode: int
    stamp_ns: int = 0
    """Sim time of the observation (the stamp of its camera frame)."""


def encode_transition(observation, reward: float, terminated: bool, truncated: bool,
                      step: int, episode: int, stamp_ns: int = 0) -> Float64MultiArray:
    observation = np.asarray(observation, dtype=np.float64).ravel()
    values = np.concatenate([
        observation,
        [float(reward), float(bool(terminated)), float(bool(truncated)), float(step),
         float(episode), float(stamp_ns)],
    ])
    sizes = (observation.size, 1, 1, 1, 1, 1, 1)
    return to_float64_multiarray(values, list(zip(TRANSITION_LABELS, sizes, strict=True)))


def decode_transition(msg: Float64MultiArray, obs_dim: int | None = None) -> Transition:
    """A validated Transition; ValueError names what is wrong (labels, sizes, values)."""
    data = np.asarray(msg.data, dtype=np.float64)
    segments = parse_segment_layout(msg.layout, data.size)
    labels = tuple(label for label, _ in segments)
    if labels != TRANSITION_LABELS:
        missing = [label for label in TRANSITION_LABELS if label not in labels]
        raise ValueError(f'transition labels {list(labels)}, expected {list(TRANSITION_LABELS)}'
                         + (f' (missing: {", ".join(missing)})' if missing else ''))
    sizes = dict(segments)
    for label in TRANSITION_LABELS[1:]:
        if sizes[label] != 1:
            raise ValueError(f'transition field {label!r} has size {sizes[label]}, expected 1')
    n_obs = sizes['observation']
    if obs_dim is not None and n_obs != obs_dim:
        raise ValueError(f'transition observation has {n_obs} values, expected {obs_dim}')
    _check_finite('transition', data, segments)
    reward, terminated, truncated, step, episode, stamp = data[n_obs:]
    for label, value in (('terminated', terminated), ('truncated', truncated)):
        _check_flag('transition', label, value)
    for label, value in (('step', step), ('episode', episode), ('stamp', stamp)):
        _check_count('transition', label, value)
    return Transition(
        observation=data[:n_obs].astype(np.float32),
        reward=float(reward),
        terminated=bool(terminated),
        truncated=bool(truncated),
        step=int(step),
        episode=int(episode),
        stamp_ns=int(stamp),
    )


# --- episode summaries -------------------------------------------------------------------------

@dataclass(frozen=True)
class EpisodeSummary:
    episode: int
    seed: int
    episode_return: float
    length: int
    terminated: bool


def encode_episode_summary(episode: int, seed: int, episode_return: float, length: int,
                           terminated: bool) -> Float64MultiArray:
    values = [float(episode), float(seed), float(episode_return), float(length),
              float(bool(terminated))]
    return to_float64_multiarray(values, [(label, 1) for label in EPISODE_LABELS])


def decode_episode_summary(msg: Float64MultiArray) -> EpisodeSummary:
    """A validated EpisodeSummary; ValueError names what is wrong (labels, sizes, values)."""
    data = np.asarray(msg.data, dtype=np.float64)
    segments = parse_segment_layout(msg.layout, data.size)
    expected = [(label, 1) for label in EPISODE_LABELS]
    if segments != expected:
        raise ValueError(f'episode summary segments {segments}, expected {expected}')
    _check_finite('episode summary', data, segments)
    episode, seed, episode_return, length, terminated = data
    for label, value in (('episode', episode), ('seed', seed), ('length', length)):
        _check_count('episode summary', label, value)
    _check_flag('episode summary', 'terminated', terminated)
    return EpisodeSummary(episode=int(episode), seed=int(seed),
                          episode_return=float(episode_return), length=int(length),
                          terminated=bool(terminated))


# --- applied commands (realtime mujoco_sim) ------------------------------------------------------

@dataclass(frozen=True)
class AppliedCommand:
    episode: int
    step: int
    """Index of the state the action is applied in (0: the episode's initial state)."""
    action: np.ndarray
    held: int
    """Earlier steps that applied the same command (0: it arrived since the previous step)."""
    timed_out: bool
    """No command within command_timeout_s: the action is zero."""


def encode_applied_command(episode: int, step: int, action, held: int,
                           timed_out: bool) -> Float64MultiArray:
    action = np.asarray(action, dtype=np.float64).ravel()
    values = np.concatenate([[float(episode), float(step)], action,
                             [float(held), float(bool(timed_out))]])
    sizes = (1, 1, action.size, 1, 1)
    return to_float64_multiarray(values, list(zip(APPLIED_COMMAND_LABELS, sizes, strict=True)))


def decode_applied_command(msg: Float64MultiArray, act_dim: int | None = None) -> AppliedCommand:
    """A validated AppliedCommand; ValueError names what is wrong (labels, sizes, values)."""
    data = np.asarray(msg.data, dtype=np.float64)
    segments = parse_segment_layout(msg.layout, data.size)
    labels = tuple(label for label, _ in segments)
    if labels != APPLIED_COMMAND_LABELS:
        raise ValueError(f'applied command labels {list(labels)}, expected '
                         f'{list(APPLIED_COMMAND_LABELS)}')
    sizes = dict(segments)
    for label in ('episode', 'step', 'held', 'timed_out'):
        if sizes[label] != 1:
            raise ValueError(f'applied command field {label!r} has size {sizes[label]}, '
                             'expected 1')
    if act_dim is not None and sizes['action'] != act_dim:
        raise ValueError(f'applied command action has {sizes["action"]} values, expected '
                         f'{act_dim}')
    _check_finite('applied command', data, segments)
    episode, step, held, timed_out = data[0], data[1], data[-2], data[-1]
    for label, value in (('episode', episode), ('step', step), ('held', held)):
        _check_count('applied command', label, value)
    _check_flag('applied command', 'timed_out', timed_out)
    return AppliedCommand(episode=int(episode), step=int(step), action=data[2:-2].copy(),
                          held=int(held), timed_out=bool(timed_out))


# --- joint states ------------------------------------------------------------------------------

def stamp_from_ns(msg_stamp, nanoseconds: int):
    """Fill a builtin_interfaces/Time from integer nanoseconds; returns it."""
    nanoseconds = int(nanoseconds)
    if nanoseconds < 0:
        raise ValueError(f'negative time {nanoseconds} ns')
    msg_stamp.sec, msg_stamp.nanosec = divmod(nanoseconds, 1_000_000_000)
    return msg_stamp


def joint_state(stamp_ns: int, names: Sequence[str], position=(), velocity=(), effort=(),
                frame_id: str = '') -> JointState:
    """A JointState stamped ``stamp_ns``; each array is empty or one value per name."""
    msg = JointState()
    stamp_from_ns(msg.header.stamp, stamp_ns)
    msg.header.frame_id = frame_id
    msg.name = [str(n) for n in names]
    for field, values in (('position', position), ('velocity', velocity), ('effort', effort)):
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size not in (0, len(msg.name)):
            raise ValueError(f'joint_state {field}: {values.size} values for '
                             f'{len(msg.name)} joints')
        setattr(msg, field, _packed(values))
    return msg


def parse_joint_state(msg: JointState, names: Sequence[str] | None = None,
                      fields: Sequence[str] = ('position', 'velocity', 'effort'),
                      ) -> dict[str, np.ndarray]:
    """``{field: array}`` for ``fields`` of a JointState, ordered as ``names`` (default: the
    message's order), validated: every requested name present, arrays full length, finite."""
    index = {name: i for i, name in enumerate(msg.name)}
    if len(index) != len(msg.name):
        raise ValueError('joint_state has duplicate joint names')
    names = list(msg.name) if names is None else list(names)
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f'joint_state lacks joints: {", ".join(missing)}')
    order = [index[n] for n in names]
    result = {}
    for field in fields:
        values = np.asarray(getattr(msg, field), dtype=np.float64)
        if values.size != len(msg.name):
            raise ValueError(f'joint_state {field}: {values.size} values for '
                             f'{len(msg.name)} joints')
        values = values[order]
        if not np.all(np.isfinite(values)):
            raise ValueError(f'joint_state {field} of {names[_first_nonfinite(values)]!r} '
                             'is not finite')
        result[field] = values
    return result


# --- robot IMU, goal and velocity command (mujoco_sim <-> policy_controller) --------------------

WORLD_FRAME = 'world'
GOAL_FRAMES = ('', WORLD_FRAME)
"""The frames a goal may be given in: mujoco_sim has no tf, so only its world frame ('' reads as
the world, as a bare ``ros2 topic pub`` sends it)."""
_UNIT_QUATERNION_TOLERANCE = 1e-3


def _require_finite(what: str, fields: Sequence[tuple[str, float]]) -> np.ndarray:
    """The values of ``(name, value)`` fields as float64, or ValueError naming the first
    non-finite field."""
    values = np.array([float(value) for _, value in fields], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        name, value = fields[_first_nonfinite(values)]
        raise ValueError(f'{what} field {name!r} is {value}, expected a finite number')
    return values


def imu_message(stamp_ns: int, frame_id: str, quat_wxyz, ang_vel,
                lin_acc=None) -> Imu:
    """A ``sensor_msgs/Imu`` from a MuJoCo quaternion (w, x, y, z), an angular velocity (rad/s)
    and a linear acceleration (m/s^2; None: not provided, marked by
    ``linear_acceleration_covariance[0] = -1``, the ROS convention). The other covariances are
    0: unknown."""
    w, x, y, z = (float(v) for v in np.asarray(quat_wxyz, dtype=np.float64).ravel())
    msg = Imu()
    stamp_from_ns(msg.header.stamp, stamp_ns)
    msg.header.frame_id = frame_id
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = x, y, z, w
    wx, wy, wz = (float(v) for v in np.asarray(ang_vel, dtype=np.float64).ravel())
    msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z = wx, wy, wz
    if lin_acc is None:
        msg.linear_acceleration_covariance[0] = -1.0
    else:
        ax, ay, az = (float(v) for v in np.asarray(lin_acc, dtype=np.float64).ravel())
        msg.linear_acceleration.x, msg.linear_acceleration.y = ax, ay
        msg.linear_acceleration.z = az
    return msg


def decode_imu(msg: Imu, frame_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(orientation quaternion w, x, y, z; angular velocity x, y, z in rad/s) of an Imu, as
    float64, or ValueError naming the field: a non-finite value, an orientation marked as not
    provided (``orientation_covariance[0] = -1``) or not a unit quaternion, or a frame other
    than ``frame_id`` (when given). The quaternion is returned as sent (not renormalised)."""
    if frame_id is not None and msg.header.frame_id != frame_id:
        raise ValueError(f'imu field header.frame_id is {msg.header.frame_id!r}, expected '
                         f'{frame_id!r}')
    if msg.orientation_covariance[0] == -1.0:
        raise ValueError("imu field 'orientation' is not provided (orientation_covariance[0] "
                         'is -1); expected an IMU that estimates its orientation')
    o, w = msg.orientation, msg.angular_velocity
    quaternion = _require_finite('imu', [('orientation.w', o.w), ('orientation.x', o.x),
                                         ('orientation.y', o.y), ('orientation.z', o.z)])
    norm = float(np.linalg.norm(quaternion))
    if abs(norm - 1.0) > _UNIT_QUATERNION_TOLERANCE:
        raise ValueError(f"imu field 'orientation' has norm {norm:.6g}, expected a unit "
                         'quaternion')
    angular_velocity = _require_finite('imu', [('angular_velocity.x', w.x),
                                               ('angular_velocity.y', w.y),
                                               ('angular_velocity.z', w.z)])
    return quaternion, angular_velocity


def point_stamped(stamp_ns: int, point, frame_id: str = WORLD_FRAME) -> PointStamped:
    """A goal (x, y, z in metres) as a ``geometry_msgs/PointStamped``."""
    x, y, z = (float(v) for v in np.asarray(point, dtype=np.float64).ravel())
    msg = PointStamped()
    stamp_from_ns(msg.header.stamp, stamp_ns)
    msg.header.frame_id = frame_id
    msg.point.x, msg.point.y, msg.point.z = x, y, z
    return msg


def decode_goal(msg: PointStamped) -> np.ndarray:
    """A goal (x, y, z in metres, world frame) as float64, or ValueError naming the field: a
    frame other than ``world`` or '' (no tf here to transform it), or a non-finite value."""
    if msg.header.frame_id not in GOAL_FRAMES:
        raise ValueError(f'goal field header.frame_id is {msg.header.frame_id!r}, expected '
                         f"{WORLD_FRAME!r} or '' (no tf here to transform it)")
    p = msg.point
    return _require_finite('goal', [('point.x', p.x), ('point.y', p.y), ('point.z', p.z)])


def twist(command) -> Twist:
    """A velocity command (vx, vy in m/s, yaw rate in rad/s) as a ``geometry_msgs/Twist``:
    linear.x, linear.y and angular.z; the rest 0."""
    vx, vy, yaw_rate = (float(v) for v in np.asarray(command, dtype=np.float64).ravel())
    msg = Twist()
    msg.linear.x, msg.linear.y, msg.angular.z = vx, vy, yaw_rate
    return msg


def decode_twist(msg: Twist) -> np.ndarray:
    """(vx, vy, yaw rate) of a Twist as float64, or ValueError naming a non-finite field.
    linear.z, angular.x and angular.y are ignored: a planar base command has no such axes."""
    return _require_finite('cmd_vel', [('linear.x', msg.linear.x), ('linear.y', msg.linear.y),
                                       ('angular.z', msg.angular.z)])


@dataclass(frozen=True)
class RobotCommandMessage:
    """How one command kind travels: its topic (fpmd_ros.interface.ROBOT_COMMAND_TOPICS), message
    type, ``encode(stamp_ns, values)`` and ``decode(msg) -> values`` (ValueError)."""

    topic: str
    msg_type: type
    encode: Callable
    decode: Callable


ROBOT_COMMAND_MESSAGES = {
    'goal_position': RobotCommandMessage(ROBOT_COMMAND_TOPICS['goal_position'], PointStamped,
                                         point_stamped, decode_goal),
    'velocity': RobotCommandMessage(ROBOT_COMMAND_TOPICS['velocity'], Twist,
                                    lambda stamp_ns, values: twist(values), decode_twist),
}
"""Per command kind of a robot task file (mujoco_sim and policy_controller share it)."""


# --- controller inputs (policy_controller) -------------------------------------------------------

def decode_observation(msg, obs_dim: int, obs_terms: Segments | None = None) -> np.ndarray:
    """The observation vector of a Float32/Float64MultiArray (float32, length ``obs_dim``, all
    finite), or ValueError.

    The layout is optional (a bare vector, or unlabelled segments, is accepted); if the message
    labels its segments they must be ``obs_terms`` (when given) exactly, so a topic wired to the
    wrong task is refused.
    """
    size = len(msg.data)
    if size != obs_dim:
        raise ValueError(f'observation has {size} values, expected {obs_dim}')
    labelled = any(dim.label for dim in msg.layout.dim)
    expected = obs_terms if labelled else None
    data = from_multiarray(msg, expected_segments=expected, dtype=np.float64)
    return data.astype(np.float32)


def joint_state_observation(msg: JointState, joints: Sequence[str],
                            position_joints: Sequence[str] | None = None) -> np.ndarray:
    """An observation vector from a JointState, mapped by joint name (float32), or ValueError.

    Layout: the positions of ``position_joints`` (default: ``joints``), then the velocities of
    ``joints``, each in the order given (the message's own order does not matter; extra joints
    in the message are ignored). Every listed joint must be in the message with a finite
    position and velocity.
    """
    joints = list(joints)
    position_joints = joints if position_joints is None else list(position_joints)
    names = list(dict.fromkeys([*position_joints, *joints]))
    fields = parse_joint_state(msg, names, fields=('position', 'velocity'))
    slot = {name: i for i, name in enumerate(names)}
    positions = fields['position'][[slot[n] for n in position_joints]]
    velocities = fields['velocity'][[slot[n] for n in joints]]
    return np.concatenate([positions, velocities]).astype(np.float32)


# --- diagnostics -------------------------------------------------------------------------------

def diagnostic_status(name: str, level: int, message: str, hardware_id: str = '',
                      values: Mapping[str, object] | None = None):
    """A ``diagnostic_msgs/DiagnosticStatus``; ``level`` is 0 OK, 1 WARN, 2 ERROR, 3 STALE and
    ``values`` become key/value pairs (floats with 6 significant digits)."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    status = DiagnosticStatus()
    status.level = bytes([int(level)])
    status.name = str(name)
    status.message = str(message)
    status.hardware_id = str(hardware_id)
    for key, value in (values or {}).items():
        text = f'{value:.6g}' if isinstance(value, float) else str(value)
        status.values.append(KeyValue(key=str(key), value=text))
    return status


def diagnostic_array(stamp_ns: int, statuses: Sequence):
    """A ``diagnostic_msgs/DiagnosticArray`` stamped ``stamp_ns`` holding ``statuses``."""
    from diagnostic_msgs.msg import DiagnosticArray

    msg = DiagnosticArray()
    stamp_from_ns(msg.header.stamp, stamp_ns)
    msg.status = list(statuses)
    return msg


def diagnostic_values(status) -> dict[str, str]:
    """The key/value pairs of a DiagnosticStatus as a dict."""
    return {kv.key: kv.value for kv in status.values}


# --- camera images -----------------------------------------------------------------------------

IMAGE_ENCODING = 'rgb8'


def stamp_to_ns(msg_stamp) -> int:
    return int(msg_stamp.sec) * 1_000_000_000 + int(msg_stamp.nanosec)


def encode_image(frame: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """An (H, W, 3) uint8 RGB frame as a ``sensor_msgs/Image`` (rgb8, unpadded rows)."""
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f'image: expected an (H, W, 3) frame, got shape {frame.shape}')
    msg = Image()
    stamp_from_ns(msg.header.stamp, stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(frame.shape[0]), int(frame.shape[1])
    msg.encoding = IMAGE_ENCODING
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    msg.data = frame.tobytes()
    return msg


def decode_image(msg: Image, height: int | None = None, width: int | None = None) -> np.ndarray:
    """A validated (H, W, 3) uint8 RGB frame (a copy); ValueError names what is wrong:
    encoding, size, step or data length."""
    if msg.encoding != IMAGE_ENCODING:
        raise ValueError(f'image encoding {msg.encoding!r}, expected {IMAGE_ENCODING!r}')
    if msg.height == 0 or msg.width == 0:
        raise ValueError(f'image size {msg.width}x{msg.height}: empty')
    if (height is not None and msg.height != height) or (width is not None and
                                                         msg.width != width):
        raise ValueError(f'image size {msg.width}x{msg.height}, expected {width}x{height}')
    if msg.step < 3 * msg.width:
        raise ValueError(f'image step {msg.step}, expected >= {3 * msg.width} (3 x width)')
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size != msg.step * msg.height:
        raise ValueError(f'image data has {data.size} bytes, expected step x height = '
                         f'{msg.step * msg.height}')
    rows = data.reshape(msg.height, msg.step)[:, :3 * msg.width]
    return rows.reshape(msg.height, msg.width, 3).copy()


def camera_info(stamp_ns: int, frame_id: str, width: int, height: int,
                fovy_deg: float) -> CameraInfo:
    """Ideal pinhole intrinsics of a MuJoCo camera (vertical field of view, square pixels,
    principal point at the centre, no distortion)."""
    focal = 0.5 * height / np.tan(np.radians(fovy_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    msg = CameraInfo()
    stamp_from_ns(msg.header.stamp, stamp_ns)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    msg.k = [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg
