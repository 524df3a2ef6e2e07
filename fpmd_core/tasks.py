"""Task factories: Gymnasium MuJoCo ids and dm_control suite tasks behind one Gymnasium API.

Agents always act in [-1, 1]^d; `NormalizedActions` maps to the env's own bounds. Every task
is described by a `TaskSpec` (sizes, bounds, observation terms, actuator and joint names,
control period) that exports and ROS nodes use as metadata.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np

from .frames import FrameStack
from .rendering import Camera

_DMC_PATTERN = re.compile(r"^([a-z_]+)-([a-z_]+)$")


class TaskError(ValueError):
    """Unknown or unusable task id."""


@dataclass(frozen=True)
class TaskSpec:
    id: str
    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    obs_terms: tuple[tuple[str, int], ...]
    """Observation layout: (term name, size) in order; sizes sum to obs_dim."""
    actuator_names: tuple[str, ...]
    joint_names: tuple[str, ...]
    control_dt: float
    """Seconds of simulated time per env step (action repeat included)."""
    max_episode_steps: int
    obs_shape: tuple[int, ...] = ()
    """Observation array shape: (obs_dim,) for state, (H, W, 3 * frame_stack) uint8 for pixels."""
    camera: str = ""
    """Pixel tasks: the camera the frames come from."""
    action_repeat: int = 1
    """Simulator control steps per env step (the same action held)."""
    robot: dict | None = None
    """Robot task files: their deploy metadata (fpmd_core.robots.robot_metadata), taken when
    the env was made, so the exported policy records the task file it was trained on."""


class NormalizedActions(gym.ActionWrapper):
    """The agent's [-1, 1] actions -> the env's bounds (clipped first, so never out of range)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.low = env.action_space.low.astype(np.float64)
        self.high = env.action_space.high.astype(np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, env.action_space.shape, np.float32)

    def action(self, action):
        return scale_action(action, self.low, self.high)


def scale_action(action, low, high) -> np.ndarray:
    """[-1, 1] -> [low, high], clipping first; the one place this mapping is defined."""
    action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return low + (action + 1.0) * 0.5 * (np.asarray(high) - np.asarray(low))


class Float32Observations(gym.ObservationWrapper):
    def __init__(self, env: gym.Env):
        super().__init__(env)
        shape = env.observation_space.shape
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)

    def observation(self, observation):
        return np.asarray(observation, dtype=np.float32)


class DMControlEnv(gym.Env):
    """A dm_control suite task with flattened state observations, as a Gymnasium env.

    A step whose time step is last with discount 0 is `terminated`; a time-limit end is
    `truncated`, so the critic keeps bootstrapping through it.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, domain: str, task: str):
        from dm_control import suite

        self.domain, self.task_name = domain, task
        self._suite = suite
        self._env = suite.load(domain, task, task_kwargs={"random": 0})
        spec = self._env.observation_spec()
        self.obs_terms = tuple((k, int(np.prod(v.shape))) for k, v in spec.items())
        dim = sum(size for _, size in self.obs_terms)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float64)
        aspec = self._env.action_spec()
        self.action_space = gym.spaces.Box(
            aspec.minimum.astype(np.float32), aspec.maximum.astype(np.float32), aspec.shape,
            np.float32,
        )
        self.steps_per_episode = int(round(self._env._step_limit))

    @property
    def physics(self):
        return self._env.physics

    def _flatten(self, observation: OrderedDict) -> np.ndarray:
        parts = [np.asarray(v, dtype=np.float64).ravel() for v in observation.values()]
        return np.concatenate(parts)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task._random = np.random.RandomState(seed)
        time_step = self._env.reset()
        return self._flatten(time_step.observation), {}

    def step(self, action):
        time_step = self._env.step(action)
        terminated = bool(time_step.last() and time_step.discount == 0.0)
        truncated = bool(time_step.last() and not terminated)
        return self._flatten(time_step.observation), float(time_step.reward or 0.0), \
            terminated, truncated, {}

    def render(self):
        return self.physics.render(84, 84, camera_id=0)


@dataclass(frozen=True)
class PixelOptions:
    """Observe `frame_stack` stacked camera images instead of the state vector."""

    width: int = 84
    height: int = 84
    camera: str = ""
    """Camera id or name; "" picks the task's default (`default_camera`)."""
    frame_stack: int = 3


