"""A Gymnasium vector env whose sub-environments are lockstep ``mujoco_sim`` nodes.

``RosVectorEnv`` is the trainer's view of ROS: it publishes one command per sim on
``<ns>/commands`` and collects the matching ``<ns>/transition``, so any code written against
``gymnasium.vector.VectorEnv`` (the fpmd_core trainer included) runs unchanged over DDS.

* Actions are in [-1, 1]; they are mapped to env units with ``fpmd_core.tasks.scale_action``
  and the bounds of the task's ``TaskSpec`` (built locally from ``make_env``; never stepped).
* Transitions are matched by their ``(episode, step)`` indices, never by arrival order.
* Autoreset is Gymnasium's SAME_STEP: when sub-env ``i`` ends an episode, ``obs[i]`` is the next
  episode's first observation and ``infos["final_obs"][i]`` (mask ``infos["_final_obs"]``) the
  terminal one, as in ``SyncVectorEnv(..., autoreset_mode=AutoresetMode.SAME_STEP)``. The sims
  reset themselves, so no service call is made per episode.
* ``reset(seed=None)`` calls every sim's ``~/reset`` and waits for step 0. ``reset(seed=s)``
  first sets each sim's ``seed`` parameter (int ``s``: sim ``i`` gets ``s + i * seed_stride``; a
  list: one seed per sim), so sim ``i``'s episodes from then on use seeds ``seed_i + 0, 1, ...``.
* Pixel tasks (``pixels``): the transitions carry the state; the observation is built here from
  each sim's ``<ns>/camera/image_raw``: the frame whose ``header.stamp`` equals the transition's
  ``stamp`` (never by arrival order), stacked with ``fpmd_core.frames.FrameStack`` exactly as
  the in-process pixel env stacks them. The sims must run with ``camera_enabled`` and the same
  image size, camera and ``action_repeat`` (checked at connection).
* Everything waits against the wall clock: sims missing at startup are named after
  ``connect_timeout_s``; a sim that stops answering raises :class:`SimTimeoutError` naming its
  namespace and the ``(episode, step)`` awaited, after ``step_timeout_s``. Nothing hangs.

The env owns an rclpy node and executor (on its own context unless one is given) and spins them
only inside ``reset``/``step``. Given a ``node`` instead (the trainer's, so that ``ros2 node info
/trainer`` lists the sims' topics and services as the trainer's), it creates its endpoints on that
node, whose executor another thread spins, and waits for their callbacks. Either way it is not
thread-safe, like any Gymnasium env: one thread calls ``reset``/``step``.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import rclpy
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from fpmd_core.frames import FrameStack
from fpmd_core.rendering import UnknownCameraError, camera_id
from fpmd_core.tasks import (
    PixelOptions,
    default_camera,
    make_env,
    mujoco_handles,
    scale_action,
    task_spec,
)
from fpmd_ros import messages
from fpmd_ros.interface import SIM_NODE_NAME
from fpmd_ros.qos import LOCKSTEP_QOS

_RESET_REPLY = re.compile(r'^episode (\d+) seed (-?\d+)$')
_INBOX_LIMIT = 1024  # transitions (and frames) kept per sim that nobody asked for yet
RESEND_S = 2.0  # an idempotent service request unanswered this long is sent again


class SimError(RuntimeError):
    """A sim misbehaved (wrong task, malformed transitions, skipped a step)."""

    def __init__(self, namespace: str, message: str):
        super().__init__(f'sim {namespace}: {message}')
        self.namespace = namespace


class SimTimeoutError(SimError, TimeoutError):
    """A sim did not answer in time. ``namespace`` names it; ``awaited`` is the
    ``(episode, step)`` of the transition waited for (None for service calls)."""

    def __init__(self, namespace: str, message: str,
                 awaited: tuple[int, int] | None = None):
        super().__init__(namespace, message)
        self.awaited = awaited


def _parameter_value(value: ParameterValue):
    return {ParameterType.PARAMETER_STRING: value.string_value,
            ParameterType.PARAMETER_INTEGER: value.integer_value,
            ParameterType.PARAMETER_BOOL: value.bool_value,
            ParameterType.PARAMETER_DOUBLE: value.double_value}.get(value.type)


class _Sim:
    """Endpoints and inbox of one sim node."""

    def __init__(self, env: RosVectorEnv, index: int, namespace: str):
        node = env._node
        self._changed = env._changed
        self.index = index
        self.name = namespace.strip('/')
        self.ns = '/' + self.name
        self.node_path = f'{self.ns}/{env._sim_node_name}'
        # State first: on a node spun elsewhere, callbacks can run as soon as they exist.
        self._obs_dim = env.state_dim
        self.inbox: dict[tuple[int, int], messages.Transition] = {}
        self.error: str | None = None
        self.episode = -1
        self.step = 0
        self.pixels = env.pixels
        if self.pixels is not None:
            self.frames: dict[int, np.ndarray] = {}
            self.stack = FrameStack(self.pixels.frame_stack)
        self.command_pub = node.create_publisher(Float64MultiArray, f'{self.ns}/commands',
                                                 LOCKSTEP_QOS)
        self.transition_sub = node.create_subscription(
            Float64MultiArray, f'{self.ns}/transition', self._on_transition, LOCKSTEP_QOS)
        self.reset_client = node.create_client(Trigger, f'{self.node_path}/reset')
        self.get_params_client = node.create_client(GetParameters,
                                                    f'{self.node_path}/get_parameters')
        self.set_params_client = node.create_client(SetParameters,
                                                    f'{self.node_path}/set_parameters')
        if self.pixels is not None:
            self.image_sub = node.create_subscription(
                Image, f'{self.ns}/camera/image_raw', self._on_image, LOCKSTEP_QOS)

    def _on_image(self, msg: Image) -> None:
        try:
            frame = messages.decode_image(msg, self.pixels.height, self.pixels.width)
        except ValueError as error:
            frame, error_text = None, f'malformed camera frame: {error}'
        with self._changed:  # callbacks may run on another thread (a node spun elsewhere)
            if frame is None:
                self.error = error_text
            else:
                if len(self.frames) >= _INBOX_LIMIT:
                    self.frames.pop(min(self.frames))
                self.frames[messages.stamp_to_ns(msg.header.stamp)] = frame
            self._changed.notify_all()

    def _on_transition(self, msg: Float64MultiArray) -> None:
        try:
            transition = messages.decode_transition(msg, self._obs_dim)
        except ValueError as error:
            transition, error_text = None, f'malformed transition: {error}'
        with self._changed:
            if transition is None:
                self.error = error_text
            else:
                if len(self.inbox) >= _INBOX_LIMIT:
                    self.inbox.pop(min(self.inbox))
                self.inbox[(transition.episode, transition.step)] = transition
            self._changed.notify_all()

    def destroy(self, node) -> None:
        """Removes this sim's endpoints from ``node`` (a node the env does not own)."""
        node.destroy_publisher(self.command_pub)
        node.destroy_subscription(self.transition_sub)
        if self.pixels is not None:
            node.destroy_subscription(self.image_sub)
        for client in (self.reset_client, self.get_params_client, self.set_params_client):
            node.destroy_client(client)

    def missing_endpoints(self) -> list[str]:
        missing = []
        if self.command_pub.get_subscription_count() == 0:
            missing.append(f'no subscriber on {self.ns}/commands')
        if self.transition_sub.get_publisher_count() == 0:
            missing.append(f'no publisher on {self.ns}/transition')
        if self.pixels is not None and self.image_sub.get_publisher_count() == 0:
            missing.append(f'no publisher on {self.ns}/camera/image_raw (camera_enabled?)')
        for client in (self.reset_client, self.get_params_client, self.set_params_client):
            if not client.service_is_ready():
                missing.append(f'no service {client.service_name}')
        return missing

    def take(self, key: tuple[int, int]) -> messages.Transition | None:
        """The transition ``key`` once it (and, for pixels, its frame) has arrived, with
        ``observation`` replaced by the frame stack; drops everything older."""
        transition = self.inbox.get(key)
        if transition is None:
            return None
        if self.pixels is not None:
            frame = self.frames.pop(transition.stamp_ns, None)
            if frame is None:
                return None
            for old in [stamp for stamp in self.frames if stamp < transition.stamp_ns]:
                del self.frames[old]
            stacked = self.stack.reset(frame) if key[1] == 0 else self.stack.push(frame)
            transition = dataclasses.replace(transition, observation=stacked)
        del self.inbox[key]
        for old in [k for k in self.inbox if k < key]:
            del self.inbox[old]
        return transition

    def frame_missing(self, key: tuple[int, int]) -> int | None:
        """The stamp of transition ``key``'s frame if the transition came but the frame not."""
        transition = self.inbox.get(key)
        return None if self.pixels is None or transition is None else transition.stamp_ns

    def skipped(self, key: tuple[int, int]) -> bool:
        """True if a later episode has begun while ``key`` is still missing."""
        return any(k[0] > key[0] for k in self.inbox)


