"""``mujoco_sim``: one fpmd_core task behind ROS 2 topics (see docs/ROS_INTERFACE.md).

A thin adapter: the task, its physics, rewards, terminations and time limits all come from
:func:`fpmd_core.tasks.make_env` (with ``normalized_actions=False``: commands carry env units);
this node only moves numbers between that env and messages (:mod:`fpmd_ros.messages`).

Parameters (declared with descriptors; bad values are refused with the reason)
    ``task`` (str, read-only)            Gymnasium MuJoCo id or dm_control ``domain-task``.
    ``mode`` (str, read-only)            ``lockstep`` | ``realtime``.
    ``seed`` (int >= 0)                  seed of the episodes (rule below).
    ``realtime_factor`` (0.01..100)      realtime: sim seconds per wall second.
    ``command_timeout_s`` (0.001..3600)  realtime: older commands zero the controls.
    ``publish_clock`` (bool, read-only)  realtime: publish ``/clock`` (refused in lockstep).
    ``max_episode_steps`` (int >= 0, read-only)  0 keeps the task's own limit; counted in
                                         control steps, before ``action_repeat`` (as make_env).
    ``action_repeat`` (int >= 1, read-only)  control steps per env step: one command holds its
                                         action for this many control steps and is one env step
                                         (the paper's pixel tasks use 2). The control period
                                         (``task_spec(...).control_dt``) includes it.
    ``camera_enabled`` (bool, read-only)  publish camera images (``camera/*`` below). The
                                         offscreen OpenGL context is made at start; a machine
                                         without one refuses to start, naming MUJOCO_GL and the
                                         packages to install.
    ``image_width``, ``image_height`` (int 16..1024, read-only)  image size, default 84 x 84.
    ``camera`` (str, read-only)          MuJoCo camera name or id; ``-1`` is the free camera;
                                         empty: the task's default (fpmd_core default_camera).
                                         Unknown cameras are refused with the model's list.

Topics and services (relative names, so the node lives in a namespace such as ``env_0``)
    pub ``joint_states`` (sensor_msgs/JointState): hinge/slide joints, position = qpos,
        velocity = qvel, effort = ``data.qfrc_actuator`` (the generalised force the actuators
        applied during the step, so a zeroed command is visible from outside), stamped with sim
        time. Sim time keeps increasing across episodes (``/clock`` must never go backwards):
        the node's first state is at sim time 0, every env step advances it by one control
        period (``action_repeat`` physics control steps), and so does every later reset
        (``~/reset``, automatic, or after a failed step): a reset takes one control period.
        So sim time = (env steps + resets after the first) x control period, every state the
        node reaches has a stamp of its own, and a terminal state and the next episode's
        initial state (published in the same callback) are one period apart. In realtime mode
        the tick that ends an episode therefore moves sim time by two periods.
        ``joint_states``, ``observation`` and ``/clock`` describe the current state once per
        control step; after an automatic reset that is the new episode's initial state (the
        terminal observation is in the ``transition``). A ``~/reset`` also publishes them.
    pub ``observation`` (std_msgs/Float32MultiArray): the task observation; layout segments
        labelled by the task's observation terms.
    pub ``transition`` (std_msgs/Float64MultiArray, lockstep only): see fpmd_ros.messages.
        Its ``stamp`` is the sim time of its observation.
    pub ``camera/image_raw`` (sensor_msgs/Image, rgb8; with ``camera_enabled``): one frame of
        every state the node reaches in lockstep mode (each reset and each step, the terminal
        state of an episode included); in realtime mode one frame per control step, like
        ``observation`` (after an autoreset, the new episode's). Stamped with the state's sim
        time, so its
        ``header.stamp`` equals the ``stamp`` of the transition of the same state; frame_id is
        the camera's name (``camera`` for an unnamed or the free camera). In lockstep mode a
        state's frame is published before its transition. Rendered only while someone
        subscribes (fpmd_core.rendering.Camera, fast visuals: the same pixels as the in-process
        pixel env). QoS: lockstep RELIABLE KEEP_LAST 64 (as ``transition``: no frame may be
        lost); realtime RELIABLE KEEP_LAST 2 (best-effort readers match too).
    pub ``camera/camera_info`` (sensor_msgs/CameraInfo; with ``camera_enabled``): ideal pinhole
        intrinsics from the camera's vertical field of view (``model.vis.global_.fovy`` for the
        free camera), same stamp, frame_id and QoS as the frames, published at the same
        moments while someone subscribes to it.
    pub ``episode`` (std_msgs/Float64MultiArray, both modes, RELIABLE, KEEP_LAST 100): one
        summary per finished episode (terminated or truncated), published before the automatic
        reset: labelled segments ``episode`` (k), ``seed`` (its reset seed), ``return`` (sum of
        its rewards), ``length`` (env steps), ``terminated`` (1: terminated, 0: time limit); see
        fpmd_ros.messages. An episode cut short by ``~/reset`` or by a failed step has no
        summary. This is what a deployment rehearsal scores (python -m fpmd_ros.rehearsal).
    pub ``/clock`` (rosgraph_msgs/Clock, realtime with ``publish_clock``).
    sub ``commands`` (std_msgs/Float64MultiArray): the action in env units, actuator order.
        Values outside the actuator ranges are clamped by MuJoCo, exactly as in-process.
    srv ``~/reset`` (std_srvs/Trigger): starts the next episode; the response message reads
        ``episode <k> seed <s>``.
    srv ``~/set_pause`` (std_srvs/SetBool): realtime only; pauses/resumes the physics timer.
    ``joint_states``, ``observation`` and the camera topics are only built when someone
    subscribes.

Episodes and seeds
    Episodes are numbered k = 0, 1, ... over the node's life; episode k is reset with seed
    ``seed + k``, so a node is deterministic and comparable with an in-process env reset the
    same way. Setting ``seed`` at runtime restarts the sequence: the next episode uses the new
    ``seed + 0``, the one after ``seed + 1``, ... (the episode index keeps counting).
    The node resets once on start. Every episode end (terminated or truncated) is followed at
    once by an automatic reset, in both modes.

Lockstep (training)
    Physics advances only when a command arrives: one valid command -> one ``env.step`` ->
    exactly one ``transition``. Resets (on start, ``~/reset``, and automatic) publish a
    transition with ``step`` 0, reward 0, terminated 0, truncated 0 and the initial
    observation. A step that ends an episode publishes its terminal transition and then the next
    episode's step-0 transition: Gymnasium's SAME_STEP autoreset, with no service call per
    episode. With ``camera_enabled`` each transition is preceded by the frame of its state. A
    malformed command (wrong length, NaN, Inf, inconsistent layout) is rejected with a throttled
    warning and publishes nothing.

Realtime (deploy rehearsal)
    A steady-clock timer steps the physics every ``control_dt / realtime_factor`` wall seconds,
    holding the last valid command (zero-order hold). Without a command newer than
    ``command_timeout_s`` (steady clock, from its arrival) the controls are zero. Malformed
    commands are rejected (throttled warning) and the last valid one is kept. ``~/set_pause``
    stops and resumes stepping.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import rclpy
from rcl_interfaces.msg import (
    ParameterType,
    SetParametersResult,
)
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float32MultiArray, Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from fpmd_core.rendering import Camera, RenderError, UnknownCameraError, camera_id, camera_list
from fpmd_core.tasks import TaskError, default_camera, make_env, mujoco_handles, task_spec
from fpmd_ros import messages
from fpmd_ros.params import declare_all
from fpmd_ros.params import descriptor as _descriptor

# isort: split
# mujoco after fpmd_core: importing fpmd_core settles MUJOCO_GL (egl on a machine without a
# display), and mujoco reads MUJOCO_GL once, when it is imported.
import mujoco

NODE_NAME = 'mujoco_sim'
MODES = ('lockstep', 'realtime')

# --- QoS, chosen per stream ---------------------------------------------------------------------
# Lockstep commands and transitions: every message is one env step, so none may be lost.
# RELIABLE + KEEP_LAST(64): a trainer has at most one command and two transitions (terminal +
# next step 0) in flight per sim, so 64 never overflows, while KEEP_LAST (unlike KEEP_ALL) can
# never block the publisher on a stalled reader. VOLATILE: a late joiner must not replay history.
LOCKSTEP_QOS = QoSProfile(depth=64, history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
# Realtime commands: only the newest matters (zero-order hold). A BEST_EFFORT reader with depth 1
# matches both reliable publishers (the policy_controller's) and best-effort ones.
REALTIME_COMMAND_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                                  reliability=ReliabilityPolicy.BEST_EFFORT,
                                  durability=DurabilityPolicy.VOLATILE)
# Episode summaries: rare and each one counts (a rehearsal scores them): reliable, and deep
# enough that a slow reader misses none.
EPISODE_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# joint_states / observation / clock are sensor streams. They are *offered* RELIABLE on purpose: a
# reliable writer matches reliable and best-effort readers alike (a best-effort writer would
# silently never match a reliable reader such as robot_state_publisher's), and a reader that
# wants sensor-data behaviour (no retransmission, lowest latency) simply subscribes BEST_EFFORT,
# which is what the link then does. KEEP_LAST never blocks the physics loop.
STATE_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
CLOCK_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
# Camera topics. Lockstep: LOCKSTEP_QOS, like the transitions they pair with: a pixel trainer
# needs the frame of every transition, so none may be lost (64 frames of 84x84 are 1.4 MB).
# Realtime: a sensor stream like joint_states, offered RELIABLE for the same reason (reliable
# and best-effort readers both match), but only 2 deep: a controller wants the newest frame, and
# a deep reliable history of images would only queue stale frames behind a slow reader.
CAMERA_REALTIME_QOS = QoSProfile(depth=2, history=HistoryPolicy.KEEP_LAST,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.VOLATILE)

_LOG_THROTTLE_S = 2.0
_JOINT_TYPES = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))


class SimParameterError(ValueError):
    """A mujoco_sim parameter has an invalid value; the message names it and what is expected."""


def resolve_camera(model, camera: str) -> int:
    """The id of ``camera`` (a name, an id, or -1 for the free camera) in ``model``; raises
    SimParameterError naming the model's cameras when there is no such camera."""
    try:
        return camera_id(model, camera)
    except UnknownCameraError:
        raise SimParameterError(
            f"parameter 'camera' is {camera.strip()!r}; the model has no such camera. Expected -1 "
            f"(the free camera) or one of: {camera_list(model) or 'none (only -1)'}") from None


