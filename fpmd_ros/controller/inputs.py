"""The policy_controller's input adapters: one observation source per ``observation_mode``
(its topic, message type, and message -> observation), and the joint_states mapping. Pure Python
over message objects (no rclpy node), tested without DDS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray

from fpmd_ros import messages
from fpmd_ros.controller.rules import ConfigureError
from fpmd_ros.interface import OBSERVATION_MODES, builds_robot_observation


@dataclass(frozen=True)
class JointObservationMap:
    """How a JointState becomes the observation: positions of ``position_joints`` then
    velocities of ``joints`` (see the policy_controller docstring)."""

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


# --- inputs by observation mode ---------------------------------------------------------------

class InputWaiting(ValueError):
    """An input the observation needs has not arrived yet (the safety state is waiting)."""


class InputStale(ValueError):
    """An input the observation needs is older than ``state_timeout_s`` (stale)."""


class Input:
    """One observation source: its topic and type, and message -> observation (ValueError).

    ``observation`` is called once per new message, from the control step (never from the
    subscription callback), with the message's steady-clock arrival time and the current
    ``state_timeout_s`` in ns; stateless inputs ignore both."""

    topic: str
    msg_type: type
    episode_starts = False  # whether it listens to episode_start (see ImageInput)

    def observation(self, msg, received_ns: int, state_timeout_ns: int) -> np.ndarray:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget what earlier messages left behind (on activate)."""

    def episode_start(self, stamp_ns: int, latest_msg) -> np.ndarray | None:
        """An episode starts at the input stamped ``stamp_ns``; the new observation of
        ``latest_msg`` if that changes it now (see ImageInput), else None."""
        return None

    def describe(self) -> str:
        raise NotImplementedError

    def diagnostic_values(self) -> dict:
        return {}

    notes: Sequence[str] = ()  # warnings for the node to log (an input appends, the node drains)

    def auxiliary_inputs(self) -> list[tuple[str, type, str, object]]:
        """Further topics the observation needs besides ``topic``: (topic, message type, QoS
        kind 'sensor' | 'command', handler(msg, now_ns)). None for most inputs."""
        return []

    def commanded(self, action: np.ndarray) -> None:
        """The command just published (an input whose observation has the last action)."""


class VectorInput(Input):
    topic, msg_type = 'observation', Float32MultiArray

    def __init__(self, meta: dict):
        self.obs_dim = meta['obs_dim']
        self.obs_terms = [(str(name), int(size)) for name, size in meta['obs_terms']]

    def observation(self, msg, received_ns: int, state_timeout_ns: int) -> np.ndarray:
        return messages.decode_observation(msg, self.obs_dim, self.obs_terms)

    def describe(self) -> str:
        return f'obs {self.obs_dim}'


class JointStateInput(Input):
    topic, msg_type = 'joint_states', JointState

    def __init__(self, mapping: JointObservationMap):
        self.mapping = mapping

    def observation(self, msg, received_ns: int, state_timeout_ns: int) -> np.ndarray:
        return self.mapping.observation(msg)

    def describe(self) -> str:
        return f'obs {self.mapping.size}'


