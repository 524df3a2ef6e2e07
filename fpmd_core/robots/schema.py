"""The robot task file schema: typed dataclasses, one per section, and a strict loader.

A task file (`sim/<name>.yaml`) names a MuJoCo model (MJCF or URDF), the actuated joints and
how they are driven, the observation terms in order, the command, the reward terms, the
terminations and the domain randomisation. The same file drives training, the sim node and the
deployed controller (`robot_metadata`).

Every field below has a type, a default (or is required) and a comment. Loading is strict: an
unknown field names its closest match, a wrong type or value names the field's path
(`observations[2].scale`) and the expected value. Checks that need the model (joint, site,
sensor and body names) happen when the model is built (`fpmd_core.robots.model`), still before
any simulation.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..tasks import TaskError
from .terms import (
    COMMAND_KINDS,
    COMMAND_RANGES,
    CONTROL_MODES,
    INTEGRATORS,
    OBSERVATION_TERMS,
    REWARD_TERMS,
    observation_size,
)

Range = tuple[float, float]
"""[low, high], low <= high; a value is drawn uniformly from it."""


class TaskFileError(TaskError):
    """A task file is missing, unparsable or invalid; the message names the file and field."""


_REQUIRED = object()  # the default of a field the file must give


def required() -> Any:
    return field(default=_REQUIRED)


@dataclass(frozen=True)
class SiteSpec:
    """A site added to the model (a URDF has none): a named point fixed to a body."""

    name: str = required()
    """Site name, used by commands (`command.site`) and observations (`site_pos`)."""
    body: str = required()
    """The body (URDF: link) it is fixed to."""
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Position in the body's frame, metres."""


@dataclass(frozen=True)
class JointSpec:
    """One actuated joint. Unset gains and limits take the `actuation` section's values."""

    name: str = required()
    """Joint name in the model (hinge or slide)."""
    default: float = 0.0
    """Default position (rad or m): the reset pose and the centre of position targets."""
    kp: float | None = None
    """Position mode: stiffness, N m/rad (N/m for slide joints)."""
    kd: float | None = None
    """Position mode: damping, N m s/rad."""
    action_scale: float | None = None
    """Position mode: target = default + action_scale * action, action in [-1, 1]."""
    effort_limit: float | None = None
    """Torque (force) limit; effort mode: torque = effort_limit * action. 0 = unlimited."""


@dataclass(frozen=True)
class Actuation:
    """How the policy drives the joints; replaces any actuators the model has."""

    joints: tuple[JointSpec, ...] = required()
    """The actuated joints, in action order."""
    mode: str = "position"
    """position: PD to default + action_scale * action (the legged-robot deploy convention);
    effort: torque = effort_limit * action."""
    kp: float = 0.0
    """Default stiffness of every joint (position mode)."""
    kd: float = 0.0
    """Default damping of every joint (position mode)."""
    action_scale: float = 0.0
    """Default action scale of every joint (position mode), rad per unit action."""
    effort_limit: float = 0.0
    """Default torque limit of every joint; 0 = unlimited (position mode only)."""
    armature: float | None = None
    """Rotor inertia added to every actuated joint (kg m^2); unset keeps the model's. URDF has
    no armature, so set it here for both model formats."""

    def values(self, name: str) -> tuple[float, ...]:
        """Per-joint `kp`, `kd`, `action_scale` or `effort_limit`, section default filled in."""
        default = getattr(self, name)
        return tuple(default if getattr(j, name) is None else float(getattr(j, name))
                     for j in self.joints)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def defaults(self) -> tuple[float, ...]:
        return tuple(j.default for j in self.joints)


@dataclass(frozen=True)
class ObservationTerm:
    """One observation term; the observation is the terms concatenated in file order, each
    `(value + noise) * scale`, noise ~ U(-noise, noise) in the term's own units."""

    term: str = required()
    """A name from the library (`fpmd_core.robots.terms.OBSERVATION_TERMS`)."""
    scale: float | tuple[float, ...] = 1.0
    """One factor, or one per element of the term."""
    noise: float = 0.0
    """Half-width of uniform noise added before scaling, in the term's units."""
    sensor: str = ""
    """`sensor` term: the MuJoCo sensor's name."""
    site: str = ""
    """`site_pos` term: the site's name."""


