"""`robot_metadata`: what a deployed controller needs to know about a robot task, as plain data.

The controller on the real robot reads the same joints in the same order, builds the same
observation (terms, sizes, scales, clip) and turns the policy's [-1, 1] action into the same
motor command (position target = default + action_scale * action with the given kp and kd, or
torque = effort_limit * action). Everything here is JSON-serialisable.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gymnasium as gym

from .env import RobotEnv
from .model import locate_model_file, model_files
from .packages import PackageError
from .schema import RobotTask, TaskFileError, load_task
from .terms import COMMAND_RANGES, OBSERVATION_TERMS

METADATA_VERSION = 1


def _robot_env(env: gym.Env) -> RobotEnv | None:
    inner = env.unwrapped
    return inner if isinstance(inner, RobotEnv) else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def locate_task_file(robot: dict, task_file: str | Path | None = None) -> Path:
    """The task file of a robot policy (`robot`: its metadata), checked with its model against
    the digests recorded at training (`check_task_files`), or TaskFileError. `task_file`: where
    the user says it is. Else the path recorded at training, and where that is not a file (a
    deploy machine with another layout), its last two parts (`sim/arm_reach.yaml`) looked up as
    a task id is: the working directory, the checkout, the installed package's share folder."""
    from .schema import resolve_task_path

    recorded = Path(robot["task_file"])
    if task_file:
        path = Path(task_file)
    elif recorded.is_file():
        path = recorded
    else:
        path = resolve_task_path(str(Path(recorded.parent.name) / recorded.name))
    if not path.is_file():
        raise TaskFileError(f"task file {path}: not found; the policy was trained on "
                            f"{recorded}: give the path of that file (or a copy of it)")
    check_task_files(path, robot)
    return path


def check_task_files(path: Path, robot: dict) -> None:
    """TaskFileError unless the task file at `path`, and its model, are the files a policy was
    trained on (`robot`: its metadata; `model_sha256` and `model_files`, the model's includes,
    meshes and textures, are checked when recorded: policies exported before them carry less).
    Any edit of any of them, a comment included, makes another file: the policy knows the old
    robot."""
    _check_unchanged(path, robot["task_file_sha256"], f"task file {path}",
                     "robot.task_file_sha256")
    if not robot.get("model_sha256"):
        return
    model = load_task(path).model_path
    _check_unchanged(model, robot["model_sha256"], f"model {model} of task file {path}",
                     "robot.model_sha256")
    for name, recorded in robot.get("model_files", {}).items():
        what, field = f"file {name} of model {model}", f"robot.model_files[{name!r}]"
        try:
            file = locate_model_file(name, model)
        except PackageError as err:
            raise TaskFileError(f"{what}: {err} (the policy was trained with it: its metadata "
                                f"{field})") from None
        _check_unchanged(file, recorded, what, field)


def _check_unchanged(path: Path, recorded: str, what: str, field: str) -> None:
    digest = _sha256(path)
    if not digest:
        raise TaskFileError(f"{what}: not found ({path}); the policy was trained with it "
                            f"(its metadata {field}): restore it, or retrain without it")
    if digest != recorded:
        raise TaskFileError(
            f"{what}: changed since the policy was trained on it (sha256 {digest[:12]}..., the "
            f"policy's metadata {field} says {recorded[:12]}...); expected the same file: "
            "restore it, or retrain on the new one")


def model_file_digests(model: Path) -> dict[str, str]:
    """sha256 of each file the model reads besides itself (includes, meshes, textures, ...), by
    its `model_files` key: a URI, or its path relative to the model's folder (a deploy machine
    may lay the folder, and its packages, out elsewhere)."""
    return {key: _sha256(file) for key, file in model_files(model).items()}


def robot_metadata(env_or_task: gym.Env | RobotTask | str | Path) -> dict:
    """Deploy metadata of a robot task: from an env made by `make_env("sim/<name>.yaml")`, a
    loaded `RobotTask` or a task file path. Raises TaskFileError for a bad task file and
    TypeError for an env that is not a robot task."""
    if isinstance(env_or_task, gym.Env):
        robot = _robot_env(env_or_task)
        if robot is None:
            raise TypeError(f"robot_metadata: {env_or_task.unwrapped!r} is not a robot task env "
                            "(made from a sim/<name>.yaml task file)")
    else:
        task = env_or_task if isinstance(env_or_task, RobotTask) else load_task(env_or_task)
        robot = RobotEnv(task)
    task, act = robot.task, robot.task.actuation
    position = act.mode == "position"
    observations, start = [], 0
    for term, (name, size), scale in zip(task.observations, robot.obs_terms,
                                         robot._obs_scales, strict=True):
        entry = {"term": term.term, "name": name, "start": start, "size": size,
                 "scale": scale.tolist(), "noise": term.noise,
                 "description": OBSERVATION_TERMS[term.term].doc}
        if term.sensor:
            entry["sensor"] = term.sensor
        if term.site:
            entry["site"] = term.site
        observations.append(entry)
        start += size
    command = task.command
    return {
        "version": METADATA_VERSION,
        "name": task.name,
        "task_file": task.path,
        "task_file_sha256": _sha256(Path(task.path)),
        "model": str(task.model_path),
        "model_sha256": _sha256(task.model_path),
        "model_files": model_file_digests(task.model_path),
        "control_mode": act.mode,
        "control_period": task.control_period,
        "physics_timestep": task.control_period / task.substeps,
        "substeps": task.substeps,
        "episode_steps": task.episode_steps,
        "joint_names": list(act.joint_names),
        "default_joint_pos": list(act.defaults),
        "kp": list(act.values("kp")) if position else [],
        "kd": list(act.values("kd")) if position else [],
        "action_scale": list(act.values("action_scale")) if position else [],
        "effort_limit": list(act.values("effort_limit")),
        "action_rule": ("target = default_joint_pos + action_scale * action" if position
                        else "torque = effort_limit * action") + ", action clipped to [-1, 1]",
        "action_low": (robot.action_center - robot.action_half).tolist(),
        "action_high": (robot.action_center + robot.action_half).tolist(),
        "floating_base": robot.robot.floating,
        "observations": observations,
        "obs_dim": start,
        "observation_rule": "concatenate terms in order, each (value + noise) * scale"
                            + (f", then clip to +-{task.observation_clip}"
                               if task.observation_clip > 0 else ""),
        "observation_clip": task.observation_clip,
        "command": {
            "kind": command.kind,
            "fields": list(COMMAND_RANGES.get(command.kind, ())),
            "ranges": {name: list(getattr(command, name))
                       for name in COMMAND_RANGES.get(command.kind, ())},
            "resample_seconds": command.resample_seconds,
            "site": command.site,
        },
    }
