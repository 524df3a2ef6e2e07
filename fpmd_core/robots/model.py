"""Build the MuJoCo model of a robot task: load the MJCF or URDF, then apply the task file.

The task file's actuation section replaces any actuators the model has (a URDF has none), so
an MJCF and a URDF of the same robot become the same simulation. Physics options (timestep,
integrator), added sites, an optional floor and joint armature come from the task file too.
Every name the task file uses (joints, sites, sensors, bodies) is checked here, before any
simulation, and a missing one is an error naming the task file field and the model's names.
"""

from __future__ import annotations

import difflib
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import mujoco
import numpy as np

from .packages import (
    PackageError,
    asset_files,
    asset_uri_file,
    resolve_package_uris,
    resolve_uri,
)
from .schema import RobotTask, TaskFileError
from .terms import OBSERVATION_TERMS, REWARD_TERMS

_INTEGRATOR = {
    "euler": mujoco.mjtIntegrator.mjINT_EULER,
    "rk4": mujoco.mjtIntegrator.mjINT_RK4,
    "implicit": mujoco.mjtIntegrator.mjINT_IMPLICIT,
    "implicitfast": mujoco.mjtIntegrator.mjINT_IMPLICITFAST,
}
_MOVING_JOINTS = (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)


@dataclass
class RobotModel:
    """The compiled model and the indices the env reads every step."""

    model: mujoco.MjModel
    joint_ids: np.ndarray
    qpos_adr: np.ndarray
    dof_adr: np.ndarray
    base_body: int
    """The floating base body (the free joint's), or -1 for a fixed base."""
    base_qpos_adr: int
    base_dof_adr: int
    robot_bodies: np.ndarray
    """Bodies whose mass is randomised: every body below the world but the floor."""
    contact_bodies: np.ndarray
    site_ids: dict[str, int]
    sensor_slices: dict[str, slice]

    @property
    def floating(self) -> bool:
        return self.base_body >= 0


def _fail(task: RobotTask, where: str, message: str) -> TaskFileError:
    return TaskFileError(f"task file {task.path}: {where}: {message}")


def _names(elements) -> list[str]:
    return [e.name for e in elements if e.name]


def _missing(task: RobotTask, where: str, kind: str, name: str, names: list[str]):
    hint = difflib.get_close_matches(name, names, n=1)
    listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    return _fail(task, where, f"the model {task.model!r} has no {kind} {name!r}"
                 + (f" (did you mean {hint[0]!r}?)" if hint else "")
                 + f"; its {kind}s: {listed or 'none'}")


def load_spec(task: RobotTask) -> mujoco.MjSpec:
    path = task.model_path
    if not path.is_file():
        raise _fail(task, "model", f"file not found: {path}")
    try:
        return _load_model(path)
    except PackageError as err:
        raise _fail(task, "model", f"{path}: {err}") from None
    except Exception as err:  # mujoco raises ValueError with the parser's message
        raise _fail(task, "model", f"MuJoCo cannot load {path}: {err}") from None


def _load_model(path: Path) -> mujoco.MjSpec:
    """The model at `path` with its package:// and file:// asset names resolved to files."""
    spec = mujoco.MjSpec.from_file(str(path))
    resolve_package_uris(spec, path)
    return spec


def model_files(path: Path) -> dict[str, Path]:
    """The files a model at `path` reads besides itself, as MuJoCo finds them: MJCF includes
    (nested ones too), and the mesh, height-field, skin and texture files (package:// URIs as
    `resolve_package_uris` finds them, other names relative to the compiler's meshdir or
    texturedir, the file name alone where the model strips paths). Keyed by the URI, else by the
    path relative to the model's folder (so a deploy machine may keep the folder, and its
    packages, elsewhere); sorted. A name that resolves to no file (a model that does not compile)
    is left out: the model's own error says more when the task is built."""
    root = path.parent
    spec = mujoco.MjSpec.from_file(str(path))
    found = {_relative(file, root): file for file in _includes(path, root)}
    for _, kind, name, _ in asset_files(spec):
        uri_file = asset_uri_file(spec, name, path)
        if uri_file is not None:
            key, file = name, uri_file
        else:
            if spec.strippath:
                name = PurePosixPath(name.replace("\\", "/")).name
            directory = spec.texturedir if kind == "texture" else spec.meshdir
            file = root / directory / name
            key = _relative(file, root)
        if file.is_file():
            found[key] = file.resolve()
    return dict(sorted(found.items()))