@dataclass(frozen=True)
class RewardTerm:
    """One reward term: reward += weight * value; values are listed in the terms library."""

    term: str = required()
    """A name from the library (`fpmd_core.robots.terms.REWARD_TERMS`)."""
    weight: float = required()
    """Multiplies the term's value (negative for penalties)."""
    sigma: float | None = None
    """Tracking terms: width of exp(-error^2 / sigma)."""
    target: float | None = None
    """base_height: the target height, metres."""
    soft_limit: float | None = None
    """joint_limit: fraction of each joint's range, centred, beyond which the penalty starts."""


@dataclass(frozen=True)
class Command:
    """What the policy is asked to do; drawn at every reset and every `resample_seconds`."""

    kind: str = "none"
    """none, goal_position (a goal for `site`) or velocity (vx, vy, yaw_rate of the base)."""
    site: str = ""
    """goal_position: the site that should reach the goal."""
    x: Range | None = None
    """goal_position: goal x range, metres, world frame."""
    y: Range | None = None
    """goal_position: goal y range."""
    z: Range | None = None
    """goal_position: goal z range."""
    vx: Range | None = None
    """velocity: forward velocity range, m/s, base heading frame."""
    vy: Range | None = None
    """velocity: lateral velocity range, m/s."""
    yaw_rate: Range | None = None
    """velocity: yaw rate range, rad/s."""
    resample_seconds: float = 0.0
    """Draw a new command every this many seconds; 0 = once per episode."""


@dataclass(frozen=True)
class Reset:
    """The initial state: the model's pose, actuated joints at their defaults plus noise."""

    joint_pos_noise: float = 0.0
    """Half-width of uniform noise added to each default joint position."""
    joint_vel_noise: float = 0.0
    """Half-width of uniform initial joint velocities."""


@dataclass(frozen=True)
class Terminations:
    """Conditions that end an episode early (terminated, not truncated); 0 / empty = off.
    A non-finite simulation state always terminates."""

    base_height_below: float = 0.0
    """Floating base: terminate when the base body is lower than this, metres."""
    max_tilt: float = 0.0
    """Floating base: terminate when the base tilts more than this from upright, radians."""
    body_contacts: tuple[str, ...] = ()
    """Terminate when any of these bodies touches anything outside the robot (e.g. the torso)."""


@dataclass(frozen=True)
class Randomization:
    """Domain randomisation, drawn at every reset. [1, 1] and [0, 0] ranges are off."""

    friction: Range = (1.0, 1.0)
    """Scale of every geom's sliding friction (one draw per episode)."""
    link_mass: Range = (1.0, 1.0)
    """Scale of each robot body's mass and inertia (one draw per body)."""
    kp_scale: Range = (1.0, 1.0)
    """Scale of each joint's kp (one draw per joint)."""
    kd_scale: Range = (1.0, 1.0)
    """Scale of each joint's kd (one draw per joint)."""
    action_delay: tuple[int, int] = (0, 0)
    """Control steps between the policy's action and its application, drawn per episode."""
    push_interval_seconds: float = 0.0
    """Floating base: push the base every this many seconds; 0 = never."""
    push_velocity: float = 0.0
    """Floating base: a push adds a horizontal base velocity of up to this, m/s."""


