"""The ``mujoco_sim`` node: wires :class:`~fpmd_ros.sim.episodes.Episodes` and the camera to
topics, services and parameters (behaviour: the fpmd_ros.sim package docstring)."""


from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from rcl_interfaces.msg import (
    ParameterType,
    SetParametersResult,
)
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, Imu, JointState
from std_msgs.msg import Float32MultiArray, Float64MultiArray, Header
from std_srvs.srv import SetBool, Trigger

from fpmd_core.rendering import Camera, RenderError, UnknownCameraError, camera_id, camera_list
from fpmd_core.robots import RobotEnv
from fpmd_core.runtime import rest_action
from fpmd_core.tasks import TaskError, default_camera, make_env, mujoco_handles, task_spec
from fpmd_ros import messages
from fpmd_ros.interface import SIM_NODE_NAME
from fpmd_ros.node_main import InvalidParameterError
from fpmd_ros.params import declare_all
from fpmd_ros.params import descriptor as _descriptor
from fpmd_ros.qos import (
    APPLIED_COMMAND_QOS,
    CAMERA_REALTIME_QOS,
    CLOCK_QOS,
    EPISODE_QOS,
    EPISODE_START_QOS,
    LOCKSTEP_QOS,
    REALTIME_COMMAND_QOS,
    ROBOT_COMMAND_QOS,
    STATE_QOS,
)
from fpmd_ros.sim.episodes import Episodes

# isort: split
# mujoco after fpmd_core: importing fpmd_core settles MUJOCO_GL (egl on a machine without a
# display), and mujoco reads MUJOCO_GL once, when it is imported.
import mujoco

NODE_NAME = SIM_NODE_NAME
MODES = ('lockstep', 'realtime')

_LOG_THROTTLE_S = 2.0
_JOINT_TYPES = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))