def locate_model_file(key: str, path: Path) -> Path:
    """The file a `model_files` key of the model at `path` names on this machine (a URI through
    `resolve_uri`: PackageError where its package is not found)."""
    return resolve_uri(key, path) or path.parent / key


def _relative(file: Path, root: Path) -> str:
    return Path(os.path.relpath(file, root)).as_posix()


def _includes(path: Path, root: Path) -> list[Path]:
    """MJCF <include file=...> targets under `path`, recursively; MuJoCo finds a nested one
    beside the file that includes it or beside the main model file."""
    if path.suffix.lower() == ".urdf":
        return []
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError):
        return []
    found = []
    for element in tree.iter("include"):
        name = element.get("file", "")
        for base in (path.parent, root):
            candidate = (base / name).resolve()
            if name and candidate.is_file():
                if candidate not in found:
                    found += [candidate, *_includes(candidate, root)]
                break
    return found


def edit_spec(task: RobotTask, spec: mujoco.MjSpec) -> mujoco.MjSpec:
    """Apply the task file to a loaded model: options, floor, sites, armature, actuators."""
    spec.option.timestep = task.control_period / task.substeps
    spec.option.integrator = _INTEGRATOR[task.integrator]
    for actuator in list(spec.actuators):
        spec.delete(actuator)
    if task.floor:
        floor = spec.worldbody.add_geom()
        floor.name = "floor"
        floor.type = mujoco.mjtGeom.mjGEOM_PLANE
        floor.size = [5.0, 5.0, 0.05]
        floor.rgba = [0.55, 0.6, 0.65, 1.0]
        light = spec.worldbody.add_light()
        light.pos = [0.0, 0.0, 3.0]
        light.dir = [0.0, 0.0, -1.0]
        light.type = mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
    site_names = set(_names(spec.sites))
    body_names = _names(spec.bodies)
    for i, site in enumerate(task.sites):
        if site.name in site_names:
            raise _fail(task, f"sites[{i}].name", f"the model already has a site {site.name!r}")
        body = spec.body(site.body)
        if body is None:
            raise _missing(task, f"sites[{i}].body", "body", site.body, body_names)
        added = body.add_site()
        added.name, added.pos, added.size = site.name, list(site.pos), [0.012, 0.0, 0.0]
        added.rgba = [0.9, 0.1, 0.1, 1.0]
    act = task.actuation
    joint_names = _names(spec.joints)
    kp, kd = act.values("kp"), act.values("kd")
    limits = act.values("effort_limit")
    for i, joint_spec in enumerate(act.joints):
        joint = spec.joint(joint_spec.name)
        if joint is None:
            raise _missing(task, f"actuation.joints[{i}].name", "joint", joint_spec.name,
                           joint_names)
        if joint.type not in _MOVING_JOINTS:
            raise _fail(task, f"actuation.joints[{i}].name", f"joint {joint_spec.name!r} is "
                        "not a hinge or slide joint and cannot be actuated")
        if act.armature is not None:
            joint.armature = act.armature
        actuator = spec.add_actuator()
        actuator.name = joint_spec.name
        actuator.target = joint_spec.name
        actuator.trntype = mujoco.mjtTrn.mjTRN_JOINT
        actuator.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        gain = np.zeros(10)
        bias = np.zeros(10)
        if act.mode == "position":
            # force = kp * (ctrl - q) - kd * qdot, evaluated every physics step like a
            # motor driver's PD loop; ctrl is the position target.
            gain[0], bias[1], bias[2] = kp[i], -kp[i], -kd[i]
            actuator.biastype = mujoco.mjtBias.mjBIAS_AFFINE
            actuator.ctrllimited = 0
        else:
            gain[0] = 1.0
            actuator.biastype = mujoco.mjtBias.mjBIAS_NONE
            actuator.ctrllimited = 1
            actuator.ctrlrange = [-limits[i], limits[i]]
        actuator.gainprm, actuator.biasprm = gain, bias
        if limits[i] > 0:
            actuator.forcelimited = 1
            actuator.forcerange = [-limits[i], limits[i]]
    return spec