class ActionRepeat(gym.Wrapper):
    """Hold each action for `repeat` control steps; rewards are summed, an episode end stops."""

    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        if repeat < 1:
            raise TaskError(f"action_repeat: expected an integer >= 1, got {repeat}")
        self.repeat = repeat

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class PixelObservations(gym.Wrapper):
    """Observations are the last `frame_stack` camera frames, (H, W, 3k) uint8, oldest first.
    The state vector stays available as `info["state"]`."""

    def __init__(self, env: gym.Env, options: PixelOptions, camera: int | str):
        super().__init__(env)
        model, _ = mujoco_handles(env)
        self.camera = Camera(model, options.width, options.height, camera)
        self.frames = FrameStack(options.frame_stack)
        self.observation_space = gym.spaces.Box(
            0, 255, (options.height, options.width, 3 * options.frame_stack), np.uint8)

    def frame(self) -> np.ndarray:
        return self.camera.render(mujoco_handles(self.env)[1])

    def reset(self, **kwargs):
        state, info = self.env.reset(**kwargs)
        return self.frames.reset(self.frame()), info | {"state": state}

    def step(self, action):
        state, reward, terminated, truncated, info = self.env.step(action)
        return self.frames.push(self.frame()), reward, terminated, truncated, \
            info | {"state": state}

    def close(self):
        self.camera.close()
        super().close()


def default_camera(task_id: str) -> str:
    """DrQ-v2's choice for dm_control (camera 0; 2 for quadruped); the free camera otherwise."""
    if _is_dm_control(task_id):
        return "2" if task_id.startswith("quadruped-") else "0"
    return "-1"


def _is_dm_control(task_id: str) -> bool:
    return "-" in task_id and not re.search(r"-v\d+$", task_id) and not is_task_file(task_id)


def is_task_file(task_id: str) -> bool:
    """A robot task file (`sim/<name>.yaml`, see fpmd_core.robots) rather than a benchmark id."""
    return str(task_id).lower().endswith((".yaml", ".yml"))


def make_env(task_id: str, max_episode_steps: int = 0, normalized_actions: bool = True, *,
             action_repeat: int = 1, pixels: PixelOptions | None = None) -> gym.Env:
    """One env with float32 observations and [-1, 1] actions (env units if not
    `normalized_actions`, as a sim node receives them). Raises TaskError if unknown.

    `max_episode_steps` counts control steps, before `action_repeat`. With `pixels`, the
    observation is a stack of camera frames (uint8) and the state is in `info["state"]`.
    A path ending in .yaml/.yml is a robot task file (fpmd_core.robots)."""
    if is_task_file(task_id):
        from .robots import RobotEnv

        env = RobotEnv(task_id)
        env = gym.wrappers.TimeLimit(env, max_episode_steps or env.task.episode_steps)
    elif _is_dm_control(task_id):
        match = _DMC_PATTERN.match(task_id)
        from dm_control import suite

        if not match or (match.group(1), match.group(2)) not in suite.ALL_TASKS:
            raise TaskError(
                f"task {task_id!r}: not a dm_control suite task; expected `domain-task`, one of "
                + ", ".join(f"{d}-{t}" for d, t in suite.ALL_TASKS[:8]) + ", ..."
            )
        env: gym.Env = DMControlEnv(match.group(1), match.group(2))
        # dm_control ends its episodes itself; a shorter limit is added as a TimeLimit.
        if max_episode_steps and max_episode_steps < env.steps_per_episode:
            env = gym.wrappers.TimeLimit(env, max_episode_steps)
    else:
        if task_id not in gym.registry:
            close = [k for k in gym.registry if k.split("-")[0] == task_id.split("-")[0]]
            raise TaskError(
                f"task {task_id!r}: unknown Gymnasium id"
                + (f" (registered: {', '.join(close)})" if close else "")
                + "; expected e.g. Hopper-v5 or a dm_control `domain-task`"
            )
        kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
        env = gym.make(task_id, **kwargs)
        from gymnasium.envs.mujoco import MujocoEnv  # not an attribute of gym.envs until imported

        if not isinstance(env.unwrapped, MujocoEnv):
            raise TaskError(f"task {task_id!r}: not a MuJoCo task")
    if not isinstance(env.action_space, gym.spaces.Box):
        raise TaskError(f"task {task_id!r}: expected a continuous (Box) action space")
    if normalized_actions:
        env = NormalizedActions(env)
    env = Float32Observations(env)
    if action_repeat != 1:
        env = ActionRepeat(env, action_repeat)
    if pixels is not None:
        env = PixelObservations(env, pixels, pixels.camera or default_camera(task_id))
    return env