@dataclass(frozen=True)
class RobotTask:
    """One robot task file."""

    model: str = required()
    """MJCF (.xml) or URDF (.urdf) file, relative to the task file."""
    actuation: Actuation = required()
    """The actuated joints and how they are driven."""
    observations: tuple[ObservationTerm, ...] = required()
    """The observation terms, in order."""
    rewards: tuple[RewardTerm, ...] = required()
    """The reward terms, summed."""
    name: str = ""
    """A name for logs and metadata; "" = the file's stem."""
    control_period: float = 0.02
    """Seconds between two policy actions (one env step)."""
    substeps: int = 4
    """Physics steps per control period; the physics timestep is control_period / substeps."""
    integrator: str = "implicitfast"
    """MuJoCo integrator: euler, rk4, implicit or implicitfast."""
    episode_seconds: float = 10.0
    """Episode length; the time limit is round(episode_seconds / control_period) steps."""
    floor: bool = False
    """Add a ground plane (z = 0) and a light to the model."""
    observation_clip: float = 0.0
    """Clip every observation element to [-clip, clip] after scaling; 0 = no clip."""
    sites: tuple[SiteSpec, ...] = ()
    """Sites to add to the model."""
    command: Command = Command()
    """The command (goal or velocity), part of the observation via the `command` term."""
    reset: Reset = Reset()
    """Initial state noise."""
    terminations: Terminations = Terminations()
    """Early episode ends."""
    randomization: Randomization = Randomization()
    """Domain randomisation."""
    path: str = field(default="", metadata={"internal": True})
    """The task file this was loaded from (set by the loader, not read from the file)."""

    @property
    def episode_steps(self) -> int:
        return max(1, round(self.episode_seconds / self.control_period))

    @property
    def model_path(self) -> Path:
        return (Path(self.path).parent / self.model).resolve()


# --- parsing ----------------------------------------------------------------------------------

def _fail(where: str, message: str) -> typing.NoReturn:
    raise TaskFileError(f"{where}: {message}")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _number(where: str, value: Any, kind: type) -> float | int:
    if isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 as a string
            value = float(value) if kind is float else value
        except ValueError:
            pass
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            _fail(where, f"expected an integer, got {_describe(value)}")
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        _fail(where, f"expected a number, got {_describe(value)}")
    if not math.isfinite(value):
        _fail(where, f"expected a finite number, got {value!r}")
    return float(value)


