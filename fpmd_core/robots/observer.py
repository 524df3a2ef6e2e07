"""A robot policy's observation from what a deployed robot measures.

`RobotEnv` computes its observation from the simulation. On a robot (or over ROS from
`mujoco_sim`) the same terms come from the joint encoders, an IMU, the command the robot was given
and the action it sent last. `RobotObserver` builds the observation from those readings with the
policy's metadata (`robot_metadata`), through `terms.compose_observation`, the function the env
uses: each term is defined once, so the deployed observation is the trained one by construction
(test/test_robot_observer.py checks it over rollouts).

Which terms a robot can measure (`MEASURED_TERMS`): joint positions and velocities, the last
action, the command, the base angular velocity and projected gravity (from an IMU: orientation
and angular velocity), and site positions and the goal offset of a fixed-base robot (forward
kinematics of the task file's model at the measured joint positions). Not measurable without a
state estimator or the simulator: `base_lin_vel`, `sensor` terms, sites of a floating-base robot.
A policy that uses them is refused with the term's name.
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from .schema import ObservationTerm, TaskFileError, load_task
from .terms import compose_observation

IMU_TERMS = frozenset({"base_ang_vel", "projected_gravity"})
KINEMATIC_TERMS = frozenset({"goal_offset", "site_pos"})
MEASURED_TERMS = frozenset({"joint_pos", "joint_vel", "last_action", "command"}) | IMU_TERMS \
    | KINEMATIC_TERMS
_GRAVITY = np.array([0.0, 0.0, -1.0])


class ObserverError(ValueError):
    """The policy's observation cannot be built from a robot's measurements; the message names
    the term or file and what would be needed."""


class _Kinematics:
    """Site positions of a fixed-base robot at given joint positions (MuJoCo forward
    kinematics of the task file's model, the simulation's own)."""

    def __init__(self, task_file: str | Path | None, robot_meta: dict,
                 joint_names: list[str]):
        from .metadata import locate_task_file  # here: only policies with site terms need it
        from .model import build_robot

        try:
            path = locate_task_file(robot_meta, task_file)
            robot = build_robot(load_task(path))
        except TaskFileError as error:
            raise ObserverError(
                f"{error} (the observation's site terms need the robot's model for forward "
                "kinematics)") from None
        model = robot.model
        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, int(j))
                 for j in robot.joint_ids]
        if names != list(joint_names):
            raise ObserverError(f"task file {path}: actuated joints {names} differ from the "
                                f"policy's joint_names {list(joint_names)}")
        if model.nq != len(robot.qpos_adr):
            raise ObserverError(
                f"task file {path}: the model has joints that are not actuated (nq "
                f"{model.nq}, {len(robot.qpos_adr)} actuated); site positions need every joint "
                "measured")
        self.model, self.data = model, mujoco.MjData(model)
        self.qpos_adr, self.site_ids = robot.qpos_adr, robot.site_ids

    def site_positions(self, joint_pos: np.ndarray) -> dict[str, np.ndarray]:
        self.data.qpos[self.qpos_adr] = joint_pos
        mujoco.mj_kinematics(self.model, self.data)
        return {name: self.data.site_xpos[i].copy() for name, i in self.site_ids.items()}


class RobotReadings:
    """One instant of a robot as measured, with the attributes the observation terms read
    (the same names as `RobotEnv`'s)."""

    def __init__(self, observer: RobotObserver, joint_pos, joint_vel, command, last_action,
                 base_quat=None, base_ang_vel=None):
        self.default_pos = observer.default_pos
        self.command_site = observer.command_site
        self.joint_pos = _vector("joint positions", joint_pos, observer.joints)
        self.joint_vel = _vector("joint velocities", joint_vel, observer.joints)
        self.command = _vector("command", command, 3)
        self.last_action = _vector("last action", last_action, observer.joints)
        self._base_quat, self._base_ang_vel = base_quat, base_ang_vel
        self._kinematics = observer._kinematics
        self._sites: dict[str, np.ndarray] | None = None

    @property
    def base_ang_vel(self) -> np.ndarray:
        return _vector("IMU angular velocity", self._need_imu(self._base_ang_vel), 3)

    @property
    def projected_gravity(self) -> np.ndarray:
        quat = _vector("IMU orientation", self._need_imu(self._base_quat), 4)
        norm = float(np.linalg.norm(quat))
        if not norm > 1e-6:
            raise ValueError(f"IMU orientation {quat.tolist()} is not a rotation (norm {norm:g})")
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, quat / norm)
        return rotation.reshape(3, 3).T @ _GRAVITY

    def site_pos(self, name: str) -> np.ndarray:
        if self._sites is None:
            self._sites = self._kinematics.site_positions(self.joint_pos)
        return self._sites[name]

    @staticmethod
    def _need_imu(value):
        if value is None:
            raise ValueError("the observation needs an IMU reading and none was given")
        return value


