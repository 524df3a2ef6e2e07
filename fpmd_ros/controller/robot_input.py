"""The policy_controller's input for robot policies (trained on a ``sim/<name>.yaml`` task file):
the observation built from standard topics as the policy's metadata describes it.

``joint_states`` (sensor_msgs/JointState) starts each observation; an ``imu``
(sensor_msgs/Imu) gives the base orientation and angular velocity when the observation has
``base_ang_vel`` or ``projected_gravity``; ``goal`` (geometry_msgs/PointStamped) or ``cmd_vel``
(geometry_msgs/Twist) gives the command; the last action is the controller's own last command.
The observation itself is :class:`fpmd_core.robots.observer.RobotObserver`'s: the training
env's term functions (docs/deployment.md, "Robot policies", states the rules below for users).

Commands (each documented safe behaviour is here, once):
    goal: none received yet -> waiting (the safe action, a position policy's default pose);
        a valid goal holds until the next one (a goal is a set point: it never times out); a
        goal that is not finite or not in the world frame is rejected and the previous one
        holds.
    cmd_vel: none received yet, or the newest older than ``command_timeout_s`` -> a zero
        velocity command (stand still); one that is not finite -> zero at once, until a
        valid one arrives.
    Either: a value outside the ranges the policy was trained on (the metadata's command
        ranges) is clipped into them, with a warning: the policy has never seen others.
"""

from __future__ import annotations

import time

import numpy as np
from sensor_msgs.msg import Imu, JointState

from fpmd_ros import messages
from fpmd_ros.controller.inputs import Input, InputStale, InputWaiting
from fpmd_ros.controller.rules import ConfigureError


class CommandInput:
    """The command a robot policy follows, with the rules of the module docstring."""

    def __init__(self, command: dict, timeout_ns: int):
        self.kind = command['kind']
        codec = messages.ROBOT_COMMAND_MESSAGES[self.kind]
        self.topic, self.msg_type, self._decode = codec.topic, codec.msg_type, codec.decode
        ranges = command['ranges']
        self.fields = list(command['fields'])
        self.low = np.array([ranges[f][0] for f in self.fields], dtype=np.float64)
        self.high = np.array([ranges[f][1] for f in self.fields], dtype=np.float64)
        self.timeout_ns = int(timeout_ns)
        self._value: np.ndarray | None = None
        self._received_ns = 0
        self.received = self.rejected = self.clipped = 0

    @property
    def velocity(self) -> bool:
        return self.kind == 'velocity'

    def receive(self, msg, now_ns: int) -> str | None:
        """Take a command message; a warning to log, or None."""
        self.received += 1
        try:
            value = self._decode(msg)
        except ValueError as error:
            self.rejected += 1
            if self.velocity:
                self._value = None
                return f'{self.topic} rejected: {error}; zero velocity until a valid command'
            return f'{self.topic} rejected: {error}; the previous goal holds'
        clipped = np.minimum(np.maximum(value, self.low), self.high)
        self._value, self._received_ns = clipped, now_ns
        if np.array_equal(clipped, value):
            return None
        self.clipped += 1
        outside = [f'{f} {v:g} not in [{lo:g}, {hi:g}]' for f, v, lo, hi in
                   zip(self.fields, value, self.low, self.high, strict=True) if not lo <= v <= hi]
        return (f'{self.topic}: {", ".join(outside)} (the ranges the policy was trained on): '
                'clipped into them')

    def value(self, now_ns: int) -> np.ndarray:
        """The command in force at ``now_ns``; InputWaiting for a goal not received yet."""
        if self.velocity:
            if self._value is None or now_ns - self._received_ns > self.timeout_ns:
                return self.zero
            return self._value
        if self._value is None:
            raise InputWaiting(f'no goal on {self.topic} yet')
        return self._value

    @property
    def zero(self) -> np.ndarray:
        """The stand-still command: zero velocity, clipped into the trained ranges."""
        return np.minimum(np.maximum(np.zeros(len(self.fields)), self.low), self.high)

    def reset(self) -> None:
        self._value = None
        self._received_ns = 0

    def diagnostic_values(self, now_ns: int) -> dict:
        try:
            current = np.array2string(self.value(now_ns), precision=3)
        except InputWaiting:
            current = 'none yet'
        return {'command_topic': self.topic, 'command': current,
                'commands_received': self.received, 'commands_rejected': self.rejected,
                'commands_clipped': self.clipped}