class RosVectorEnv(gym.vector.VectorEnv):
    """N lockstep ``mujoco_sim`` nodes as one Gymnasium vector env (SAME_STEP autoreset).

    Args:
        task_id: the task the sims run (checked against their ``task`` parameter).
        num_envs: number of sims, in namespaces ``env_0 ... env_{num_envs-1}``; or
        namespaces: explicit sim namespaces (one sub-env each, in this order).
        sim_node_name: the sims' node name (services are ``<ns>/<sim_node_name>/reset`` ...).
        max_episode_steps: as given to the sims; only used for the local ``task_spec``.
        action_repeat: as given to the sims (checked); ``control_dt`` includes it.
        pixels: observe stacked camera frames of this size, camera and stack depth.
        step_timeout_s: wall-clock limit for one step or reset of all sims.
        connect_timeout_s: wall-clock limit for finding all sims at construction.
        seed_stride: ``reset(seed=s)`` gives sim ``i`` the seed ``s + i * seed_stride``. The
            default keeps the per-episode seed sequences (``seed_i + k``) of different sims
            disjoint for a million episodes each; 1 gives Gymnasium's ``s + i``.
        context: an initialised rclpy context to use; default: a private one, shut down by
            ``close()``.
        node: an existing node to put the endpoints on (instead of a node of the env's own),
            spun by an executor on another thread; ``close()`` removes the endpoints only.
    """

    metadata = {'autoreset_mode': gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, task_id: str, num_envs: int | None = None,
                 namespaces: Sequence[str] | None = None, *,
                 sim_node_name: str = SIM_NODE_NAME, max_episode_steps: int = 0,
                 action_repeat: int = 1, pixels: PixelOptions | None = None,
                 step_timeout_s: float = 10.0, connect_timeout_s: float = 30.0,
                 seed_stride: int = 1_000_000, context: Context | None = None,
                 node_name: str = 'ros_vector_env', node: Node | None = None):
        if namespaces is None:
            if num_envs is None or num_envs < 1:
                raise ValueError('RosVectorEnv needs num_envs >= 1 or a list of namespaces')
            namespaces = [f'env_{i}' for i in range(num_envs)]
        namespaces = [str(ns) for ns in namespaces]
        if num_envs is not None and num_envs != len(namespaces):
            raise ValueError(f'num_envs={num_envs} but {len(namespaces)} namespaces given')
        if not namespaces or len(set(namespaces)) != len(namespaces):
            raise ValueError(f'namespaces must be non-empty and distinct: {namespaces}')
        if step_timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError('step_timeout_s and connect_timeout_s must be positive')

        if pixels is not None and not pixels.camera:
            pixels = dataclasses.replace(pixels, camera=default_camera(task_id))
        self.pixels, self.action_repeat = pixels, int(action_repeat)
        local = make_env(task_id, max_episode_steps, normalized_actions=False,
                         action_repeat=action_repeat, pixels=pixels)
        try:
            self.task_spec = task_spec(local, task_id)
            # What the sims' transitions carry: the state, also for pixel tasks.
            self.state_dim = int(np.prod(local.unwrapped.observation_space.shape))
            self._model = mujoco_handles(local)[0]  # resolves camera names at connection
        finally:
            local.close()
        spec = self.task_spec
        self.task_id = task_id
        self.num_envs = len(namespaces)
        self.namespaces = tuple(ns.strip('/') for ns in namespaces)
        self.step_timeout_s = float(step_timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.seed_stride = int(seed_stride)
        self._low = np.asarray(spec.action_low, dtype=np.float64)
        self._high = np.asarray(spec.action_high, dtype=np.float64)
        self.single_observation_space = (
            gym.spaces.Box(0, 255, spec.obs_shape, np.uint8) if pixels is not None
            else gym.spaces.Box(-np.inf, np.inf, (spec.obs_dim,), np.float32))
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (spec.act_dim,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space,
                                                              self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space,
                                                         self.num_envs)
        self.closed = False
        self._needs_reset = True

        # Guards the sims' inboxes; notified by every callback.
        self._changed = threading.Condition()
        self._sim_node_name = sim_node_name
        self._own_node = node is None
        self._own_context = node is None and context is None
        self._executor = None
        if node is not None:
            self._context, self._node = node.context, node
        else:
            if self._own_context:
                context = Context()
                # args=[]: this process's own --ros-args (e.g. a trainer's `-r __node:=trainer`)
                # must not rename or remap the env's private node.
                rclpy.init(args=[], context=context)
            self._context = context
            self._node = rclpy.create_node(node_name, context=context)
            self._executor = SingleThreadedExecutor(context=context)
            self._executor.add_node(self._node)
        self._sims = [_Sim(self, i, ns) for i, ns in enumerate(self.namespaces)]
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    # --- waiting -----------------------------------------------------------------------------

    def _spin_until(self, done: Callable[[], bool], deadline: float) -> bool:
        if self._executor is None:  # the node is spun on another thread: wait for callbacks
            with self._changed:
                while not done():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return done()
                    # Bounded: service replies and graph changes do not notify.
                    self._changed.wait(min(0.05, remaining))
            return True
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return done()
            self._executor.spin_once(timeout_sec=min(0.05, remaining))
        return True

    def _connect(self) -> None:
        deadline = time.monotonic() + self.connect_timeout_s
        self._spin_until(lambda: not any(s.missing_endpoints() for s in self._sims), deadline)
        missing = {s.name: s.missing_endpoints() for s in self._sims if s.missing_endpoints()}
        if missing:
            names = ', '.join(missing)
            details = '; '.join(f'{name}: {", ".join(m)}' for name, m in missing.items())
            raise SimTimeoutError(
                next(iter(missing)),
                f'not found after {self.connect_timeout_s:g} s (missing sims: {names}). '
                f'Details: {details}. Are the mujoco_sim nodes running, in lockstep mode, with '
                'the same ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE (and, for sims on other '
                'hosts, ROS_STATIC_PEERS naming them)?')
        names = ['task', 'mode', 'action_repeat']
        expected = {'task': self.task_id, 'mode': 'lockstep',
                    'action_repeat': self.action_repeat}
        if self.pixels is not None:
            names += ['camera_enabled', 'image_width', 'image_height', 'camera']
            expected |= {'camera_enabled': True, 'image_width': self.pixels.width,
                         'image_height': self.pixels.height,
                         'camera': self._camera_index(self.pixels.camera)}
        replies = self._call_all(
            {s.index: (s.get_params_client, GetParameters.Request(names=names))
             for s in self._sims}, 'get_parameters', deadline, resend_s=RESEND_S)
        for sim in self._sims:
            values = replies[sim.index].values
            if len(values) != len(names):
                raise SimError(sim.name, f'does not declare the parameters {", ".join(names)}')
            for name, value in zip(names, values, strict=True):
                have = _parameter_value(value)
                if name == 'camera':  # a name and its id are the same camera
                    have = self._camera_index(have)
                if have != expected[name]:
                    raise SimError(sim.name, f'has {name} = {have!r}, expected '
                                   f'{expected[name]!r}' + (
                                       '; RosVectorEnv needs lockstep' if name == 'mode'
                                       else ''))

    def _camera_index(self, camera: str) -> int | str:
        """The camera's id ('' = the task's default); an unknown camera stays as given."""
        camera = camera or default_camera(self.task_id)
        try:
            return camera_id(self._model, camera)
        except UnknownCameraError:
            return camera

    def _call_all(self, requests: dict, what: str, deadline: float,
                  resend_s: float | None = None) -> dict:
        """Call every sim's service; SimTimeoutError naming the sims that did not answer by
        ``deadline``. ``resend_s`` (idempotent requests only): send again a request unanswered
        that long. A service can be discovered before its reply path is matched, and a request
        sent then is lost (seen once under load: a sim never answered get_parameters)."""
        futures = {i: client.call_async(request) for i, (client, request) in requests.items()}
        while True:
            wait_until = deadline if resend_s is None else min(deadline,
                                                               time.monotonic() + resend_s)
            self._spin_until(lambda: all(f.done() for f in futures.values()), wait_until)
            if resend_s is None or time.monotonic() >= deadline or \
                    all(f.done() for f in futures.values()):
                break
            for i, future in futures.items():
                if not future.done():
                    future.cancel()
                    client, request = requests[i]
                    futures[i] = client.call_async(request)
        late = [self._sims[i].name for i, f in futures.items() if not f.done()]
        for future in futures.values():
            if not future.done():
                future.cancel()
        if late:
            raise SimTimeoutError(late[0], f'{what} not answered within the timeout '
                                  f'(sims not answering: {", ".join(late)})')
        results = {}
        for i, future in futures.items():
            if future.exception() is not None or future.result() is None:
                raise SimError(self._sims[i].name, f'{what} failed: {future.exception()!r}')
            results[i] = future.result()
        return results

    def _collect(self, expected: dict[int, tuple[int, int]]) -> dict[int, messages.Transition]:
        """Wait until sim ``i`` has published transition ``expected[i]`` for every ``i``."""
        deadline = time.monotonic() + self.step_timeout_s
        got: dict[int, messages.Transition] = {}

        def done() -> bool:
            for i, key in expected.items():
                sim = self._sims[i]
                if i not in got:
                    transition = sim.take(key)
                    if transition is not None:
                        got[i] = transition
                    elif sim.error or sim.skipped(key):
                        return True
            return len(got) == len(expected)

        self._spin_until(done, deadline)
        with self._changed:
            return self._collected(expected, got)

    def _collected(self, expected: dict[int, tuple[int, int]],
                   got: dict[int, messages.Transition]) -> dict[int, messages.Transition]:
        """``got`` if it holds every expected transition, else the error that explains why not."""
        for i, key in expected.items():
            if i in got:
                continue
            sim = self._sims[i]
            self._needs_reset = True
            if sim.error:
                error, sim.error = sim.error, None
                raise SimError(sim.name, error)
            stamp = sim.frame_missing(key)
            if stamp is not None:
                raise SimTimeoutError(
                    sim.name, f'no camera frame stamped {stamp} ns for (episode {key[0]}, step '
                    f'{key[1]}) within {self.step_timeout_s:g} s (is camera/image_raw published '
                    'RELIABLE?)', awaited=key)
            if sim.skipped(key):
                raise SimError(sim.name, f'began a new episode while (episode {key[0]}, step '
                               f'{key[1]}) was awaited; the sim reset itself (see its log)')
            raise SimTimeoutError(
                sim.name, f'no transition (episode {key[0]}, step {key[1]}) within '
                f'{self.step_timeout_s:g} s; the sim stopped answering or rejected the command '
                '(see its log)', awaited=key)
        return got

    # --- the Gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None):
        if seed is not None:
            if isinstance(seed, int | np.integer):
                super().reset(seed=int(seed))
                seeds = [int(seed) + i * self.seed_stride for i in range(self.num_envs)]
            else:
                seeds = [int(s) for s in seed]
                if len(seeds) != self.num_envs:
                    raise ValueError(f'{len(seeds)} seeds for {self.num_envs} envs')
            self._set_seeds(seeds)
        deadline = time.monotonic() + self.step_timeout_s
        replies = self._call_all(
            {s.index: (s.reset_client, Trigger.Request()) for s in self._sims}, 'reset',
            deadline)
        expected = {}
        for sim in self._sims:
            match = _RESET_REPLY.match(replies[sim.index].message)
            if not replies[sim.index].success or not match:
                raise SimError(sim.name, f'reset refused: {replies[sim.index].message!r}')
            expected[sim.index] = (int(match.group(1)), 0)
        got = self._collect(expected)
        for i, transition in got.items():
            self._sims[i].episode, self._sims[i].step = transition.episode, 0
        self._needs_reset = False
        return np.stack([got[i].observation for i in range(self.num_envs)]), {}

    def _set_seeds(self, seeds: list[int]) -> None:
        requests = {}
        for sim, seed in zip(self._sims, seeds, strict=True):
            value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=seed)
            requests[sim.index] = (sim.set_params_client, SetParameters.Request(
                parameters=[ParameterMsg(name='seed', value=value)]))
        replies = self._call_all(requests, 'set_parameters(seed)',
                                 time.monotonic() + self.step_timeout_s, resend_s=RESEND_S)
        for i, reply in replies.items():
            result = reply.results[0]
            if not result.successful:
                raise ValueError(f'sim {self._sims[i].name} refused seed {seeds[i]}: '
                                 f'{result.reason}')

    def step(self, actions):
        if self._needs_reset:
            raise RuntimeError('RosVectorEnv.step before reset() (or after a sim error); '
                               'call reset() first')
        actions = np.asarray(actions, dtype=np.float64)
        expected_shape = (self.num_envs, self.task_spec.act_dim)
        if actions.shape != expected_shape:
            raise ValueError(f'actions have shape {actions.shape}, expected {expected_shape}')
        if not np.all(np.isfinite(actions)):
            raise ValueError('actions contain NaN or Inf')
        for sim, action in zip(self._sims, actions, strict=True):
            command = scale_action(action, self._low, self._high)
            sim.command_pub.publish(messages.encode_command(command))
        got = self._collect({s.index: (s.episode, s.step + 1) for s in self._sims})

        observations = np.stack([got[i].observation for i in range(self.num_envs)])
        rewards = np.array([got[i].reward for i in range(self.num_envs)], dtype=np.float64)
        terminated = np.array([got[i].terminated for i in range(self.num_envs)], dtype=np.bool_)
        truncated = np.array([got[i].truncated for i in range(self.num_envs)], dtype=np.bool_)
        for sim in self._sims:
            sim.step += 1
        infos: dict = {}
        ended = [i for i in range(self.num_envs) if terminated[i] or truncated[i]]
        if ended:
            first = self._collect({i: (self._sims[i].episode + 1, 0) for i in ended})
            for i in ended:
                infos = self._add_info(
                    infos, {'final_obs': observations[i].copy(), 'final_info': {}}, i)
                observations[i] = first[i].observation
                self._sims[i].episode, self._sims[i].step = first[i].episode, 0
        return observations, rewards, terminated, truncated, infos

    def close_extras(self, **kwargs) -> None:
        node = getattr(self, '_node', None)
        if node is not None and not self._own_node:
            for sim in getattr(self, '_sims', []):
                sim.destroy(node)
            self._node = None
        elif node is not None:
            self._executor.remove_node(node)
            node.destroy_node()
            self._executor.shutdown(timeout_sec=1.0)
            self._node = None
        if getattr(self, '_own_context', False) and self._context.ok():
            rclpy.shutdown(context=self._context)