def _vector(what: str, values, size: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size != size:
        raise ValueError(f"{what}: {array.size} values, expected {size}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: {array.tolist()} is not finite")
    return array


class RobotObserver:
    """Builds a robot policy's observation from measurements, as its metadata describes it.

    `robot` is the policy's `robot` metadata (`robot_metadata`). `task_file` is needed only when
    the observation has site terms (forward kinematics of its model); by default the metadata's
    own path, checked against the metadata's sha256. Raises ObserverError for a policy whose
    observation a robot cannot measure (see the module docstring)."""

    def __init__(self, robot: dict, task_file: str | Path | None = None):
        entries = robot["observations"]
        self.terms = [ObservationTerm(term=e["term"], scale=tuple(e["scale"]),
                                      noise=float(e.get("noise", 0.0)),
                                      sensor=e.get("sensor", ""), site=e.get("site", ""))
                      for e in entries]
        self.scales = [np.asarray(e["scale"], dtype=np.float64) for e in entries]
        self.clip = float(robot.get("observation_clip", 0.0))
        self.joint_names = list(robot["joint_names"])
        self.joints = len(self.joint_names)
        self.default_pos = np.asarray(robot["default_joint_pos"], dtype=np.float64)
        self.command_site = robot["command"].get("site", "")
        self.obs_dim = int(robot["obs_dim"])
        # The env's normalisation of an action (RobotEnv: target = default + scale * action, or
        # torque = limit * action), from the exact values rather than the float32 bounds.
        if robot["control_mode"] == "position":
            self._action_center = self.default_pos
            self._action_half = np.asarray(robot["action_scale"], dtype=np.float64)
        else:
            self._action_center = np.zeros(self.joints)
            self._action_half = np.asarray(robot["effort_limit"], dtype=np.float64)
        names = [t.term for t in self.terms]
        unmeasured = [n for n in names if n not in MEASURED_TERMS]
        if unmeasured:
            raise ObserverError(
                f"observation term {unmeasured[0]!r} cannot be measured from joint states, an "
                f"IMU and a command (measurable: {', '.join(sorted(MEASURED_TERMS))}); publish "
                "the observation vector instead")
        self.needs_imu = any(n in IMU_TERMS for n in names)
        kinematic = [n for n in names if n in KINEMATIC_TERMS]
        self._kinematics = None
        if kinematic:
            if robot["floating_base"]:
                raise ObserverError(
                    f"observation term {kinematic[0]!r} of a floating-base robot needs the "
                    "base position in the world, which joint states and an IMU do not give; "
                    "publish the observation vector instead")
            self._kinematics = _Kinematics(task_file, robot, self.joint_names)

    def normalized_action(self, command) -> np.ndarray:
        """A command in env units (what the robot was sent) as the [-1, 1] action the
        `last_action` term shows, as RobotEnv normalises it."""
        return np.clip((np.asarray(command, dtype=np.float64) - self._action_center)
                       / self._action_half, -1.0, 1.0)

    def observe(self, joint_pos, joint_vel, command, last_action, base_quat=None,
                base_ang_vel=None) -> np.ndarray:
        """The observation (float64, `obs_dim`), without training noise; ValueError naming a
        missing or non-finite reading. `joint_pos` are absolute joint positions (rad) in the
        metadata's joint order, `base_quat` the base orientation (w, x, y, z) in the world
        frame, `base_ang_vel` in the base frame, `last_action` normalised to [-1, 1]."""
        readings = RobotReadings(self, joint_pos, joint_vel, command, last_action, base_quat,
                                 base_ang_vel)
        return compose_observation(readings, self.terms, self.scales, self.clip)