class ImageInput(Input):
    """Camera frames (sensor_msgs/Image, rgb8, the model's H x W) stacked as in training.

    Each new message that a control step sees is decoded and pushed into one
    :class:`fpmd_core.frames.FrameStack` (the training env's definition: oldest frame first,
    the newest in the last 3 channels); a message is never pushed twice, so ticks without a new
    image do not fill the stack with copies. A frame that fails to decode raises ValueError and
    does not enter the stack. The ONNX graph does the scaling (/255 - 0.5) and the encoder, so
    the stack goes to the policy as raw uint8.

    When the stack restarts (all k slots filled with one frame, as the training env does at a
    reset: frames across an episode boundary or a gap are not the consecutive steps the policy
    was trained on):

    - the first frame after activation;
    - a frame that arrives more than ``state_timeout_s`` after the previous good one (stale
      input, a long run of malformed frames);
    - the first frame of an episode, announced on ``episode_start`` (std_msgs/Header, what
      mujoco_sim publishes at every reset): the frame whose ``header.stamp`` equals the
      announced stamp, or the first frame stamped after it if that one was lost. A zero stamp
      means the next frame (for a user or a robot that has no stamp to give:
      ``ros2 topic pub --once episode_start std_msgs/msg/Header {}``). An announcement that
      arrives after its frame was already stacked still restarts the stack if that frame is
      the newest one (:meth:`episode_start` returns the new stack, and the controller acts on
      it again at once); one older than the newest frame is too late and ignored.
    """

    topic, msg_type = 'image_raw', Image
    episode_starts = True
    ANNOUNCEMENTS_KEPT = 16  # announced starts not yet reached (a few episodes ahead at most)

    def __init__(self, meta: dict, shape: tuple[int, ...]):
        from fpmd_core.frames import FrameStack

        # fpmd_core.runtime.validate_metadata checked obs_dtype and that channels = 3 x frame_stack.
        self.height, self.width, _ = shape
        k = meta['frame_stack']
        self.frame_stack = k
        self._frames = FrameStack(k)
        self._last_good_ns: int | None = None
        self._announced: list[int] = []  # episode-start stamps not reached yet, ascending
        self._start_next = False  # a zero-stamp announcement: the next frame starts an episode
        self._newest_msg = None  # the message of the newest stacked frame, and that frame
        self._newest_frame: np.ndarray | None = None
        self._newest_stamp: int | None = None
        self._previous_stamp: int | None = None  # the stamp of the frame stacked before it
        self.frames_stacked = 0
        self.refills = 0
        self.episode_restarts = 0

    def observation(self, msg, received_ns: int, state_timeout_ns: int) -> np.ndarray:
        frame = messages.decode_image(msg, self.height, self.width)
        stamp = messages.stamp_to_ns(msg.header.stamp)
        gap = self._last_good_ns is None or received_ns - self._last_good_ns > state_timeout_ns
        new_episode = self._reaches_announced_start(stamp) or self._start_next
        self._start_next = False
        if gap or new_episode:
            stack = self._frames.reset(frame)
            self.refills += 1
            self.episode_restarts += new_episode
        else:
            stack = self._frames.push(frame)
        self._last_good_ns = received_ns
        self._newest_msg, self._newest_frame = msg, frame
        self._previous_stamp, self._newest_stamp = self._newest_stamp, stamp
        self.frames_stacked += 1
        return stack

    def _reaches_announced_start(self, stamp: int) -> bool:
        """Whether an announced start S lies in (the previous frame's stamp, ``stamp``]; the
        starts reached are forgotten."""
        reached = [s for s in self._announced if s <= stamp]
        if not reached:
            return False
        self._announced = [s for s in self._announced if s > stamp]
        return self._newest_stamp is None or max(reached) > self._newest_stamp

    def episode_start(self, stamp_ns: int, latest_msg) -> np.ndarray | None:
        """An episode starts at the frame stamped ``stamp_ns`` (0: the next frame). Returns the
        restarted stack when that frame is already the newest stacked one and is ``latest_msg``
        (the announcement came late), else None (it applies when the frame comes)."""
        if stamp_ns == 0:
            self._start_next = True
            return None
        if self._newest_stamp is None or stamp_ns > self._newest_stamp:
            if stamp_ns not in self._announced:
                self._announced = sorted([*self._announced, stamp_ns])[-self.ANNOUNCEMENTS_KEPT:]
            return None
        late_for_newest = self._previous_stamp is None or stamp_ns > self._previous_stamp
        if not late_for_newest or self._newest_msg is not latest_msg:
            return None  # older than the newest frame: too late to change anything
        self.refills += 1
        self.episode_restarts += 1
        return self._frames.reset(self._newest_frame)

    def reset(self) -> None:
        self._last_good_ns = None
        self._start_next = False

    def describe(self) -> str:
        return (f'obs {self.height}x{self.width}x{3 * self.frame_stack} '
                f'({self.frame_stack} stacked rgb8 frames)')

    def diagnostic_values(self) -> dict:
        return {'image_size': f'{self.width}x{self.height}', 'frame_stack': self.frame_stack,
                'frames_stacked': self.frames_stacked, 'frame_stack_refills': self.refills,
                'episode_restarts': self.episode_restarts}


def make_input(mode: str, meta: dict, joint_names, exclude_positions, task_file: str = '',
               command_timeout_s: float = 0.5) -> Input:
    """The input for ``mode``, or ConfigureError when the mode does not fit the policy (a pixel
    policy needs ``image``; ``image`` needs a pixel policy). A robot policy (metadata ``robot``)
    in ``joint_states`` mode builds its observation as its metadata describes
    (:class:`~fpmd_ros.controller.robot_input.RobotInput`)."""
    from fpmd_core.runtime import observation_shape

    shape = observation_shape(meta)
    pixels = len(shape) == 3
    if mode in ('observation', 'joint_states') and pixels:
        raise ConfigureError(
            f"parameter 'observation_mode' is {mode!r} but the policy takes camera frames "
            f"(obs_shape {list(shape)}, frame_stack {meta.get('frame_stack')}); expected "
            "'image'")
    if mode == 'observation':
        return VectorInput(meta)
    if builds_robot_observation(mode, meta):
        from fpmd_ros.controller.robot_input import RobotInput

        if exclude_positions:
            raise ConfigureError(
                "parameter 'exclude_joint_positions' is set, but this robot policy's metadata "
                'describes its observation; expected it unset')
        return RobotInput(meta, joint_names, task_file, command_timeout_s)
    if mode == 'joint_states':
        return JointStateInput(JointObservationMap.from_parameters(
            joint_names, exclude_positions, meta))
    if mode == 'image':
        if not pixels:
            raise ConfigureError(
                "parameter 'observation_mode' is 'image' but the policy takes a state vector "
                f"(obs_shape {list(shape)}); expected 'observation' or 'joint_states' for this "
                'policy, or a pixel policy (trained with task.pixels) for image')
        return ImageInput(meta, shape)
    raise ConfigureError(f"parameter 'observation_mode' is {mode!r}; expected one of: "
                         f"{', '.join(OBSERVATION_MODES)}")