class SimParameterError(InvalidParameterError):
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
        'Task id: a Gymnasium MuJoCo id (e.g. Hopper-v5), a dm_control domain-task or a '
        'robot task file (e.g. sim/arm_reach.yaml; an absolute path is safest).',
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
        values = declare_all(self, PARAMETERS, SimParameterError, SIM_NODE_NAME)
        for name, value in values.items():
            reason = check_parameter(name, value, values['mode'])
            if reason:
                raise SimParameterError(reason)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self.mode = values['mode']
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
        # The joints spec.joint_names lists: a robot task file's actuated joints in action
        # order (by name), or every hinge and slide joint of a benchmark model (some unnamed).
        joints = ([model.joint(name).id for name in self.spec.joint_names]
                  if self.spec.robot is not None else
                  [j for j in range(model.njnt) if int(model.jnt_type[j]) in _JOINT_TYPES])
        self._qpos_index = np.asarray(model.jnt_qposadr[joints], dtype=np.intp)
        self._dof_index = np.asarray(model.jnt_dofadr[joints], dtype=np.intp)
        # What the actuators get without a fresh command: zeros, or a position robot's pose.
        self._rest_action = rest_action(self.spec.robot, self.spec.act_dim)
        self._camera_id = resolve_camera(model, values['camera'] or
                                         default_camera(values['task']))

        self.episodes = Episodes(self._env, values['seed'], self._dt_ns)
        # One clock per configuration (the Clock section of the package docstring).
        self._stamps_are_sim_time = self.mode == 'lockstep' or values['publish_clock']
        self.state_stamp_ns = 0  # the stamp of the current state
        self.rejected_commands = 0
        self.applied_action = self._rest_action.copy()

        lockstep = self.mode == 'lockstep'
        self._joint_pub = self.create_publisher(JointState, 'joint_states', STATE_QOS)
        self._obs_pub = self.create_publisher(Float32MultiArray, 'observation', STATE_QOS)
        self._transition_pub = (self.create_publisher(Float64MultiArray, 'transition',
                                                      LOCKSTEP_QOS) if lockstep else None)
        self._episode_pub = self.create_publisher(Float64MultiArray, 'episode', EPISODE_QOS)
        self._episode_start_pub = self.create_publisher(Header, 'episode_start',
                                                        EPISODE_START_QOS)
        self._applied_pub = (None if lockstep else self.create_publisher(
            Float64MultiArray, '~/applied_command', APPLIED_COMMAND_QOS))
        self._clock_pub = (self.create_publisher(ClockMsg, '/clock', CLOCK_QOS)
                           if values['publish_clock'] else None)
        self._setup_robot_topics()
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
        self._held_steps = 0  # steps that have applied the held command so far
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
            f"{values['seed']}{camera}")

    def _setup_robot_topics(self) -> None:
        """Robot task files: the base IMU (floating base), the command in force and the
        subscription that overrides it (the kind of command the task has, if any)."""
        inner = self._env.unwrapped
        self._robot = inner if isinstance(inner, RobotEnv) else None
        self._imu_pub = self._command_pub = None
        self.rejected_overrides = 0
        self.command_overrides = 0  # accepted goal / cmd_vel messages
        if self._robot is None:
            return
        if self._robot.robot.floating:
            self._imu_pub = self.create_publisher(Imu, 'imu', STATE_QOS)
        self._command_message = messages.ROBOT_COMMAND_MESSAGES.get(self._robot.task.command.kind)
        if self._command_message is not None:
            topic, msg_type = self._command_message.topic, self._command_message.msg_type
            self._command_pub = self.create_publisher(msg_type, f'~/{topic}', STATE_QOS)
            self.create_subscription(msg_type, topic, self._on_override, ROBOT_COMMAND_QOS)

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
                self.episodes.set_seed(parameter.value)
            elif parameter.name == 'command_timeout_s':
                self._command_timeout_ns = int(parameter.value * 1e9)
            elif parameter.name == 'realtime_factor' and self._timer is not None:
                self._timer.timer_period_ns = int(round(self._period_s(parameter.value) * 1e9))

    # --- episodes --------------------------------------------------------------------------------

    # What tests and tools read: the episode bookkeeping.
    @property
    def episode_index(self) -> int:
        return self.episodes.episode_index

    @property
    def step_index(self) -> int:
        return self.episodes.step_index

    @property
    def sim_time_ns(self) -> int:
        return self.episodes.sim_time_ns

    def _new_state_stamp(self) -> int:
        """The stamp of the state just reached (sim time, or the node clock made strictly
        increasing: two states never share a stamp)."""
        if self._stamps_are_sim_time:
            self.state_stamp_ns = self.episodes.sim_time_ns
        else:
            now = max(self.get_clock().now().nanoseconds, 0)
            self.state_stamp_ns = max(now, self.state_stamp_ns + 1)
        return self.state_stamp_ns

    def _reset_episode(self, publish_state: bool = True) -> int:
        seed = self.episodes.reset()
        stamp = self._new_state_stamp()
        start = Header()
        messages.stamp_from_ns(start.stamp, stamp)
        self._episode_start_pub.publish(start)  # before any message of the new state
        self._publish_transition(self.episodes.observation, 0.0, False, False)
        if publish_state:
            self._publish_state()
        return seed

    def _env_step(self, action: np.ndarray) -> None:
        """One env step with ``action`` (env units), its messages, and the autoreset."""
        episodes = self.episodes
        result = episodes.step(action)
        if result.failed:  # e.g. dm_control PhysicsError: restart, stay alive
            self.get_logger().error(
                f'episode {episodes.episode_index} step {episodes.step_index + 1} failed '
                f'({result.failed}); resetting', throttle_duration_sec=_LOG_THROTTLE_S)
            self._reset_episode()
            return
        self.applied_action = action
        self._new_state_stamp()
        self._publish_transition(result.observation, result.reward, result.terminated,
                                 result.truncated)
        if result.done:
            self._episode_pub.publish(messages.encode_episode_summary(
                episodes.episode_index, episodes.episode_seed, episodes.episode_return,
                episodes.step_index, result.terminated))
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
                observation, reward, terminated, truncated, self.episodes.step_index,
                self.episodes.episode_index, self.state_stamp_ns))

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
                self._image_pub.publish(messages.encode_image(frame, self.state_stamp_ns,
                                                              self._camera_frame_id))
        if self._info_pub.get_subscription_count():
            messages.stamp_from_ns(self._camera_info.header.stamp, self.state_stamp_ns)
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
            self._obs_pub.publish(messages.to_float32_multiarray(self.episodes.observation,
                                                                 self.spec.obs_terms))
        self._publish_robot_state()
        if self._joint_pub.get_subscription_count():
            _, data = mujoco_handles(self._env)
            self._joint_pub.publish(messages.joint_state(
                self.state_stamp_ns, self.spec.joint_names,
                data.qpos[self._qpos_index], data.qvel[self._dof_index],
                data.qfrc_actuator[self._dof_index]))
        if self._clock_pub is not None:
            clock = ClockMsg()
            messages.stamp_from_ns(clock.clock, self.episodes.sim_time_ns)
            self._clock_pub.publish(clock)

    def _publish_robot_state(self) -> None:
        """Robot task files: the current state's command in force, then its IMU reading, both
        with the stamp of its joint_states and before them, so a controller acting on
        joint_states already has both."""
        stamp, robot = self.state_stamp_ns, self._robot
        if self._command_pub is not None and self._command_pub.get_subscription_count():
            self._command_pub.publish(self._command_message.encode(stamp, robot.command))
        if self._imu_pub is not None and self._imu_pub.get_subscription_count():
            self._imu_pub.publish(messages.imu_message(stamp, robot.base_body_name,
                                                       *robot.imu()))

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
            self._held_steps = 0

    def _on_override(self, msg) -> None:
        """A goal or cmd_vel: the command in force until the episode ends; a bad one changes
        nothing."""
        topic = self._command_message.topic
        try:
            command = self._command_message.decode(msg)
        except ValueError as error:
            self.rejected_overrides += 1
            self.get_logger().warning(f'rejected {topic} ({error}); the command in force stays',
                                      throttle_duration_sec=_LOG_THROTTLE_S)
            return
        first = not self._robot.command_overridden
        self._robot.set_command(command)
        self.command_overrides += 1
        if first:  # once per episode: a teleop sends many
            self.get_logger().info(
                f'{topic} override {np.round(command, 4).tolist()} in force until episode '
                f'{self.episodes.episode_index} ends')

    def _on_tick(self) -> None:
        if self.paused:
            return
        fresh = (self._held_action is not None and
                 time.monotonic_ns() - self._held_since_ns <= self._command_timeout_ns)
        if not fresh and not self._timed_out and self._held_action is not None:
            self.get_logger().warning('command timed out: controls zeroed',
                                      throttle_duration_sec=_LOG_THROTTLE_S)
        self._timed_out = not fresh
        action, held = (self._held_action, self._held_steps) if fresh else (self._rest_action, 0)
        if fresh:
            self._held_steps += 1
        if self._applied_pub.get_subscription_count():
            # Before the step, while episode and step still name the state it is applied in.
            self._applied_pub.publish(messages.encode_applied_command(
                self.episodes.episode_index, self.episodes.step_index, action, held,
                not fresh))
        self._env_step(action)

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


def make_node() -> MujocoSimNode:
    """The node from the process's parameters; a machine without OpenGL for the camera is an
    invalid setup (exit 2: a respawn cannot fix it)."""
    try:
        return MujocoSimNode()
    except RenderError as error:
        raise SimParameterError(str(error)) from error
