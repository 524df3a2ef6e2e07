"""`RobotEnv`: a Gymnasium env driven entirely by a robot task file.

Actions are in the robot's own units, like the action of any task before `NormalizedActions`:
position targets (rad) in [default - scale, default + scale] in position mode, torques in
[-limit, limit] in effort mode. `make_env("sim/<name>.yaml")` wraps it so agents act in
[-1, 1], where position mode gives target = default + action_scale * action.

All randomness (reset noise, commands, domain randomisation, observation noise, pushes) comes
from the env's `np_random`, so the same seed gives the same episode, and `extra_state` /
`load_extra_state` carry what a checkpoint needs for an exact resume besides the physics.

`set_command` overrides the command in force (a goal from a user, a teleop velocity) until the
next `reset`, which draws a fresh one as always. The in-episode redraws (`resample_seconds`)
still draw, so the random stream (pushes, noise) is the same with or without an override, but
they leave the override in force.
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np

from .model import RobotModel, build_robot
from .schema import RobotTask, load_task
from .terms import (
    COMMAND_RANGES,
    GOAL_DISTANCE_INFO,
    OBSERVATION_TERMS,
    REWARD_TERMS,
    compose_observation,
)

_DIVERGED = (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
             mujoco.mjtWarning.mjWARN_BADQACC)


class RobotEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: RobotTask | str | Path):
        self.task = task if isinstance(task, RobotTask) else load_task(task)
        self.robot: RobotModel = build_robot(self.task)
        self.model = self.robot.model
        self.data = mujoco.MjData(self.model)
        self.dt = self.task.control_period
        act = self.task.actuation
        self.joint_names = act.joint_names
        self.default_pos = np.array(act.defaults, dtype=np.float64)
        self.kp = np.array(act.values("kp")) if act.mode == "position" else None
        self.kd = np.array(act.values("kd")) if act.mode == "position" else None
        if act.mode == "position":
            self.action_center = self.default_pos.copy()
            self.action_half = np.array(act.values("action_scale"))
        else:
            self.action_center = np.zeros(len(self.joint_names))
            self.action_half = np.array(act.values("effort_limit"))
        self.action_space = gym.spaces.Box(
            (self.action_center - self.action_half).astype(np.float32),
            (self.action_center + self.action_half).astype(np.float32), dtype=np.float32)
        joint_ids = self.robot.joint_ids
        self.joint_range = self.model.jnt_range[joint_ids].copy()
        self.joint_limited = self.model.jnt_limited[joint_ids].astype(np.float64)
        self._nominal = {
            "friction": self.model.geom_friction[:, 0].copy(),
            "mass": self.model.body_mass.copy(),
            "inertia": self.model.body_inertia.copy(),
        }
        self.obs_terms = tuple(self._term_layout())
        self._obs_scales = [
            self._scale_vector(term, size)
            for term, (_, size) in zip(self.task.observations, self.obs_terms, strict=True)]
        obs_dim = sum(size for _, size in self.obs_terms)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64)
        self._camera = None
        self.observation_noise = True
        """False: observations leave the task file's noise out (still drawn, so every other
        random draw is unchanged): what a deployed controller computes from its topics."""
        # The IMU's accelerometer: the model's first accelerometer sensor, if it has one.
        accelerometers = np.flatnonzero(
            self.model.sensor_type == mujoco.mjtSensor.mjSENS_ACCELEROMETER)
        self._accelerometer = None
        if accelerometers.size:
            start = int(self.model.sensor_adr[accelerometers[0]])
            self._accelerometer = slice(start, start + 3)
        self._clear_episode()

    # --- layout --------------------------------------------------------------------------
    def _term_layout(self):
        nj = len(self.joint_names)
        for term in self.task.observations:
            info = OBSERVATION_TERMS[term.term]
            if info.size == "joints":
                size = nj
            elif info.size == "model":
                s = self.robot.sensor_slices[term.sensor]
                size = s.stop - s.start
            else:
                size = int(info.size)
            qualifier = term.sensor or term.site
            yield (f"{term.term}/{qualifier}" if qualifier else term.term), size

    @staticmethod
    def _scale_vector(term, size: int) -> np.ndarray:
        scale = term.scale if isinstance(term.scale, tuple) else (term.scale,) * size
        return np.array(scale, dtype=np.float64)

    def _clear_episode(self) -> None:
        n = len(self.joint_names)
        self.command = np.zeros(3)
        self.command_overridden = False
        self.action = np.zeros(n)
        self.last_action = np.zeros(n)
        self.delay = 0
        self._pending: deque = deque()
        self.steps = 0
        self.scales = {"friction": 1.0, "mass": np.ones(self.model.nbody),
                       "kp": np.ones(n), "kd": np.ones(n)}

    # --- state read by the terms -----------------------------------------------------------
    @property
    def joint_pos(self) -> np.ndarray:
        return self.data.qpos[self.robot.qpos_adr]

    @property
    def joint_vel(self) -> np.ndarray:
        return self.data.qvel[self.robot.dof_adr]

    @property
    def _base_rotation(self) -> np.ndarray:
        return self.data.xmat[self.robot.base_body].reshape(3, 3)

    @property
    def base_pos(self) -> np.ndarray:
        return self.data.xpos[self.robot.base_body]

    @property
    def base_lin_vel(self) -> np.ndarray:
        dof = self.robot.base_dof_adr
        return self._base_rotation.T @ self.data.qvel[dof:dof + 3]

    @property
    def base_ang_vel(self) -> np.ndarray:
        dof = self.robot.base_dof_adr  # a free joint's angular velocity is in the body frame
        return self.data.qvel[dof + 3:dof + 6].copy()

    @property
    def projected_gravity(self) -> np.ndarray:
        return self._base_rotation.T @ np.array([0.0, 0.0, -1.0])

    def site_pos(self, name: str) -> np.ndarray:
        return self.data.site_xpos[self.robot.site_ids[name]].copy()

    def sensor(self, name: str) -> np.ndarray:
        return self.data.sensordata[self.robot.sensor_slices[name]].copy()

    @property
    def command_site(self) -> str:
        return self.task.command.site

    def goal_distance(self) -> float:
        return float(np.linalg.norm(self.command - self.site_pos(self.command_site)))

    @property
    def base_body_name(self) -> str:
        """The floating base body's name ('' for a fixed base)."""
        base = self.robot.base_body
        return self.model.body(base).name if base >= 0 else ""

    def imu(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """What an IMU on the base reads now: the base orientation (quaternion w, x, y, z, base
        body in the world frame), its angular velocity in the base frame (rad/s, the
        `base_ang_vel` term) and the linear acceleration (m/s^2, sensor frame) of the model's
        first accelerometer sensor, None when the model has none. Floating-base robots only."""
        if not self.robot.floating:
            raise ValueError(f"imu: task file {self.task.path}: the model {self.task.model!r} has "
                             "no floating base (free joint); an IMU reading needs one")
        orientation = self.data.xquat[self.robot.base_body].copy()
        acceleration = (self.data.sensordata[self._accelerometer].copy()
                        if self._accelerometer is not None else None)
        return orientation, self.base_ang_vel, acceleration

    def set_command(self, values) -> None:
        """Make `values` the command in force until the next reset: goal (x, y, z) in metres,
        world frame, or (vx, vy, yaw_rate) in m/s and rad/s, as the task's command kind says.
        Rewards and the `command` observation use it from the next step on; the in-episode
        redraws do not replace it. Raises ValueError naming what is wrong."""
        kind = self.task.command.kind
        names = COMMAND_RANGES.get(kind)
        if names is None:
            raise ValueError(f"set_command: task file {self.task.path} has no command "
                             f"(command.kind is {kind!r})")
        try:
            command = np.array(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"set_command: expected 3 numbers ({', '.join(names)}), got "
                             f"{values!r}") from None
        if command.shape != (3,):
            raise ValueError(f"set_command: expected 3 numbers ({', '.join(names)}), got "
                             f"shape {command.shape}")
        for name, value in zip(names, command, strict=True):
            if not math.isfinite(value):
                raise ValueError(f"set_command: {name} is {value}, expected a finite number")
        self.command = command
        self.command_overridden = True

    # --- episode -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self._clear_episode()
        rng, task = self.np_random, self.task
        mujoco.mj_resetData(self.model, self.data)
        self._randomize(rng)
        noise = task.reset.joint_pos_noise
        self.data.qpos[self.robot.qpos_adr] = self.default_pos + rng.uniform(
            -noise, noise, len(self.default_pos))
        vel_noise = task.reset.joint_vel_noise
        self.data.qvel[self.robot.dof_adr] = rng.uniform(-vel_noise, vel_noise,
                                                         len(self.default_pos))
        self.data.ctrl[:] = self._to_control(np.zeros(len(self.joint_names)))
        mujoco.mj_forward(self.model, self.data)
        self.command = self._draw_command(rng)
        return self._observe(rng), {}

    def _randomize(self, rng: np.random.Generator) -> None:
        r, n = self.task.randomization, len(self.joint_names)
        self.scales["friction"] = float(rng.uniform(*r.friction))
        self.scales["mass"][1:] = rng.uniform(*r.link_mass, self.model.nbody - 1)
        self.scales["kp"] = rng.uniform(*r.kp_scale, n)
        self.scales["kd"] = rng.uniform(*r.kd_scale, n)
        self.delay = int(rng.integers(r.action_delay[0], r.action_delay[1] + 1))
        self._apply_scales()

    def _apply_scales(self) -> None:
        m, nominal = self.model, self._nominal
        m.geom_friction[:, 0] = nominal["friction"] * self.scales["friction"]
        m.body_mass[:] = nominal["mass"] * self.scales["mass"]
        m.body_inertia[:] = nominal["inertia"] * self.scales["mass"][:, None]
        if self.kp is not None:
            kp, kd = self.kp * self.scales["kp"], self.kd * self.scales["kd"]
            m.actuator_gainprm[:, 0] = kp
            m.actuator_biasprm[:, 1] = -kp
            m.actuator_biasprm[:, 2] = -kd

    def _draw_command(self, rng: np.random.Generator) -> np.ndarray:
        c = self.task.command
        names = COMMAND_RANGES.get(c.kind, ())
        return np.array([rng.uniform(*getattr(c, name)) for name in names] or [0.0] * 3)

    def _to_control(self, normalized: np.ndarray) -> np.ndarray:
        return self.action_center + self.action_half * normalized

    def step(self, action):
        task, rng = self.task, self.np_random
        raw = np.clip(np.asarray(action, dtype=np.float64), self.action_space.low,
                      self.action_space.high)
        self.action = (raw - self.action_center) / self.action_half  # halves are > 0
        # An action reaches the motors `delay` control steps after the policy sent it.
        self._pending.append(raw)
        while len(self._pending) > self.delay + 1:
            self._pending.popleft()
        if len(self._pending) == self.delay + 1:
            self.data.ctrl[:] = self._pending[0]
        diverged_before = self._divergences()
        mujoco.mj_step(self.model, self.data, nstep=task.substeps)
        self.steps += 1
        self._push(rng)
        # mj_step leaves positions, sensors and contacts one physics step behind qpos/qvel;
        # recompute them so observations, rewards and terminations see the same instant.
        mujoco.mj_forward(self.model, self.data)
        # MuJoCo resets a diverged simulation to the model's initial pose and only warns; that
        # jump is no transition of this episode, so it ends the episode.
        stable = self._divergences() == diverged_before and bool(
            np.isfinite(self.data.qpos).all() and np.isfinite(self.data.qvel).all())
        reward, info = 0.0, {}
        if stable:
            for term in task.rewards:
                value = term.weight * REWARD_TERMS[term.term].value(self, term)
                info[f"reward/{term.term}"] = value
                reward += value
            if task.command.kind == "goal_position":
                info[GOAL_DISTANCE_INFO] = self.goal_distance()
        terminated = not stable or self._terminated()
        resample = round(task.command.resample_seconds / task.control_period)
        if resample and self.steps % resample == 0:
            drawn = self._draw_command(rng)  # drawn even when overridden: the same random stream
            if not self.command_overridden:
                self.command = drawn
        # The observation's `last_action` is the action just taken (action_rate compared it
        # with the one before).
        self.last_action = self.action.copy()
        observation = self._observe(rng)
        return observation, float(reward), terminated, False, info

    def _divergences(self) -> int:
        return sum(int(self.data.warning[w].number) for w in _DIVERGED)

    def _push(self, rng: np.random.Generator) -> None:
        r = self.task.randomization
        interval = round(r.push_interval_seconds / self.task.control_period)
        if interval and r.push_velocity > 0 and self.steps % interval == 0:
            dof = self.robot.base_dof_adr
            self.data.qvel[dof:dof + 2] += rng.uniform(-r.push_velocity, r.push_velocity, 2)

    def _terminated(self) -> bool:
        t = self.task.terminations
        if t.base_height_below > 0 and self.base_pos[2] < t.base_height_below:
            return True
        if t.max_tilt > 0:
            tilt = np.arccos(np.clip(-self.projected_gravity[2], -1.0, 1.0))
            if tilt > t.max_tilt:
                return True
        if len(self.robot.contact_bodies):
            body_of, root_of = self.model.geom_bodyid, self.model.body_rootid
            for contact in self.data.contact[:self.data.ncon]:
                b1, b2 = body_of[contact.geom1], body_of[contact.geom2]
                for body, other in ((b1, b2), (b2, b1)):
                    if body in self.robot.contact_bodies and root_of[other] != root_of[body]:
                        return True
        return False

    def _observe(self, rng: np.random.Generator) -> np.ndarray:
        return compose_observation(self, self.task.observations, self._obs_scales,
                                   self.task.observation_clip, rng, self.observation_noise)

    # --- exact resume ----------------------------------------------------------------------
    def extra_state(self) -> dict:
        """Everything besides physics and `np_random` that the next step depends on."""
        return {
            "command": self.command.tolist(), "command_overridden": self.command_overridden,
            "action": self.action.tolist(),
            "last_action": self.last_action.tolist(), "delay": self.delay,
            "pending": [a.tolist() for a in self._pending], "steps": self.steps,
            "scales": {"friction": self.scales["friction"],
                       "mass": self.scales["mass"].tolist(),
                       "kp": self.scales["kp"].tolist(), "kd": self.scales["kd"].tolist()},
        }

    def load_extra_state(self, state: dict) -> None:
        self.command = np.array(state["command"], dtype=np.float64)
        # Absent from the states saved before set_command existed: no override then.
        self.command_overridden = bool(state.get("command_overridden", False))
        self.action = np.array(state["action"], dtype=np.float64)
        self.last_action = np.array(state["last_action"], dtype=np.float64)
        self.delay = int(state["delay"])
        self._pending = deque(np.array(a, dtype=np.float64) for a in state["pending"])
        self.steps = int(state["steps"])
        scales = state["scales"]
        self.scales = {"friction": float(scales["friction"]),
                       "mass": np.array(scales["mass"]), "kp": np.array(scales["kp"]),
                       "kd": np.array(scales["kd"])}
        self._apply_scales()

    # --- pictures --------------------------------------------------------------------------
    def render(self):
        if self._camera is None:
            from ..rendering import Camera

            self._camera = Camera(self.model, 640, 480, 0 if self.model.ncam else -1,
                                  fast=False)
        return self._camera.render(self.data)

    def close(self):
        if self._camera is not None:
            self._camera.close()
            self._camera = None
