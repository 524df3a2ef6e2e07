"""The library of observation and reward terms a task file can name, each documented here.

A term is data in the task file (`{term: joint_pos, scale: 1.0}`); its meaning is one function
here. Observation values are in SI units before the task file's scale; reward values are
multiplied by the term's weight and summed into the step reward (no extra dt factor).

Velocities of a floating base are in the base body's frame; "floating base" means the model has
a free joint (the base is that joint's body).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

CONTROL_MODES = ("position", "effort")
COMMAND_KINDS = ("none", "goal_position", "velocity")
COMMAND_RANGES = {"goal_position": ("x", "y", "z"), "velocity": ("vx", "vy", "yaw_rate")}
"""The command fields each command kind needs, in the command vector's order."""
INTEGRATORS = ("euler", "rk4", "implicit", "implicitfast")
GOAL_DISTANCE_INFO = "goal_distance"
"""The step-info key of a goal task's distance (m) from the commanded site to its goal (robot
tasks with a goal_position command); the trainer's evaluation reads it."""


@dataclass(frozen=True)
class ObservationTermInfo:
    doc: str
    value: Callable
    """value(env, term) -> 1-D array in SI units."""
    size: str
    """'joints' (one per actuated joint), '3', or 'model' (the sensor's dimension)."""
    params: tuple[str, ...] = ()
    floating_base: bool = False
    command: str = ""
    """The command kind the term needs, if any."""


@dataclass(frozen=True)
class RewardTermInfo:
    doc: str
    value: Callable
    """value(env, term) -> float, before the weight."""
    params: dict[str, float | None] = field(default_factory=dict)
    """Parameters and their defaults (None: the task file must give it)."""
    command: str = ""
    """The command kind the term needs, if any."""
    floating_base: bool = False


def _param(term, name: str, info: RewardTermInfo) -> float:
    value = getattr(term, name)
    return info.params[name] if value is None else value


OBSERVATION_TERMS: dict[str, ObservationTermInfo] = {
    "joint_pos": ObservationTermInfo(
        "actuated joint positions minus their default positions (rad)",
        lambda env, term: env.joint_pos - env.default_pos, "joints"),
    "joint_vel": ObservationTermInfo(
        "actuated joint velocities (rad/s)", lambda env, term: env.joint_vel, "joints"),
    "base_ang_vel": ObservationTermInfo(
        "base angular velocity in the base frame (rad/s)",
        lambda env, term: env.base_ang_vel, "3", floating_base=True),
    "base_lin_vel": ObservationTermInfo(
        "base linear velocity in the base frame (m/s); a real robot must estimate it",
        lambda env, term: env.base_lin_vel, "3", floating_base=True),
    "projected_gravity": ObservationTermInfo(
        "the unit gravity vector in the base frame ((0, 0, -1) when upright)",
        lambda env, term: env.projected_gravity, "3", floating_base=True),
    "last_action": ObservationTermInfo(
        "the most recent action (the one just applied), normalised to [-1, 1]; zeros after a "
        "reset",
        lambda env, term: env.last_action, "joints"),
    "command": ObservationTermInfo(
        "the command: goal (x, y, z) in metres, or (vx, vy, yaw_rate) in m/s and rad/s",
        lambda env, term: env.command, "3"),
    "goal_offset": ObservationTermInfo(
        "goal minus the commanded site's position, world frame (m); needs a goal_position "
        "command", lambda env, term: env.command - env.site_pos(env.command_site), "3",
        command="goal_position"),
    "sensor": ObservationTermInfo(
        "a MuJoCo sensor's reading, named by `sensor` (its dimension and units)",
        lambda env, term: env.sensor(term.sensor), "model", params=("sensor",)),
    "site_pos": ObservationTermInfo(
        "a site's position in the world frame (m), named by `site`",
        lambda env, term: env.site_pos(term.site), "3", params=("site",)),
}