def compile_spec(task: RobotTask, spec: mujoco.MjSpec) -> mujoco.MjModel:
    try:
        return spec.compile()
    except Exception as err:
        raise _fail(task, "model", f"MuJoCo cannot compile {task.model_path} with the task "
                    f"file's additions: {err}") from None


def build_robot(task: RobotTask) -> RobotModel:
    """The compiled model of `task` with every name checked; raises TaskFileError."""
    model = compile_spec(task, edit_spec(task, load_spec(task)))
    joint_ids = np.array([model.joint(j.name).id for j in task.actuation.joints])
    base_body, base_qpos, base_dof = -1, -1, -1
    for j in range(model.njnt):
        if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
            base_body = int(model.jnt_bodyid[j])
            base_qpos, base_dof = int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j])
            break
    site_names = [model.site(i).name for i in range(model.nsite)]
    sensor_names = [model.sensor(i).name for i in range(model.nsensor)]
    body_names = [model.body(i).name for i in range(model.nbody)]
    site_ids, sensor_slices = {}, {}

    def need_site(where: str, name: str) -> None:
        if name not in site_names:
            raise _missing(task, where, "site", name, site_names)
        site_ids[name] = site_names.index(name)

    if task.command.kind == "goal_position":
        need_site("command.site", task.command.site)
    for i, term in enumerate(task.observations):
        where = f"observations[{i}]"
        if OBSERVATION_TERMS[term.term].floating_base and base_body < 0:
            raise _fail(task, f"{where}.term", f"the {term.term!r} term needs a floating base "
                        f"(a free joint); the model {task.model!r} has none")
        if term.site:
            need_site(f"{where}.site", term.site)
        if term.sensor:
            if term.sensor not in sensor_names:
                raise _missing(task, f"{where}.sensor", "sensor", term.sensor, sensor_names)
            sensor = model.sensor(term.sensor)
            start = int(sensor.adr[0])
            sensor_slices[term.sensor] = slice(start, start + int(sensor.dim[0]))
            if isinstance(term.scale, tuple) and len(term.scale) != int(sensor.dim[0]):
                raise _fail(task, f"{where}.scale", f"expected one number or a list of "
                            f"{int(sensor.dim[0])} (the size of sensor {term.sensor!r}), got a "
                            f"list of {len(term.scale)}")
    for i, term in enumerate(task.rewards):
        if REWARD_TERMS[term.term].floating_base and base_body < 0:
            raise _fail(task, f"rewards[{i}].term", f"the {term.term!r} term needs a floating "
                        f"base (a free joint); the model {task.model!r} has none")
    t, r = task.terminations, task.randomization
    for name, value in (("terminations.base_height_below", t.base_height_below),
                        ("terminations.max_tilt", t.max_tilt),
                        ("randomization.push_velocity", r.push_velocity)):
        if value > 0 and base_body < 0:
            raise _fail(task, name, f"needs a floating base (a free joint); the model "
                        f"{task.model!r} has none")
    contact_bodies = []
    for i, name in enumerate(t.body_contacts):
        if name not in body_names:
            raise _missing(task, f"terminations.body_contacts[{i}]", "body", name, body_names)
        contact_bodies.append(body_names.index(name))
    return RobotModel(
        model=model,
        joint_ids=joint_ids,
        qpos_adr=model.jnt_qposadr[joint_ids].copy(),
        dof_adr=model.jnt_dofadr[joint_ids].copy(),
        base_body=base_body,
        base_qpos_adr=base_qpos,
        base_dof_adr=base_dof,
        robot_bodies=np.arange(1, model.nbody),
        contact_bodies=np.array(contact_bodies, dtype=int),
        site_ids=site_ids,
        sensor_slices=sensor_slices,
    )