# name -> (default, descriptor)
PARAMETERS = {
    'task': ('InvertedPendulum-v5', _descriptor(
        'Task id: a Gymnasium MuJoCo id (e.g. Hopper-v5) or a dm_control domain-task.',
        ParameterType.PARAMETER_STRING, read_only=True,
        constraints='a task fpmd_core.tasks.make_env knows')),
    'mode': ('lockstep', _descriptor(
        'lockstep: physics steps once per command and publishes a transition (training); '
        'realtime: physics steps at wall-clock rate x realtime_factor (deployment rehearsal).',
        ParameterType.PARAMETER_STRING, read_only=True, constraints='one of: lockstep, realtime')),
    'seed': (0, _descriptor(
        'Episode k is reset with seed + k; setting it restarts the sequence at the next reset.',
        ParameterType.PARAMETER_INTEGER, int_range=(0, 2**31 - 1))),
    'realtime_factor': (1.0, _descriptor(
        'Realtime mode: simulated seconds per wall-clock second.',
        ParameterType.PARAMETER_DOUBLE, float_range=(0.01, 100.0))),
    'command_timeout_s': (0.5, _descriptor(
        'Realtime mode: a command older than this (wall clock) zeroes the controls.',
        ParameterType.PARAMETER_DOUBLE, float_range=(0.001, 3600.0))),
    'publish_clock': (False, _descriptor(
        'Realtime mode: publish the simulation time on /clock (for use_sim_time).',
        ParameterType.PARAMETER_BOOL, read_only=True)),
    'max_episode_steps': (0, _descriptor(
        'Episode length limit in control steps (before action_repeat); 0 keeps the task '
        'default.',
        ParameterType.PARAMETER_INTEGER, read_only=True, int_range=(0, 10**9))),
    'action_repeat': (1, _descriptor(
        'Control steps per env step: each command is held for this many control steps and is '
        'one env step (one transition).',
        ParameterType.PARAMETER_INTEGER, read_only=True, int_range=(1, 1000))),
    'camera_enabled': (False, _descriptor(
        'Publish camera/image_raw (rgb8) and camera/camera_info, rendered offscreen only while '
        'someone subscribes; needs an OpenGL context (MUJOCO_GL=egl or osmesa).',
        ParameterType.PARAMETER_BOOL, read_only=True)),
    'image_width': (84, _descriptor(
        'Camera image width in pixels.',
        ParameterType.PARAMETER_INTEGER, read_only=True, int_range=(16, 1024))),
    'image_height': (84, _descriptor(
        'Camera image height in pixels.',
        ParameterType.PARAMETER_INTEGER, read_only=True, int_range=(16, 1024))),
    'camera': ('', _descriptor(
        'MuJoCo camera name or id (-1: the free camera); empty: the task default (camera 0 for '
        'dm_control, 2 for quadruped, the free camera for Gymnasium tasks).',
        ParameterType.PARAMETER_STRING, read_only=True,
        constraints="empty, -1, or a camera id or name of the task's model")),
}