def env_from_config(task, normalized_actions: bool = True) -> gym.Env:
    """`make_env` with every option of a `TaskConfig`."""
    return make_env(task.id, task.max_episode_steps, normalized_actions,
                    action_repeat=task.action_repeat, pixels=pixel_options(task))


def env_from_metadata(meta: dict, max_episode_steps: int = 0,
                      normalized_actions: bool = False, task_file: str | None = None) -> gym.Env:
    """The env an exported policy was trained on, from its metadata (task, action repeat and,
    for pixel policies, image size, camera and frame stack); env units by default, as a
    deployed policy acts. `task_file`: a robot policy's task file, if not where its metadata
    says (`robot_task_file`)."""
    task_id = str(meta["task"])
    if meta.get("robot"):
        task_id = robot_task_file(meta, task_file)
    shape = meta.get("obs_shape") or [meta["obs_dim"]]
    pixels = None
    if len(shape) == 3:
        pixels = PixelOptions(int(shape[1]), int(shape[0]), str(meta.get("camera", "")),
                              int(shape[2]) // 3)
    return make_env(task_id, max_episode_steps, normalized_actions,
                    action_repeat=int(meta.get("action_repeat", 1)), pixels=pixels)


def robot_task_file(meta: dict, task_file: str | None = None) -> str:
    """The task file a robot policy was trained on (`robots.metadata.locate_task_file`: the
    given `task_file`, its metadata's `robot.task_file`, or that file looked up as a task id),
    checked with its model against the sha256 recorded at training: a file that changed since
    would build another task than the policy knows (TaskFileError)."""
    from .robots.metadata import locate_task_file

    path = locate_task_file(meta["robot"], task_file)
    return str(path)


def pixel_options(task) -> PixelOptions | None:
    if not task.pixels:
        return None
    return PixelOptions(task.image_size, task.image_size, task.camera, task.frame_stack)


def mujoco_handles(env: gym.Env) -> tuple[mujoco.MjModel, mujoco.MjData]:
    """The MuJoCo model and data behind an env made by `make_env`."""
    inner = env.unwrapped
    if isinstance(inner, DMControlEnv):
        physics = inner.physics
        return physics.model.ptr, physics.data.ptr
    return inner.model, inner.data


def task_spec(env: gym.Env, task_id: str) -> TaskSpec:
    model, _ = mujoco_handles(env)
    inner = env.unwrapped
    raw_space = _raw_action_space(env)
    obs_shape = tuple(int(n) for n in env.observation_space.shape)
    obs_dim = int(np.prod(obs_shape))
    limit = _find_time_limit(env)
    repeat = _find(env, ActionRepeat)
    pixels = _find(env, PixelObservations)
    if isinstance(inner, DMControlEnv):
        obs_terms = inner.obs_terms
        control_dt = float(inner.physics.timestep() * inner._env._n_sub_steps)
        episode_steps = limit._max_episode_steps if limit else inner.steps_per_episode
    else:
        robot = _robot_env(inner)
        obs_terms = robot.obs_terms if robot is not None else (("observation", obs_dim),)
        control_dt = float(inner.dt)
        episode_steps = limit._max_episode_steps
    repeat_count = repeat.repeat if repeat is not None else 1
    if pixels is not None:
        obs_terms = (("pixels", obs_dim),)
    robot = _robot_env(inner)
    joints = robot.joint_names if robot is not None else tuple(
        model.joint(i).name for i in range(model.njnt)
        if int(model.jnt_type[i]) in (int(mujoco.mjtJoint.mjJNT_HINGE),
                                      int(mujoco.mjtJoint.mjJNT_SLIDE))
    )
    return TaskSpec(
        id=task_id,
        obs_dim=obs_dim,
        act_dim=int(raw_space.shape[0]),
        action_low=tuple(float(x) for x in raw_space.low),
        action_high=tuple(float(x) for x in raw_space.high),
        obs_terms=tuple(obs_terms),
        actuator_names=actuator_names(model),
        joint_names=joints,
        control_dt=control_dt * repeat_count,
        max_episode_steps=-(-int(episode_steps) // repeat_count),
        obs_shape=obs_shape,
        camera=str(pixels.camera.camera) if pixels is not None else "",
        action_repeat=repeat_count,
        robot=_robot_metadata(robot) if robot is not None else None,
    )


def _robot_metadata(robot) -> dict:
    from .robots import robot_metadata

    return robot_metadata(robot)


def _robot_env(inner: gym.Env):
    """The RobotEnv behind a task-file env, else None (imported here: robots imports tasks)."""
    from .robots import RobotEnv

    return inner if isinstance(inner, RobotEnv) else None


def actuator_names(model: mujoco.MjModel) -> tuple[str, ...]:
    """Actuator names; unnamed actuators take their joint's name (older models name none)."""
    names = []
    for i in range(model.nu):
        name = model.actuator(i).name
        if not name and int(model.actuator_trntype[i]) == int(mujoco.mjtTrn.mjTRN_JOINT):
            name = model.joint(int(model.actuator_trnid[i, 0])).name
        names.append(name or f"actuator_{i}")
    return tuple(names)


def _raw_action_space(env: gym.Env) -> gym.spaces.Box:
    while hasattr(env, "env"):
        if isinstance(env, NormalizedActions):
            return env.env.action_space
        env = env.env
    return env.action_space


def _find_time_limit(env: gym.Env):
    return _find(env, gym.wrappers.TimeLimit)


def _find(env: gym.Env, kind: type):
    """The outermost wrapper of type `kind` around env, or None."""
    while True:
        if isinstance(env, kind):
            return env
        if not hasattr(env, "env"):
            return None
        env = env.env


def make_vector_env(task_id: str, num_envs: int, max_episode_steps: int = 0,
                    **options) -> gym.vector.VectorEnv:
    """`num_envs` copies in one process, auto-reset in the same step (final obs in info);
    `options` go to `make_env` (action_repeat, pixels)."""
    return gym.vector.SyncVectorEnv(
        [lambda: make_env(task_id, max_episode_steps, **options) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


# --- exact snapshots of env state, for checkpoints that resume bit-for-bit -----------------

def get_env_state(env: gym.Env) -> dict:
    """Physics integration state, episode step counter and RNG state of one env."""
    model, data = mujoco_handles(env)
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    physics = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, physics, spec)
    inner = env.unwrapped
    limit = _find_time_limit(env)
    state = {
        "physics": physics.tolist(),
        "elapsed_steps": int(limit._elapsed_steps) if limit is not None and
        limit._elapsed_steps is not None else -1,
    }
    if isinstance(inner, DMControlEnv):
        state["task_random"] = _random_state_to_list(inner._env.task.random.get_state())
        state["dm_step_count"] = int(inner._env._step_count)
        state["dm_reset_next"] = bool(inner._env._reset_next_step)
    else:
        state["np_random"] = inner.np_random.bit_generator.state
    robot = _robot_env(inner)
    if robot is not None:  # command, action delay, randomisation
        state["extra"] = robot.extra_state()
    pixels = _find(env, PixelObservations)
    if pixels is not None:
        state["frames"] = pixels.frames.observation().tolist()
    return state


def set_env_state(env: gym.Env, state: dict) -> None:
    model, data = mujoco_handles(env)
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    mujoco.mj_setState(model, data, np.asarray(state["physics"], dtype=np.float64), spec)
    mujoco.mj_forward(model, data)
    limit = _find_time_limit(env)
    if limit is not None:
        limit._elapsed_steps = state["elapsed_steps"] if state["elapsed_steps"] >= 0 else None
    inner = env.unwrapped
    if isinstance(inner, DMControlEnv):
        inner._env.task.random.set_state(_random_state_from_list(state["task_random"]))
        inner._env._step_count = state["dm_step_count"]
        inner._env._reset_next_step = state["dm_reset_next"]
    else:
        inner.np_random.bit_generator.state = state["np_random"]
    robot = _robot_env(inner)
    if robot is not None:
        robot.load_extra_state(state["extra"])
    pixels = _find(env, PixelObservations)
    if pixels is not None and "frames" in state:
        stacked = np.asarray(state["frames"], dtype=np.uint8)
        pixels.frames.reset(stacked[..., :3])
        for i in range(1, pixels.frames.k):
            pixels.frames.push(stacked[..., 3 * i:3 * i + 3])


def _random_state_to_list(state: tuple) -> list:
    name, keys, pos, has_gauss, cached = state
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _random_state_from_list(state: list) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