class RobotInput(Input):
    """Observation of a robot policy from ``joint_states``, ``imu`` and ``goal`` / ``cmd_vel``.

    ``joint_names`` renames the policy's joints to the robot's (same order and count); the
    observation is in the policy's joint order whatever the message's order."""

    topic, msg_type = 'joint_states', JointState
    episode_starts = True

    def __init__(self, meta: dict, joint_names=None, task_file: str = '',
                 command_timeout_s: float = 0.5):
        from fpmd_core.robots.observer import ObserverError, RobotObserver

        robot = meta['robot']
        try:
            self.observer = RobotObserver(robot, task_file or None)
        except ObserverError as error:
            raise ConfigureError(f'this robot policy cannot run from joint_states: {error}') \
                from None
        model_joints = list(robot['joint_names'])
        self.joints = tuple(joint_names) if joint_names else tuple(model_joints)
        if len(self.joints) != len(model_joints):
            raise ConfigureError(
                f"parameter 'joint_names' has {len(self.joints)} names; this robot policy "
                f"needs {len(model_joints)}, in its order: {', '.join(model_joints)}")
        kind = robot['command']['kind']
        self.command = (CommandInput(robot['command'], int(command_timeout_s * 1e9))
                        if kind in messages.ROBOT_COMMAND_MESSAGES else None)
        self.notes: list[str] = []
        self._imu: tuple[object, int] | None = None  # (newest message, its arrival)
        self.reset()

    def reset(self) -> None:
        """Activation: no last action (zeros, as after a reset in training); a goal
        received earlier still holds, an old IMU message is stale by its arrival time."""
        self._last_action = np.zeros(self.observer.joints)
        self._pending_start: int | None = None
        self._last_stamp: int | None = None
        self._last_args: tuple | None = None

    # --- the other topics ----------------------------------------------------------------------

    def auxiliary_inputs(self) -> list[tuple[str, type, str, object]]:
        """(topic, message type, QoS kind 'sensor' | 'command', handler(msg, now_ns))."""
        inputs = []
        if self.observer.needs_imu:
            inputs.append(('imu', Imu, 'sensor', self.receive_imu))
        if self.command is not None:
            inputs.append((self.command.topic, self.command.msg_type, 'command',
                           self.receive_command))
        return inputs

    def receive_imu(self, msg, now_ns: int) -> None:
        self._imu = (msg, now_ns)  # checked when an observation uses it

    def receive_command(self, msg, now_ns: int) -> None:
        note = self.command.receive(msg, now_ns)
        if note:
            self.notes.append(note)

    def commanded(self, action: np.ndarray) -> None:
        self._last_action = self.observer.normalized_action(action)

    # --- the observation -----------------------------------------------------------------------

    def observation(self, msg, received_ns: int, state_timeout_ns: int) -> np.ndarray:
        stamp = messages.stamp_to_ns(msg.header.stamp)
        if self._pending_start is not None and (self._pending_start == 0
                                                or stamp >= self._pending_start):
            self._last_action = np.zeros(self.observer.joints)
            self._pending_start = None
        self._last_stamp, self._last_args = stamp, (msg, received_ns, state_timeout_ns)
        return self._build(msg, received_ns, state_timeout_ns)

    def _build(self, msg, received_ns: int, state_timeout_ns: int) -> np.ndarray:
        fields = messages.parse_joint_state(msg, self.joints, fields=('position', 'velocity'))
        imu = {}
        if self.observer.needs_imu:
            if self._imu is None:
                raise InputWaiting('no imu message yet')
            imu_msg, imu_ns = self._imu
            age = received_ns - imu_ns
            if age > state_timeout_ns:
                raise InputStale(f'newest imu is {age / 1e9:.3f} s older than the joint_states '
                                 f'(state_timeout_s {state_timeout_ns / 1e9:g})')
            imu['base_quat'], imu['base_ang_vel'] = messages.decode_imu(imu_msg)
        command = (self.command.value(received_ns) if self.command is not None
                   else np.zeros(3))
        return self.observer.observe(fields['position'], fields['velocity'], command,
                                     self._last_action, **imu)

    def episode_start(self, stamp_ns: int, latest_msg) -> np.ndarray | None:
        """The last action restarts at zeros at the joint_states stamped ``stamp_ns`` (0: the
        next one), as the training env's does at a reset. An announcement for the state already
        computed recomputes it; one older than that is too late and ignored."""
        if stamp_ns and self._last_stamp is not None and stamp_ns <= self._last_stamp:
            if stamp_ns < self._last_stamp or self._last_args[0] is not latest_msg:
                return None
            self._last_action = np.zeros(self.observer.joints)
            return self._build(*self._last_args)
        self._pending_start = stamp_ns
        return None

    def describe(self) -> str:
        others = [topic for topic, *_ in self.auxiliary_inputs()]
        return f'obs {self.observer.obs_dim}' + (f' (and {", ".join(others)})' if others else '')

    def diagnostic_values(self) -> dict:
        values = {'robot_joints': len(self.joints)}
        if self.command is not None:
            values.update(self.command.diagnostic_values(time.monotonic_ns()))
        return values