def compose_observation(source, terms, scales, clip: float,
                        rng: np.random.Generator | None = None, add_noise: bool = True
                        ) -> np.ndarray:
    """The observation: `terms` (ObservationTerm) concatenated in order, each `(value + noise) *
    scale`, then clipped to +-`clip` (0: no clip), NaN/Inf -> 0.

    `source` is what the terms read: a `RobotEnv` (the simulation) or a
    `fpmd_core.robots.observer.RobotReadings` (a deployed robot's measurements); this one function
    serves both, so the controller builds exactly the observation the policy was trained on.
    Noise (U(-noise, noise) per element, in the term's units) is drawn from `rng` only when one is
    given: training adds it, deployment does not. `add_noise=False` draws it and leaves it out:
    the observation a robot would measure, with the random stream (pushes, commands, later
    noise) exactly as in training."""
    parts = []
    for term, scale in zip(terms, scales, strict=True):
        value = np.asarray(OBSERVATION_TERMS[term.term].value(source, term), dtype=np.float64)
        if rng is not None and term.noise > 0:
            noise = rng.uniform(-term.noise, term.noise, value.shape)
            if add_noise:
                value = value + noise
        parts.append(value * scale)
    observation = np.concatenate(parts)
    if clip > 0:
        observation = np.clip(observation, -clip, clip)
    return np.nan_to_num(observation, nan=0.0, posinf=0.0, neginf=0.0)


def observation_size(term: str, joints: int) -> int | None:
    """The size of an observation term, None when only the model knows it (sensors)."""
    size = OBSERVATION_TERMS[term].size
    if size == "joints":
        return joints
    return None if size == "model" else int(size)


def _joint_limit(env, term) -> float:
    fraction = _param(term, "soft_limit", REWARD_TERMS["joint_limit"])
    low, high = env.joint_range[:, 0], env.joint_range[:, 1]
    middle, half = (low + high) / 2, (high - low) / 2 * fraction
    excess = np.abs(env.joint_pos - middle) - half
    return float(np.sum(np.clip(excess, 0.0, None) * env.joint_limited))


def _tracking_lin_vel(env, term) -> float:
    sigma = _param(term, "sigma", REWARD_TERMS["tracking_lin_vel"])
    error = np.sum((env.command[:2] - env.base_lin_vel[:2]) ** 2)
    return float(np.exp(-error / sigma))


def _tracking_ang_vel(env, term) -> float:
    sigma = _param(term, "sigma", REWARD_TERMS["tracking_ang_vel"])
    error = (env.command[2] - env.base_ang_vel[2]) ** 2
    return float(np.exp(-error / sigma))


REWARD_TERMS: dict[str, RewardTermInfo] = {
    "alive": RewardTermInfo("1 every step", lambda env, term: 1.0),
    "goal_distance": RewardTermInfo(
        "distance (m) from the commanded site to the goal; use a negative weight",
        lambda env, term: env.goal_distance(), command="goal_position"),
    "tracking_lin_vel": RewardTermInfo(
        "exp(-|command (vx, vy) - base (vx, vy)|^2 / sigma), base frame",
        _tracking_lin_vel, params={"sigma": 0.25}, command="velocity", floating_base=True),
    "tracking_ang_vel": RewardTermInfo(
        "exp(-(command yaw_rate - base yaw rate)^2 / sigma)",
        _tracking_ang_vel, params={"sigma": 0.25}, command="velocity", floating_base=True),
    "lin_vel_z": RewardTermInfo(
        "squared vertical base velocity (base frame)",
        lambda env, term: float(env.base_lin_vel[2] ** 2), floating_base=True),
    "ang_vel_xy": RewardTermInfo(
        "squared roll and pitch rates of the base",
        lambda env, term: float(np.sum(env.base_ang_vel[:2] ** 2)), floating_base=True),
    "orientation": RewardTermInfo(
        "squared horizontal part of the projected gravity (0 when upright)",
        lambda env, term: float(np.sum(env.projected_gravity[:2] ** 2)), floating_base=True),
    "base_height": RewardTermInfo(
        "squared difference of the base height and `target` (m)",
        lambda env, term: float((env.base_pos[2] - term.target) ** 2),
        params={"target": None}, floating_base=True),
    "action_rate": RewardTermInfo(
        "squared change of the normalised action since the previous step",
        lambda env, term: float(np.sum((env.action - env.last_action) ** 2))),
    "torque": RewardTermInfo(
        "sum of squared actuator torques (N m)^2",
        lambda env, term: float(np.sum(env.data.actuator_force ** 2))),
    "joint_vel": RewardTermInfo(
        "sum of squared joint velocities",
        lambda env, term: float(np.sum(env.joint_vel ** 2))),
    "pose_deviation": RewardTermInfo(
        "sum of squared differences of the joint positions from the default pose",
        lambda env, term: float(np.sum((env.joint_pos - env.default_pos) ** 2))),
    "joint_limit": RewardTermInfo(
        "sum over limited joints of how far (rad) each is beyond `soft_limit` x its range, "
        "centred", _joint_limit, params={"soft_limit": 0.9}),
}