def _parse(where: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 2:  # float | tuple[float, ...]: a list picks the tuple
            pick = options[1] if isinstance(value, (list, tuple)) else options[0]
            return _parse(where, value, pick)
        return _parse(where, value, options[0])
    if dataclasses.is_dataclass(annotation):
        return _parse_dataclass(where, value, annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(where, f"expected a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            _fail(where, f"expected a list of {len(args)} values, got {len(value)}: {value!r}")
        pairs = zip(value, args, strict=True)
        return tuple(_parse(f"{where}[{i}]", v, a) for i, (v, a) in enumerate(pairs))
    if annotation is float or annotation is int:
        return _number(where, value, annotation)
    if annotation is bool:
        if not isinstance(value, bool):
            _fail(where, f"expected true or false, got {_describe(value)}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            _fail(where, f"expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} at {where}")  # pragma: no cover


def _parse_dataclass(where: str, value: Any, cls: type) -> Any:
    if not isinstance(value, dict):
        _fail(where or "task file", f"expected a mapping of fields, got {_describe(value)}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    names = [f.name for f in fields]
    prefix = f"{where}." if where else ""
    for key in value:
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            _fail(f"{prefix}{key}", "unknown field"
                  + (f" (did you mean {hint[0]!r}?)" if hint else "")
                  + f"; expected one of {', '.join(names)}")
    kwargs = {}
    for f in fields:
        if f.name in value:
            kwargs[f.name] = _parse(f"{prefix}{f.name}", value[f.name], hints[f.name])
        elif f.default is _REQUIRED:
            _fail(f"{prefix}{f.name}", "required field missing")
    return cls(**kwargs)


# --- checks that need no model ----------------------------------------------------------------

def _one_of(where: str, value: str, options) -> None:
    if value not in options:
        hint = difflib.get_close_matches(value, list(options), n=1)
        _fail(where, f"expected one of {', '.join(options)}, got {value!r}"
              + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _positive(where: str, value: float) -> None:
    if not value > 0:
        _fail(where, f"expected a number > 0, got {value}")


def _non_negative(where: str, value: float) -> None:
    if not value >= 0:
        _fail(where, f"expected a number >= 0, got {value}")


def _range(where: str, value, low_bound: float | None = None) -> None:
    if value[0] > value[1]:
        _fail(where, f"expected [low, high] with low <= high, got {list(value)}")
    if low_bound is not None and value[0] < low_bound:
        _fail(where, f"expected values >= {low_bound}, got {list(value)}")


def validate(task: RobotTask) -> None:
    """Range and consistency checks that need no model; raise TaskFileError naming the field."""
    _positive("control_period", task.control_period)
    if task.substeps < 1:
        _fail("substeps", f"expected an integer >= 1, got {task.substeps}")
    if task.episode_seconds < task.control_period:
        _fail("episode_seconds", f"expected at least control_period ({task.control_period}), "
              f"got {task.episode_seconds}")
    _one_of("integrator", task.integrator, INTEGRATORS)
    _non_negative("observation_clip", task.observation_clip)
    if not task.model.lower().endswith((".xml", ".urdf", ".mjcf")):
        _fail("model", f"expected an MJCF (.xml) or URDF (.urdf) file, got {task.model!r}")
    _validate_actuation(task.actuation)
    seen_sites = set()
    for i, site in enumerate(task.sites):
        if site.name in seen_sites:
            _fail(f"sites[{i}].name", f"site {site.name!r} is listed twice")
        seen_sites.add(site.name)
    _validate_command(task.command)
    nj = len(task.actuation.joints)
    if not task.observations:
        _fail("observations", "expected at least one observation term")
    for i, term in enumerate(task.observations):
        where = f"observations[{i}]"
        _one_of(f"{where}.term", term.term, OBSERVATION_TERMS)
        info = OBSERVATION_TERMS[term.term]
        for param in ("sensor", "site"):
            given = getattr(term, param)
            if param in info.params and not given:
                _fail(f"{where}.{param}", f"required by the {term.term!r} term")
            if given and param not in info.params:
                _fail(f"{where}.{param}", f"not a parameter of the {term.term!r} term")
        if term.term == "command" and task.command.kind == "none":
            _fail(f"{where}.term", "the 'command' term needs a command (command.kind is none)")
        if info.command and task.command.kind != info.command:
            _fail(f"{where}.term", f"the {term.term!r} term needs command.kind "
                  f"{info.command!r}, got {task.command.kind!r}")
        _non_negative(f"{where}.noise", term.noise)
        size = observation_size(term.term, nj)
        if isinstance(term.scale, tuple) and size is not None and len(term.scale) != size:
            _fail(f"{where}.scale", f"expected one number or a list of {size} (the size of "
                  f"{term.term!r}), got a list of {len(term.scale)}")
    if not task.rewards:
        _fail("rewards", "expected at least one reward term")
    for i, term in enumerate(task.rewards):
        where = f"rewards[{i}]"
        _one_of(f"{where}.term", term.term, REWARD_TERMS)
        info = REWARD_TERMS[term.term]
        for param in ("sigma", "target", "soft_limit"):
            given = getattr(term, param)
            if given is not None and param not in info.params:
                _fail(f"{where}.{param}", f"not a parameter of the {term.term!r} term"
                      + (f" (it takes {', '.join(info.params)})" if info.params else ""))
        for param, default in info.params.items():
            if default is None and getattr(term, param) is None:
                _fail(f"{where}.{param}", f"required by the {term.term!r} term")
        if term.sigma is not None:
            _positive(f"{where}.sigma", term.sigma)
        if term.soft_limit is not None and not 0 < term.soft_limit <= 1:
            _fail(f"{where}.soft_limit", f"expected a value in (0, 1], got {term.soft_limit}")
        if info.command and task.command.kind != info.command:
            _fail(f"{where}.term", f"the {term.term!r} term needs command.kind "
                  f"{info.command!r}, got {task.command.kind!r}")
    t = task.terminations
    _non_negative("terminations.base_height_below", t.base_height_below)
    _non_negative("terminations.max_tilt", t.max_tilt)
    r = task.randomization
    for name in ("friction", "link_mass", "kp_scale", "kd_scale"):
        _range(f"randomization.{name}", getattr(r, name), low_bound=0.0)
    _range("randomization.action_delay", r.action_delay, low_bound=0)
    _non_negative("randomization.push_interval_seconds", r.push_interval_seconds)
    _non_negative("randomization.push_velocity", r.push_velocity)
    _non_negative("reset.joint_pos_noise", task.reset.joint_pos_noise)
    _non_negative("reset.joint_vel_noise", task.reset.joint_vel_noise)


def _validate_actuation(a: Actuation) -> None:
    _one_of("actuation.mode", a.mode, CONTROL_MODES)
    if not a.joints:
        _fail("actuation.joints", "expected at least one joint")
    seen = set()
    for i, joint in enumerate(a.joints):
        if joint.name in seen:
            _fail(f"actuation.joints[{i}].name", f"joint {joint.name!r} is listed twice")
        seen.add(joint.name)
    if a.armature is not None:
        _non_negative("actuation.armature", a.armature)
    per_joint = {"effort_limit": _non_negative}
    if a.mode == "position":
        per_joint |= {"kp": _positive, "kd": _non_negative, "action_scale": _positive}
    else:
        per_joint["effort_limit"] = _positive
        for i, joint in enumerate(a.joints):
            for name in ("kp", "kd", "action_scale"):
                if getattr(joint, name) is not None:
                    _fail(f"actuation.joints[{i}].{name}", "only used in position mode "
                          "(actuation.mode is effort)")
    for name, check in per_joint.items():
        for i, joint in enumerate(a.joints):
            value = getattr(joint, name)
            where = f"actuation.joints[{i}].{name}"
            if value is None:
                value, where = getattr(a, name), f"actuation.{name}"
            check(where + ("" if "joints[" in where else f" (the default of {joint.name!r})"),
                  value)


def _validate_command(c: Command) -> None:
    _one_of("command.kind", c.kind, COMMAND_KINDS)
    needed = COMMAND_RANGES.get(c.kind, ())
    for name in ("x", "y", "z", "vx", "vy", "yaw_rate"):
        value = getattr(c, name)
        if name in needed and value is None:
            _fail(f"command.{name}", f"required when command.kind is {c.kind!r}")
        if name not in needed and value is not None:
            _fail(f"command.{name}", f"not used by command.kind {c.kind!r}"
                  + (f" (it takes {', '.join(needed)})" if needed else ""))
        if value is not None:
            _range(f"command.{name}", value)
    if c.kind == "goal_position" and not c.site:
        _fail("command.site", "required when command.kind is 'goal_position'")
    if c.kind != "goal_position" and c.site:
        _fail("command.site", f"only used by command.kind 'goal_position', got {c.kind!r}")
    _non_negative("command.resample_seconds", c.resample_seconds)


# --- loading ----------------------------------------------------------------------------------

def resolve_task_path(task_id: str) -> Path:
    """The task file of `task_id`: as given (relative to the working directory), else relative
    to the project root that holds fpmd_core (so `sim/arm_reach.yaml` works from anywhere in a
    source checkout), else in the installed package's share folder (a colcon install puts
    sim/ in <prefix>/share/fpmd_ros/sim, fpmd_core in <prefix>/lib/pythonX.Y/site-packages)."""
    path = Path(task_id).expanduser()
    if path.is_file() or path.is_absolute():
        return path
    here = Path(__file__).absolute()
    candidates = [here.resolve().parents[2] / path]
    if len(here.parents) > 5:
        candidates.append(here.parents[5] / "share" / "fpmd_ros" / path)
    return next((c for c in candidates if c.is_file()), path)


def load_task(task_id: str | Path) -> RobotTask:
    """Read and validate one task file (not the model yet: see `fpmd_core.robots.model`)."""
    path = resolve_task_path(str(task_id))
    try:
        text = path.read_text()
    except OSError as err:
        raise TaskFileError(f"task file {str(task_id)!r}: cannot read it ({err.strerror}); "
                            "expected a YAML file such as sim/arm_reach.yaml") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise TaskFileError(f"task file {path}: not valid YAML: {err}") from None
    try:
        task = _parse_dataclass("", data, RobotTask)
        task = dataclasses.replace(task, path=str(path.resolve()),
                                   name=task.name or path.stem)
        validate(task)
    except TaskFileError as err:
        raise TaskFileError(f"task file {path}: {err}") from None
    return task