_UNNAMED_CAMERA_FRAME = 'camera'


def check_parameter(name: str, value, mode: str | None = None) -> str | None:
    """Why ``value`` is invalid for parameter ``name`` (None if valid). Ranges, types and
    read-only flags are enforced by the descriptors; this adds what descriptors cannot say."""
    if name == 'mode' and value not in MODES:
        return f"parameter 'mode' is {value!r}; expected one of: {', '.join(MODES)}"
    if name == 'task' and not str(value).strip():
        return "parameter 'task' is empty; expected a task id such as Hopper-v5 or cheetah-run"
    if name == 'publish_clock' and value and mode == 'lockstep':
        return ("parameter 'publish_clock' is true in lockstep mode; /clock is only published "
                "in realtime mode")
    return None


class MujocoSimNode(Node):
    """The ``mujoco_sim`` node; raises :class:`SimParameterError` for invalid parameters."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        try:
            self._setup()
        except BaseException:
            self.destroy_node()
            raise

    # --- construction ------------------------------------------------------------------------

    def _setup(self) -> None:
        values = declare_all(self, PARAMETERS, SimParameterError)
        for name, value in values.items():
            reason = check_parameter(name, value, values['mode'])
            if reason:
                raise SimParameterError(reason)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self.mode = values['mode']
        self._seed = int(values['seed'])
        self._command_timeout_ns = int(values['command_timeout_s'] * 1e9)
        try:
            self._env = make_env(values['task'], values['max_episode_steps'],
                                 normalized_actions=False,
                                 action_repeat=values['action_repeat'])
        except TaskError as error:
            raise SimParameterError(f"parameter 'task': {error}") from error
        self.spec = task_spec(self._env, values['task'])
        self._dt_ns = int(round(self.spec.control_dt * 1e9))
        model, _ = mujoco_handles(self._env)
        joints = [j for j in range(model.njnt) if int(model.jnt_type[j]) in _JOINT_TYPES]
        self._qpos_index = np.asarray(model.jnt_qposadr[joints], dtype=np.intp)
        self._dof_index = np.asarray(model.jnt_dofadr[joints], dtype=np.intp)
        self._zero_action = np.zeros(self.spec.act_dim)
        self._camera_id = resolve_camera(model, values['camera'] or
                                         default_camera(values['task']))

        # Episode bookkeeping (see the module docstring for the seed rule).
        self.episode_index = -1
        self.step_index = 0
        self.episode_seed = 0
        self.episode_return = 0.0
        self._seed_origin_episode = 0
        self._seed_restart = False
        self.sim_time_ns = 0
        self.rejected_commands = 0
        self.applied_action = self._zero_action.copy()

        lockstep = self.mode == 'lockstep'
        self._joint_pub = self.create_publisher(JointState, 'joint_states', STATE_QOS)
        self._obs_pub = self.create_publisher(Float32MultiArray, 'observation', STATE_QOS)
        self._transition_pub = (self.create_publisher(Float64MultiArray, 'transition',
                                                      LOCKSTEP_QOS) if lockstep else None)
        self._episode_pub = self.create_publisher(Float64MultiArray, 'episode', EPISODE_QOS)
        self._clock_pub = (self.create_publisher(ClockMsg, '/clock', CLOCK_QOS)
                           if values['publish_clock'] else None)
        self.frames_rendered = 0
        self._camera: Camera | None = None
        self._render_thread: ThreadPoolExecutor | None = None
        self._image_pub = self._info_pub = None
        if values['camera_enabled']:
            self._setup_camera(model, values['image_width'], values['image_height'],
                               LOCKSTEP_QOS if lockstep else CAMERA_REALTIME_QOS)
        self.create_subscription(Float64MultiArray, 'commands', self._on_command,
                                 LOCKSTEP_QOS if lockstep else REALTIME_COMMAND_QOS)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.create_service(SetBool, '~/set_pause', self._on_set_pause)

        self.paused = False
        self._held_action: np.ndarray | None = None
        self._held_since_ns = 0
        self._timed_out = True
        self._timer = None
        self._reset_episode()
        if not lockstep:
            # Steady clock: the node may run with use_sim_time (and even drive /clock itself).
            self._timer = self.create_timer(
                self._period_s(values['realtime_factor']), self._on_tick,
                clock=Clock(clock_type=ClockType.STEADY_TIME))
        camera = (f', camera {self._camera_frame_id} ({self._camera_id}) '
                  f"{values['image_width']}x{values['image_height']}"
                  if values['camera_enabled'] else '')
        self.get_logger().info(
            f"{self.spec.id} in {self.mode} mode: obs {self.spec.obs_dim}, actions "
            f"{self.spec.act_dim} ({', '.join(self.spec.actuator_names)}), control period "
            f"{self.spec.control_dt:g} s (action repeat {self.spec.action_repeat}), seed "
            f"{self._seed}{camera}")

    def _setup_camera(self, model, width: int, height: int, qos: QoSProfile) -> None:
        # The camera lives in a thread of its own, where it is made, renders and is closed: an
        # EGL context current in one thread cannot be made current in another, and MuJoCo frees
        # a renderer's GL objects in whatever context is current in the closing thread. The
        # executor's threads (and the other cameras of this process) never touch ours. Made
        # here, so a machine without OpenGL fails at start, not at the first subscriber.
        self._render_thread = ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix=f'{self.get_name()} camera')
        self._camera = self._render_thread.submit(Camera, model, width, height,
                                                  self._camera_id).result()
        name = model.camera(self._camera_id).name if self._camera_id >= 0 else ''
        self._camera_frame_id = name or _UNNAMED_CAMERA_FRAME
        fovy = (float(model.cam_fovy[self._camera_id]) if self._camera_id >= 0
                else float(model.vis.global_.fovy))
        self._camera_info = messages.camera_info(0, self._camera_frame_id, width, height, fovy)
        self._image_pub = self.create_publisher(Image, 'camera/image_raw', qos)
        self._info_pub = self.create_publisher(CameraInfo, 'camera/camera_info', qos)

    def image_subscription_count(self) -> int:
        """Matched readers of ``camera/image_raw`` (0 without ``camera_enabled``)."""
        return self._image_pub.get_subscription_count() if self._image_pub is not None else 0

    def _period_s(self, realtime_factor: float) -> float:
        return self.spec.control_dt / realtime_factor

    # --- parameters at runtime -----------------------------------------------------------------

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            reason = check_parameter(parameter.name, parameter.value, self.mode)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, parameters) -> None:
        for parameter in parameters:
            if parameter.name == 'seed':
                self._seed = int(parameter.value)
                self._seed_restart = True
            elif parameter.name == 'command_timeout_s':
                self._command_timeout_ns = int(parameter.value * 1e9)
            elif parameter.name == 'realtime_factor' and self._timer is not None:
                self._timer.timer_period_ns = int(round(self._period_s(parameter.value) * 1e9))

    # --- episodes --------------------------------------------------------------------------------

    def _episode_seed(self, episode: int) -> int:
        return self._seed + episode - self._seed_origin_episode

    def _reset_episode(self, publish_state: bool = True) -> int:
        if self.episode_index >= 0:
            # A reset takes one control period, so the new initial state never shares a stamp
            # with the state before it (pixel trainers pair frames and transitions by stamp).
            self.sim_time_ns += self._dt_ns
        self.episode_index += 1
        if self._seed_restart:
            self._seed_origin_episode, self._seed_restart = self.episode_index, False
        seed = self._episode_seed(self.episode_index)
        observation, _ = self._env.reset(seed=seed)
        self.step_index = 0
        self.episode_seed = seed
        self.episode_return = 0.0
        self._publish_transition(observation, 0.0, False, False)
        self._observation = observation
        if publish_state:
            self._publish_state()
        return seed

    def _env_step(self, action: np.ndarray) -> None:
        """One env step with ``action`` (env units), its messages, and the autoreset."""
        try:
            observation, reward, terminated, truncated, _ = self._env.step(action)
        except Exception as error:  # e.g. dm_control PhysicsError: restart, stay alive
            self.get_logger().error(
                f'episode {self.episode_index} step {self.step_index + 1} failed ({error!r}); '
                'resetting', throttle_duration_sec=_LOG_THROTTLE_S)
            self._reset_episode()
            return
        self.applied_action = action
        self.step_index += 1
        self.episode_return += float(reward)
        self.sim_time_ns += self._dt_ns
        self._publish_transition(observation, reward, terminated, truncated)
        self._observation = observation
        if terminated or truncated:
            self._episode_pub.publish(messages.encode_episode_summary(
                self.episode_index, self.episode_seed, self.episode_return, self.step_index,
                terminated))
            self._reset_episode(publish_state=False)
        self._publish_state()

    def _publish_transition(self, observation, reward: float, terminated: bool,
                            truncated: bool) -> None:
        """Lockstep: a new state's camera frame, then its transition, so a trainer that has a
        transition already has its frame or is about to receive it. Every state has a frame,
        the terminal one of an episode included (it is the last transition's observation)."""
        if self._transition_pub is not None:
            self._publish_frame()
            self._transition_pub.publish(messages.encode_transition(
                observation, reward, terminated, truncated, self.step_index,
                self.episode_index, self.sim_time_ns))

    def _publish_frame(self) -> None:
        if self._image_pub is None:
            return
        if self._image_pub.get_subscription_count():
            try:
                frame = self._render()
            except Exception as error:  # the GL stack raises many types; keep stepping
                self.get_logger().error(f'camera: rendering failed ({error!r}); no frame',
                                        throttle_duration_sec=_LOG_THROTTLE_S)
            else:
                self._image_pub.publish(messages.encode_image(frame, self.sim_time_ns,
                                                              self._camera_frame_id))
        if self._info_pub.get_subscription_count():
            messages.stamp_from_ns(self._camera_info.header.stamp, self.sim_time_ns)
            self._info_pub.publish(self._camera_info)

    def _render(self) -> np.ndarray:
        # The physics waits for the frame, so the camera thread reads a state nobody changes.
        _, data = mujoco_handles(self._env)
        frame = self._render_thread.submit(self._camera.render, data).result()
        self.frames_rendered += 1
        return frame

    def _publish_state(self) -> None:
        """The current state, once per control step (after an autoreset: the new episode's)."""
        if self._transition_pub is None:
            # Realtime: one frame per control step like the other sensor streams; a terminal
            # frame would make a controller with trigger:=observation act twice in one tick.
            self._publish_frame()
        if self._obs_pub.get_subscription_count():
            self._obs_pub.publish(messages.to_float32_multiarray(self._observation,
                                                                 self.spec.obs_terms))
        if self._joint_pub.get_subscription_count():
            _, data = mujoco_handles(self._env)
            self._joint_pub.publish(messages.joint_state(
                self.sim_time_ns, self.spec.joint_names,
                data.qpos[self._qpos_index], data.qvel[self._dof_index],
                data.qfrc_actuator[self._dof_index]))
        if self._clock_pub is not None:
            clock = ClockMsg()
            messages.stamp_from_ns(clock.clock, self.sim_time_ns)
            self._clock_pub.publish(clock)

    # --- callbacks (each short: at most one env step) -------------------------------------------

    def _on_command(self, msg: Float64MultiArray) -> None:
        try:
            action = messages.decode_command(msg, self.spec.act_dim)
        except ValueError as error:
            self.rejected_commands += 1
            self.get_logger().warning(
                f'rejected command ({error}); ' + ('no step taken' if self.mode == 'lockstep'
                                                   else 'keeping the last valid command'),
                throttle_duration_sec=_LOG_THROTTLE_S)
            return
        if self.mode == 'lockstep':
            self._env_step(action)
        else:
            self._held_action, self._held_since_ns = action, time.monotonic_ns()

    def _on_tick(self) -> None:
        if self.paused:
            return
        fresh = (self._held_action is not None and
                 time.monotonic_ns() - self._held_since_ns <= self._command_timeout_ns)
        if not fresh and not self._timed_out and self._held_action is not None:
            self.get_logger().warning('command timed out: controls zeroed',
                                      throttle_duration_sec=_LOG_THROTTLE_S)
        self._timed_out = not fresh
        self._env_step(self._held_action if fresh else self._zero_action)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        seed = self._reset_episode()
        response.success = True
        response.message = f'episode {self.episode_index} seed {seed}'
        return response

    def _on_set_pause(self, request: SetBool.Request, response: SetBool.Response):
        if self.mode != 'realtime':
            response.success = False
            response.message = 'set_pause applies to realtime mode only (lockstep waits anyway)'
            return response
        self.paused = bool(request.data)
        response.success = True
        response.message = 'paused' if self.paused else 'running'
        return response

    def destroy_node(self) -> None:
        camera = getattr(self, '_camera', None)
        render_thread = getattr(self, '_render_thread', None)
        if render_thread is not None:
            if camera is not None:
                render_thread.submit(camera.close).result()
            render_thread.shutdown()
        self._camera = self._render_thread = None
        env = getattr(self, '_env', None)
        if env is not None:
            env.close()
            self._env = None
        super().destroy_node()


def main(args=None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = MujocoSimNode()
        rclpy.spin(node)
    except (SimParameterError, RenderError) as error:
        # Exit code 2: a respawn cannot fix a parameter or a missing OpenGL stack.
        rclpy.logging.get_logger(NODE_NAME).fatal(str(error))
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # SIGTERM/SIGINT shut the context down; spin may then fail inside the wait set instead
        # of raising ExternalShutdownException. That is a normal stop, anything else is not.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
