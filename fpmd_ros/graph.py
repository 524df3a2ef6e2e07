"""The node graphs of ``train_sim`` and ``deploy``: the one description of what runs.

Three consumers read it, so they cannot drift apart:

* ``launch/train_sim.launch.py`` and ``launch/deploy.launch.py`` declare exactly the arguments of
  :data:`TRAIN_SIM_ARGUMENTS` / :data:`DEPLOY_ARGUMENTS` and turn every :class:`NodeSpec` that
  :func:`train_sim_graph` / :func:`deploy_graph` return into a ``launch_ros`` ``Node`` (or
  ``LifecycleNode``);
* ``python -m fpmd_ros.runner`` runs the same specs as subprocesses where the ROS 2 CLI is missing;
* the tests compare both against these specs.

Arguments arrive as strings (launch configurations, ``name:=value`` on the runner's command line);
an unknown name is refused (:func:`check_argument_names`, :func:`launch_arguments`), the graph
functions validate the values and raise :class:`GraphArgumentError`, which names the argument and
the values it expects. Parameter values in the specs carry their ROS types (``float`` for double
parameters, ``list[str]`` for string arrays), so every consumer passes them unchanged.
``train_sim_graph`` resolves the training config once and writes it to ``<output_dir>/config.yaml``
for the trainer.

The rules for a running graph are here too, so that ``ros2 launch`` and the runner end a graph
alike: :func:`configure_outcome` (a lifecycle node is activated once, after its start-up configure,
or the graph ends), :func:`ending_node_exited` (the trainer's exit code ends the graph cleanly or
as a failure, :class:`GraphError`) and :func:`ending_node_shutdown_reason` (that rule as ``ros2
launch`` applies it, also while the launch is stopping already).

This module imports neither rclpy nor launch: the launch files and the runner load it cheaply.
Nothing here assumes one host: sims listed in ``remote_envs`` run wherever they were started.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpmd_core.config import ALGORITHMS
from fpmd_core.files import error_summary
from fpmd_ros.interface import (
    CONTROLLER_NODE_NAME,
    OBSERVATION_MODES,
    PACKAGE,
    ROBOT_COMMAND_TOPICS,
    SIM_NODE_NAME,
    TRAINER_NODE_NAME,
    TRIGGERS,
    builds_robot_observation,
    model_rate_hz,
)

# Console scripts (setup.py) that run the nodes.
SIM_EXECUTABLE = 'mujoco_sim'
TRAINER_EXECUTABLE = 'trainer'
CONTROLLER_EXECUTABLE = 'policy_controller'
DEFAULT_CONFIG = 'train_sim.yaml'
# Sim i is started with seed + i * SEED_STRIDE: per-episode seeds (seed_i + k) of different sims
# never overlap. The trainer gives RosVectorEnv the same stride, so its reset(seed) agrees.
SEED_STRIDE = 1_000_000
MAX_SEED = 2**31 - 1
SIM_RESPAWN_DELAY_S = 1.0

_NAME = r'[A-Za-z_][A-Za-z0-9_]*'
_NAMESPACE = re.compile(rf'^/?({_NAME}(/{_NAME})*)?/?$')
_TOPIC = re.compile(rf'^(~/|/)?{_NAME}(/{_NAME})*$')
_DM_CONTROL = re.compile(r'^[a-z_]+-[a-z_]+$')
_TRUE, _FALSE = ('true', '1', 'yes', 'on'), ('false', '0', 'no', 'off')


class GraphArgumentError(ValueError):
    """An invalid graph (launch) argument; ``argument`` names it (``arguments``: every argument
    that can fix it, ``argument`` first), the message says what is expected."""

    def __init__(self, argument: str, message: str, also: tuple[str, ...] = ()):
        self.arguments = (argument, *also)
        names = ', '.join(f"'{name}'" for name in self.arguments)
        super().__init__(f"argument{'s' if also else ''} {names}: {message}")
        self.argument = argument


class GraphError(RuntimeError):
    """The running graph has to end because a node failed; the message names the node and why.

    The launch files raise it from their event handlers: ``ros2 launch`` then logs it, shuts the
    launch down with it as the reason and returns 1 (the launch service's code for an exception
    in an action or event handler)."""


# Launch configurations that the launch system itself sets (ros2 launch's --launch-prefix and
# --launch-prefix-filter options, launch's emulate_tty, launch_ros's PushRosNamespace, SetRemap,
# SetParameter). They are not arguments of ours and are never mistaken for a mistyped one.
LAUNCH_SYSTEM_CONFIGURATIONS = ('launch-prefix', 'launch-prefix-filter', 'emulate_tty',
                                'ros_namespace', 'ros_remaps', 'global_params')
_ANON_PREFIX = 'anon'  # launch's AnonName substitution stores 'anon<name>' configurations


@dataclass(frozen=True)
class LaunchArgument:
    """One row of a launch file's argument table (``DeclareLaunchArgument``)."""

    name: str
    default: str
    description: str


def fully_qualified_name(namespace: str, name: str) -> str:
    """/namespace/name, or /name in the root namespace."""
    namespace = namespace.strip('/')
    return f'/{namespace}/{name}' if namespace else f'/{name}'


@dataclass
class NodeSpec:
    """One node of a graph: what ``launch_ros.actions.Node`` / ``LifecycleNode`` is given."""

    executable: str
    name: str
    namespace: str = ''
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    lifecycle: bool = False
    """A managed node: configured, then activated, once started."""
    ends_launch: bool = False
    """The whole graph stops when this node exits (the trainer, the policy_controller)."""
    respawn: bool = False
    respawn_delay_s: float = 0.0
    package: str = PACKAGE
    parameter_files: list[str] = field(default_factory=list)
    """ROS 2 parameter files (absolute paths), loaded before ``parameters``."""

    @property
    def fully_qualified_name(self) -> str:
        return fully_qualified_name(self.namespace, self.name)

    def launch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``launch_ros.actions.Node`` (or ``LifecycleNode``)."""
        kwargs: dict[str, Any] = {
            'package': self.package, 'executable': self.executable, 'name': self.name,
            'namespace': self.namespace,
            'parameters': [*self.parameter_files, dict(self.parameters)],
            'remappings': list(self.remappings),
        }
        if self.respawn:
            kwargs.update(respawn=True, respawn_delay=self.respawn_delay_s)
        return kwargs


TRAIN_SIM_ARGUMENTS = (
    LaunchArgument('task', '', (
        'Task id: a Gymnasium MuJoCo id (InvertedPendulum-v5, Hopper-v5, ...), a dm_control '
        'domain-task (cheetah-run) or a robot task file (sim/arm_reach.yaml: relative to the '
        'working directory, else the package\'s share/fpmd_ros/; the nodes get its absolute '
        'path); empty: the config file\'s task.id '
        '(config/train_sim.yaml: InvertedPendulum-v5).')),
    LaunchArgument('algo', '', (
        f'Algorithm, one of {", ".join(ALGORITHMS)}; empty: the config file\'s agent.algo '
        '(config/train_sim.yaml: fpmd_m).')),
    LaunchArgument('num_envs', '', (
        'Number of mujoco_sim nodes started here, in namespaces env_0 ... env_{N-1} (one env '
        'step each per vector step); empty: the config file\'s task.num_envs.')),
    LaunchArgument('total_steps', '', (
        'Environment steps to train for (summed over all sims); empty: the config file\'s '
        'trainer.total_steps.')),
    LaunchArgument('warmup_steps', '', (
        'Environment steps of random actions before the first update (summed over all sims); '
        'must be below total_steps; empty: the config file\'s trainer.warmup_steps.')),
    LaunchArgument('eval_interval', '', (
        'Environment steps between evaluations (0: only at the end); empty: the config file\'s '
        'trainer.eval_interval.')),
    LaunchArgument('seed', '', (
        'Seed of networks, replay and exploration; sim i gets seed + i * 1000000; empty: the '
        'config file\'s trainer.seed.')),
    LaunchArgument('config', '', (
        'Training config file (YAML: profile and task/agent/trainer sections, see '
        'fpmd_core/config.py); the other arguments override it; empty: the package\'s '
        'config/train_sim.yaml. The resolved run (file + arguments) is written to '
        '<output_dir>/config.yaml, which the trainer reads.')),
    LaunchArgument('output_dir', '', (
        'Folder for checkpoints, policy.onnx, TensorBoard logs, CSV and learning_curve.png; '
        'empty: the config file\'s trainer.output_dir (runs/fpmd).')),
    LaunchArgument('remote_envs', '', (
        'Comma-separated namespaces of lockstep mujoco_sim nodes already running elsewhere '
        '(other hosts, same ROS_DOMAIN_ID); trained on in addition to the num_envs local ones.')),
    LaunchArgument('step_timeout_s', '10.0', (
        'Seconds the trainer waits for all sims to answer one step or reset before naming the '
        'sim that did not.')),
    LaunchArgument('connect_timeout_s', '60.0', (
        'Seconds the trainer waits for all sims to appear at start (and when reconnecting).')),
    LaunchArgument('max_recoveries', '3', (
        'How often the trainer reconnects and resets the sims after one stopped answering '
        '(local sims are respawned) before it exits with an error; 0: never.')),
    LaunchArgument('resume', '', (
        'Checkpoint to continue from (e.g. <output_dir>/checkpoints/interrupted.pt); empty: '
        'start fresh.')),
)

DEPLOY_ARGUMENTS = (
    LaunchArgument('policy', 'runs/fpmd/policy.onnx', (
        'Exported policy (.onnx with fpmd metadata; a training checkpoint .pt also works) that '
        'the policy_controller runs.')),
    LaunchArgument('observation_mode', 'observation', (
        f'Controller input, one of {", ".join(OBSERVATION_MODES)}: the observation vector topic, '
        'joint_states mapped by joint name, or camera images.')),
    LaunchArgument('control_rate_hz', '0.0', (
        'Control rate in Hz; 0: from the policy metadata (1 / control_period_s).')),
    LaunchArgument('trigger', '', (
        'When the controller computes a command: timer (every control_rate_hz tick) or '
        'observation (on each input message, the timer only as the staleness watchdog); empty: '
        'observation with sim:=true (the sim publishes one observation per step, and a timer '
        'not synchronised with it would add up to one period of delay), timer otherwise.')),
    LaunchArgument('sim', 'false', (
        'true: also start a mujoco_sim in realtime mode running the policy\'s task, wired to the '
        'controller (a deployment rehearsal); false: drive whatever listens on command_topic.')),
    LaunchArgument('image_topic', 'camera/image_raw', (
        'observation_mode image: the camera topic (sensor_msgs/Image, rgb8) the controller '
        'stacks frames from; with sim:=true the sim publishes camera/image_raw.')),
    LaunchArgument('command_topic', 'commands', (
        'Topic the controller publishes its commands (std_msgs/Float64MultiArray) on, e.g. '
        '/forward_command_controller/commands for a ros2_control robot.')),
    LaunchArgument('namespace', '', (
        'Namespace of the controller and of the sim (their relative topics live in it).')),
    LaunchArgument('use_sim_time', 'false', (
        'true: the controller follows /clock (with sim:=true the sim publishes it).')),
    LaunchArgument('task_file', '', (
        'Robot policies: the task file they were trained on, where it is not at the path '
        'their metadata recorded (nor, as sim/<name>.yaml, in the working directory, the '
        'checkout or the installed package); checked against the recorded sha256.')),
    LaunchArgument('params_file', '', (
        'A ROS 2 parameter file (YAML) with the policy_controller\'s other parameters, e.g. '
        'state_timeout_s, safe_action, default_action, max_action_delta, joint_names, '
        'exclude_joint_positions, command_timeout_s, inference_threads, under a top-level key '
        'policy_controller, its full name or /**, then ros__parameters. The parameters these '
        'arguments set (policy, observation_mode, control_rate_hz, trigger, use_sim_time, '
        'task_file) are refused there; empty: none.')),
)
# Controller parameters that deploy_graph sets from its arguments of the same names: in a
# params_file as well, one of the two would silently win.
ARGUMENT_CONTROLLER_PARAMETERS = ('policy', 'observation_mode', 'control_rate_hz', 'trigger',
                                  'use_sim_time', 'task_file')


# --- argument helpers ------------------------------------------------------------------------

def check_argument_names(given: Iterable[str], table: tuple[LaunchArgument, ...]) -> None:
    """Refuse a name that is not in ``table`` (a mistyped argument would otherwise be ignored and
    its default used), naming the closest argument. One rule for the launch files and the
    runner."""
    names = [row.name for row in table]
    unknown = [name for name in given if name not in names]
    if not unknown:
        return
    name = sorted(unknown)[0]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f'did you mean {close[0]}? ' if close else ''
    raise GraphArgumentError(name, f'unknown argument; {hint}expected one of: '
                             f'{", ".join(names)}')


def launch_arguments(launch_configurations: Mapping[str, str],
                     table: tuple[LaunchArgument, ...]) -> dict[str, str]:
    """The values of ``table``'s arguments in a launch context's configurations, after refusing
    every other configuration except the launch system's own
    (:data:`LAUNCH_SYSTEM_CONFIGURATIONS`): ``ros2 launch`` makes each ``name:=value`` a
    configuration, and a mistyped name would otherwise be silently ignored.

    Configurations are scoped, not per file: a launch file that includes this one must not
    leak its own arguments into it (wrap the include in ``GroupAction([...],
    forwarding=False)``)."""
    ours = {name: value for name, value in launch_configurations.items()
            if name not in LAUNCH_SYSTEM_CONFIGURATIONS and not name.startswith(_ANON_PREFIX)}
    check_argument_names(ours, table)
    return {row.name: str(ours.get(row.name, row.default)) for row in table}


def _with_defaults(args: dict[str, Any], table: tuple[LaunchArgument, ...]) -> dict[str, Any]:
    check_argument_names(args, table)
    values = {row.name: row.default for row in table}
    values.update(args)
    return values


def _text(values: dict[str, Any], name: str) -> str:
    value = values[name]
    return value.strip() if isinstance(value, str) else str(value)


def _int(values: dict[str, Any], name: str, minimum: int, maximum: int | None = None) -> int:
    value = values[name]
    try:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError
        number = int(value) if isinstance(value, int) else int(str(value).strip(), 10)
    except ValueError:
        number = None
    bound = f'an integer >= {minimum}' + (f' and <= {maximum}' if maximum is not None else '')
    if number is None or number < minimum or (maximum is not None and number > maximum):
        raise GraphArgumentError(name, f'{value!r}; expected {bound}')
    return number


def _float(values: dict[str, Any], name: str, minimum: float, *, inclusive: bool) -> float:
    value = values[name]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except ValueError:
        number = None
    ok = number is not None and number == number and number != float('inf') and (
        number >= minimum if inclusive else number > minimum)
    if not ok:
        bound = f'>= {minimum:g}' if inclusive else f'> {minimum:g}'
        raise GraphArgumentError(name, f'{value!r}; expected a number {bound}')
    return number


def _bool(values: dict[str, Any], name: str) -> bool:
    value = values[name]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise GraphArgumentError(name, f'{value!r}; expected true or false')


def _choice(values: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = _text(values, name)
    if value not in choices:
        raise GraphArgumentError(name, f'{value!r}; expected one of: {", ".join(choices)}')
    return value


def _namespace(values: dict[str, Any], name: str) -> str:
    value = _text(values, name)
    if not _NAMESPACE.match(value):
        raise GraphArgumentError(name, f'{value!r}; expected a ROS namespace such as robot_1 '
                                 'or /lab/robot_1 (letters, digits, _ and /), or empty')
    # An absolute namespace stays absolute; a relative one nests under an including launch
    # file's PushRosNamespace, as launch_ros does it.
    return '' if value == '/' else value.rstrip('/')


def _namespace_list(values: dict[str, Any], name: str) -> list[str]:
    value = values[name]
    items = value if isinstance(value, (list, tuple)) else re.split(r'[,\s]+', str(value))
    namespaces = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if not _NAMESPACE.match(item):
            raise GraphArgumentError(name, f'{item!r} is not a ROS namespace; expected '
                                     'comma-separated namespaces such as env_4,lab/env_5')
        namespaces.append(item.strip('/'))
    return namespaces


def check_task(task_id: str, argument: str = 'task') -> str:
    """The task id the sims and the trainer get, or GraphArgumentError naming ``argument`` for
    ids that no sim can run. Benchmark ids are checked without building the task (cheap: no
    MuJoCo); a robot task file (``.yaml``) is loaded and validated, and returned as an absolute
    path, so that every node (whatever its working directory) reads the same file. A relative
    path is looked up as fpmd_core does (fpmd_core.robots.schema.resolve_task_path): the working
    directory, the source checkout, the installed package's share/fpmd_ros/."""
    if not task_id:
        raise GraphArgumentError(argument, "empty; expected a task id such as "
                                 "InvertedPendulum-v5, Hopper-v5, cheetah-run or a task file "
                                 "such as sim/arm_reach.yaml")
    from fpmd_core.tasks import is_task_file

    if is_task_file(task_id):
        from fpmd_core.robots import TaskFileError, load_task

        try:
            return load_task(task_id).path
        except TaskFileError as error:
            raise GraphArgumentError(argument, str(error)) from None
    if _DM_CONTROL.match(task_id):
        return task_id  # a dm_control domain-task; the sims check it against the suite
    try:
        from gymnasium.envs.registration import registry
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        return task_id
    entry = registry.get(task_id)
    if entry is None or 'mujoco' not in str(entry.entry_point):
        raise GraphArgumentError(argument, (
            f'{task_id!r} is neither a Gymnasium MuJoCo id, a dm_control domain-task nor a task '
            'file (.yaml); expected e.g. InvertedPendulum-v5, Hopper-v5, HalfCheetah-v5, '
            'cheetah-run or sim/arm_reach.yaml'))
    return task_id


def default_config_path() -> str:
    """The package's ``config/train_sim.yaml``: installed (ament index) or in the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE)) / 'config' / DEFAULT_CONFIG
        if installed.is_file():
            return str(installed)
    except (ImportError, LookupError, OSError, ValueError):
        pass  # no ament index (AMENT_PREFIX_PATH unset) or the package is not installed
    return str(Path(__file__).resolve().parent.parent / 'config' / DEFAULT_CONFIG)


# fpmd_core config fields that a train_sim argument sets (for naming the argument in errors).
_FIELD_ARGUMENTS = {'task.id': 'task', 'agent.algo': 'algo', 'task.num_envs': 'num_envs',
                    'trainer.total_steps': 'total_steps',
                    'trainer.warmup_steps': 'warmup_steps',
                    'trainer.eval_interval': 'eval_interval', 'trainer.seed': 'seed',
                    'trainer.output_dir': 'output_dir'}
_CONFIG_FIELD = re.compile(r'\b(?:task|agent|trainer)\.[a-z_]+\b')


def _config_argument_error(config: str, text: str) -> GraphArgumentError:
    """A ConfigError as an argument error: it names every argument that sets a field the
    message mentions (total_steps and warmup_steps for a run that would train nothing), else
    the config file."""
    mentioned = _CONFIG_FIELD.findall(text)
    arguments = [_FIELD_ARGUMENTS[name] for name in dict.fromkeys(mentioned)
                 if name in _FIELD_ARGUMENTS]
    if not arguments:
        return GraphArgumentError('config', f'{config}: {text}')
    return GraphArgumentError(arguments[0], f'{text} (config file {config})',
                              also=tuple(arguments[1:]))


def resolve_train_config(config: str, overrides: dict[str, Any], local_sims: int | None = None,
                         remote_sims: int = 0):
    """The run's fpmd_core Config, resolved once: ``config`` (profile, fields), then
    ``overrides``, then task.num_envs = ``local_sims`` (None: the file's task.num_envs) +
    ``remote_sims``. An invalid result is a GraphArgumentError naming the arguments that set
    the offending fields."""
    from fpmd_core.config import ConfigError, make_config, set_field, validate

    try:
        cfg = make_config(file=config, overrides=overrides)
        sims = (cfg.task.num_envs if local_sims is None else local_sims) + remote_sims
        if sims != cfg.task.num_envs:
            set_field(cfg, 'task.num_envs', sims)
            validate(cfg)
    except ConfigError as error:
        raise _config_argument_error(config, str(error)) from None
    return cfg


def write_train_config(cfg) -> str:
    """Writes the resolved run to ``<output_dir>/config.yaml`` (output_dir made absolute, so the
    trainer finds it from any working directory) and returns the file's path."""
    from fpmd_core.config import RESOLVED_CONFIG_NAME, save_config, set_field

    output_dir = os.path.abspath(os.path.expanduser(cfg.trainer.output_dir))
    set_field(cfg, 'trainer.output_dir', output_dir)
    try:
        return str(save_config(cfg, Path(output_dir) / RESOLVED_CONFIG_NAME))
    except OSError as error:
        raise GraphArgumentError('output_dir', f'cannot write {RESOLVED_CONFIG_NAME} into '
                                 f'{output_dir}: {error}; expected a writable folder') from None


# --- the graphs --------------------------------------------------------------------------------

def train_sim_graph(args: dict[str, Any]) -> list[NodeSpec]:
    """N lockstep ``mujoco_sim`` nodes (``env_0`` ... ``env_{N-1}``) and one ``trainer``.

    The training config is resolved here, once (config file + these arguments), and written to
    ``<output_dir>/config.yaml``; the trainer's ``config`` parameter is that file, so the
    trainer trains exactly what was validated here and the run's folder records it.
    """
    values = _with_defaults(args, TRAIN_SIM_ARGUMENTS)
    config = _text(values, 'config') or default_config_path()
    config = os.path.abspath(os.path.expanduser(config))
    if not os.path.isfile(config):
        raise GraphArgumentError('config', f'file not found: {config}; expected a YAML file '
                                 'with task/agent/trainer sections')

    overrides: dict[str, Any] = {}
    if _text(values, 'task'):
        overrides['task.id'] = _text(values, 'task')
    if _text(values, 'algo'):
        overrides['agent.algo'] = _choice(values, 'algo', ALGORITHMS)
    if _text(values, 'total_steps'):
        overrides['trainer.total_steps'] = _int(values, 'total_steps', 1)
    if _text(values, 'warmup_steps'):
        overrides['trainer.warmup_steps'] = _int(values, 'warmup_steps', 0)
    if _text(values, 'eval_interval'):
        overrides['trainer.eval_interval'] = _int(values, 'eval_interval', 0)
    if _text(values, 'seed'):
        overrides['trainer.seed'] = _int(values, 'seed', 0, MAX_SEED)
    if _text(values, 'output_dir'):
        overrides['trainer.output_dir'] = os.path.expanduser(_text(values, 'output_dir'))
    remote = _namespace_list(values, 'remote_envs')
    local = (_int(values, 'num_envs', 0 if remote else 1) if _text(values, 'num_envs')
             else None)
    cfg = resolve_train_config(config, overrides, local, len(remote))
    if local is None:
        local = cfg.task.num_envs - len(remote)
    namespaces = [f'env_{i}' for i in range(local)] + remote
    if not namespaces:
        raise GraphArgumentError('num_envs', '0 and no remote_envs; expected at least one sim')
    duplicates = sorted({ns for ns in namespaces if namespaces.count(ns) > 1})
    if duplicates:
        raise GraphArgumentError('remote_envs', f'{", ".join(duplicates)} listed twice or also '
                                 f'started here (local sims: {", ".join(namespaces[:local])}); '
                                 'expected distinct namespaces')
    task_id = check_task(cfg.task.id, 'task' if 'task.id' in overrides else 'config')
    if task_id != cfg.task.id:  # a task file, now an absolute path for every node
        from fpmd_core.config import set_field

        set_field(cfg, 'task.id', task_id)
    seed = cfg.trainer.seed
    if seed < 0 or seed + (len(namespaces) - 1) * SEED_STRIDE > MAX_SEED:
        raise GraphArgumentError(
            'seed' if 'trainer.seed' in overrides else 'config',
            f'seed {seed} with {len(namespaces)} sims is outside the sim seed range; expected '
            f'seed >= 0 and seed + (sims - 1) * {SEED_STRIDE} <= {MAX_SEED}')
    resume = _text(values, 'resume')
    if resume:
        resume = os.path.abspath(os.path.expanduser(resume))
        if not os.path.isfile(resume):
            raise GraphArgumentError('resume', f'file not found: {resume}; expected a '
                                     'checkpoint (.pt) written by the trainer')
    trainer_parameters = {
        'env_namespaces': list(namespaces),
        'step_timeout_s': _float(values, 'step_timeout_s', 0.0, inclusive=False),
        'connect_timeout_s': _float(values, 'connect_timeout_s', 0.0, inclusive=False),
        'max_recoveries': _int(values, 'max_recoveries', 0),
        'resume': resume,
    }
    # Written last: nothing is written for arguments that are refused.
    trainer_parameters = {'config': write_train_config(cfg), **trainer_parameters}

    sims = [NodeSpec(SIM_EXECUTABLE, SIM_NODE_NAME, namespace, {
        'task': cfg.task.id,
        'mode': 'lockstep',
        'seed': seed + i * SEED_STRIDE,
        'max_episode_steps': cfg.task.max_episode_steps,
        **sim_task_parameters(cfg.task),
    }, respawn=True, respawn_delay_s=SIM_RESPAWN_DELAY_S) for i, namespace in enumerate(
        namespaces[:local])]
    trainer = NodeSpec(TRAINER_EXECUTABLE, TRAINER_NODE_NAME, '', trainer_parameters,
                       ends_launch=True)
    return [*sims, trainer]


def sim_task_parameters(task) -> dict[str, Any]:
    """The sim parameters that make a sim step the task as the config describes it: action
    repeat, and for pixel tasks the camera the trainer observes (fpmd_core.config.TaskConfig)."""
    params: dict[str, Any] = {'action_repeat': task.action_repeat}
    if task.pixels:
        params |= {'camera_enabled': True, 'image_width': task.image_size,
                   'image_height': task.image_size, 'camera': task.camera}
    return params


_TRAIN_FIRST = ('train one first (ros2 launch fpmd_ros train_sim.launch.py, or ./fpmd train); '
                'it writes <output_dir>/policy.onnx')


def check_policy_file(path: str, argument: str = 'policy') -> str:
    """``path`` made absolute, or GraphArgumentError if it is no file."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise GraphArgumentError(argument, f'{path} is a directory; expected the policy file '
                                 f'in it, e.g. {os.path.join(path, "policy.onnx")}')
    if not os.path.isfile(path):
        raise GraphArgumentError(argument, f'file not found: {path}; expected an exported '
                                 f'policy (.onnx) or checkpoint (.pt); {_TRAIN_FIRST}')
    return path


def policy_metadata(path: str) -> dict[str, Any]:
    """The metadata of a policy (task, observation shape, camera ...), for the rehearsal sim."""
    from fpmd_core.runtime import load_policy

    path = check_policy_file(path)
    try:
        return dict(load_policy(path).metadata)
    except Exception as error:  # PolicyError, CheckpointError, onnxruntime errors ...
        raise GraphArgumentError('policy', f'cannot read the policy metadata of {path}: '
                                 f'{error}') from None


def rehearsal_sim_parameters(meta: dict[str, Any], task_file: str = '') -> dict[str, Any]:
    """The sim that shows a policy what it was trained on: its task and action repeat, and for
    a pixel policy the camera, image size and rendering it was trained with. A robot policy's
    task file is the one it was trained on (``task_file``, else its metadata's path, checked
    against the recorded sha256), else refused."""
    task = str(meta['task'])
    if meta.get('robot'):
        from fpmd_core.robots import TaskFileError
        from fpmd_core.tasks import robot_task_file

        try:
            task = robot_task_file(meta, task_file or None)
        except TaskFileError as error:
            raise GraphArgumentError('task_file' if task_file else 'policy', str(error)) \
                from None
    params: dict[str, Any] = {'task': task,
                              'action_repeat': int(meta.get('action_repeat', 1))}
    shape = meta.get('obs_shape') or [meta['obs_dim']]
    if len(shape) == 3:
        params |= {'camera_enabled': True, 'image_height': int(shape[0]),
                   'image_width': int(shape[1]), 'camera': str(meta.get('camera', ''))}
    return params


@dataclass(frozen=True)
class SimEpisodes:
    """How the deploy graph's sim runs its episodes: the deployment rehearsal's inputs (the
    launch file keeps the sim's own defaults)."""

    realtime_factor: float = 1.0
    seed: int = 0
    max_episode_steps: int = 0


def deploy_graph(args: dict[str, Any], *, sim_episodes: SimEpisodes | None = None,
                 meta: dict[str, Any] | None = None) -> list[NodeSpec]:
    """The ``policy_controller`` lifecycle node (configured and activated on start) and, with
    ``sim:=true``, a realtime ``mujoco_sim`` of the policy's task in the same namespace, so its
    ``observation`` / ``joint_states`` reach the controller and the controller's commands (on
    ``command_topic``) reach it. With the sim the controller runs ``trigger`` = ``observation``
    (one control step per sim observation) unless ``trigger`` says otherwise: the sim steps on
    its own clock and holds the last command, and a free-running timer would add up to one
    control period of delay.

    ``sim_episodes``: the sim's realtime factor, seed and episode limit (the rehearsal's); a
    timer-triggered controller at the policy's rate then keeps up with a sim faster than real
    time. ``meta``: the policy's metadata if the caller has read it already."""
    values = _with_defaults(args, DEPLOY_ARGUMENTS)
    policy = _text(values, 'policy')
    if not policy:
        raise GraphArgumentError('policy', 'empty; expected the path of an exported policy '
                                 f'(.onnx) or checkpoint (.pt); {_TRAIN_FIRST}')
    policy = check_policy_file(policy)
    observation_mode = _choice(values, 'observation_mode', OBSERVATION_MODES)
    control_rate_hz = _float(values, 'control_rate_hz', 0.0, inclusive=True)
    sim = _bool(values, 'sim')
    trigger = (_choice(values, 'trigger', TRIGGERS) if _text(values, 'trigger')
               else 'observation' if sim else 'timer')
    command_topic = _text(values, 'command_topic')
    if not _TOPIC.match(command_topic):
        raise GraphArgumentError('command_topic', f'{command_topic!r}; expected a ROS topic '
                                 'name such as commands or /forward_command_controller/commands')
    namespace = _namespace(values, 'namespace')
    use_sim_time = _bool(values, 'use_sim_time')
    image_topic = _text(values, 'image_topic')
    if not _TOPIC.match(image_topic):
        raise GraphArgumentError('image_topic', f'{image_topic!r}; expected a ROS topic name '
                                 'such as camera/image_raw')
    task_file = _text(values, 'task_file')
    if task_file:
        task_file = str(Path(task_file).expanduser().absolute())
    params_file = _text(values, 'params_file')
    if params_file:
        params_file = check_controller_params_file(
            params_file, fully_qualified_name(namespace, CONTROLLER_NODE_NAME))

    if meta is None:
        meta = policy_metadata(policy) if sim or observation_mode == 'image' else {}
    pixel_policy = len(meta.get('obs_shape') or [0]) == 3
    if observation_mode == 'image' and not pixel_policy:
        raise GraphArgumentError('observation_mode', f"'image', but {policy} is a state policy "
                                 '(no camera frames in its metadata); expected observation or '
                                 'joint_states, or a policy trained from pixels')
    if sim and pixel_policy and observation_mode != 'image':
        raise GraphArgumentError('observation_mode', f'{observation_mode!r}, but {policy} acts '
                                 'from camera frames; expected image')

    remap_commands = [('commands', command_topic)]
    nodes = []
    if sim:
        sim_parameters = {**rehearsal_sim_parameters(meta, task_file), 'mode': 'realtime',
                          'publish_clock': use_sim_time}
        if sim_episodes is not None:
            sim_parameters |= {'realtime_factor': float(sim_episodes.realtime_factor),
                               'seed': int(sim_episodes.seed),
                               'max_episode_steps': int(sim_episodes.max_episode_steps)}
            if trigger == 'timer' and not control_rate_hz:
                # A timer loop at the policy's own rate would fall behind a faster sim.
                control_rate_hz = model_rate_hz(meta) * max(1.0, sim_episodes.realtime_factor)
        nodes.append(NodeSpec(SIM_EXECUTABLE, SIM_NODE_NAME, namespace, sim_parameters,
                              remappings=list(remap_commands)))
    controller_remaps = list(remap_commands)
    if observation_mode == 'image':
        controller_remaps.append(('image_raw', image_topic))
    if sim and builds_robot_observation(observation_mode, meta):
        # The controller follows the command the sim has in force (sampled per episode, or
        # what someone published to the sim's goal / cmd_vel), as the sim's rewards do.
        controller_remaps += [(topic, f'{SIM_NODE_NAME}/{topic}')
                              for topic in ROBOT_COMMAND_TOPICS.values()]
    controller_parameters = {
        'policy': policy,
        'observation_mode': observation_mode,
        'control_rate_hz': control_rate_hz,
        'trigger': trigger,
        'use_sim_time': use_sim_time,
    }
    if task_file:
        controller_parameters['task_file'] = task_file
    # ends_launch: a sim left running without its controller would hold the last command, and
    # the launch would neither end nor report the controller's failure.
    nodes.append(NodeSpec(CONTROLLER_EXECUTABLE, CONTROLLER_NODE_NAME, namespace,
                          controller_parameters, remappings=controller_remaps, lifecycle=True,
                          ends_launch=True,
                          parameter_files=[params_file] if params_file else []))
    return nodes


def parameter_file_keys(node_fqn: str) -> list[str]:
    """The top-level keys of a ROS 2 parameter file whose section reaches the node `node_fqn`
    (its name, with or without the leading slash, and the /** wildcards)."""
    name = node_fqn.rsplit('/', 1)[-1]
    keys = [node_fqn, node_fqn.lstrip('/'), '/**', f'/**/{name}']
    if node_fqn == f'/{name}':
        keys.append(name)
    return list(dict.fromkeys(keys))


def check_controller_params_file(path: str, node_fqn: str) -> str:
    """`path` made absolute, once it reads as a ROS 2 parameter file with a section for the
    controller `node_fqn` (a file whose keys miss the node would set nothing, silently) that
    sets none of :data:`ARGUMENT_CONTROLLER_PARAMETERS` nor ``autostart``. The node itself
    refuses unknown names and wrong types when it declares its parameters."""
    import yaml

    file = Path(path).expanduser().absolute()
    if not file.is_file():
        raise GraphArgumentError('params_file', f'file not found: {file}; expected a ROS 2 '
                                 'parameter file (YAML)')
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise GraphArgumentError('params_file', f'{file} does not read as YAML '
                                 f'({error_summary(error)})') from None
    keys = parameter_file_keys(node_fqn)
    sections = [key for key in data if key in keys] if isinstance(data, dict) else []
    if not sections:
        raise GraphArgumentError('params_file', f'{file} has no section for {node_fqn}; '
                                 f'expected a top-level key {" or ".join(keys)} holding '
                                 'ros__parameters')
    for key in sections:
        parameters = data[key].get('ros__parameters') if isinstance(data[key], dict) else None
        if not isinstance(parameters, dict):
            raise GraphArgumentError('params_file', f'{file}: {key}: expected ros__parameters: '
                                     'followed by the parameters')
        for name in parameters:
            if name in ARGUMENT_CONTROLLER_PARAMETERS:
                raise GraphArgumentError('params_file', f'{file} sets {name}, which the '
                                         f'argument {name}:=... sets; expected it as that '
                                         'argument', also=(name,))
            if name == 'autostart':
                raise GraphArgumentError('params_file', f'{file} sets autostart; expected it '
                                         'unset: the launch configures and activates the node')
    return str(file)


# --- while the graph runs: one rule for the launch files and the runner --------------------------

def configure_outcome(node_name: str, goal_state: str) -> None:
    """The start-up ``configure`` of a lifecycle node ended in ``goal_state``: 'inactive' is
    success (activate it, once); anything else (configure failed: 'unconfigured', or
    'errorprocessing' / 'finalized' after an exception) ends the graph with GraphError."""
    if goal_state != 'inactive':
        raise GraphError(configure_failed(node_name, f'it went to {goal_state!r}'))


def configure_failed(node_name: str, detail: str) -> str:
    return (f'{node_name}: configure at start-up failed ({detail}); its log above says why. '
            'Stopping: an unconfigured controller would idle forever')


def ending_node_exited(spec: NodeSpec, returncode: int) -> None:
    """The node that ends the graph (the trainer, the policy_controller) exited: exit code 0
    (trained, or stopped on request) ends the graph cleanly; anything else raises GraphError,
    so that ``ros2 launch`` returns non-zero as the runner does."""
    if returncode != 0:
        raise GraphError(f'{spec.fully_qualified_name} failed (exit code {returncode}); its log '
                         'above says why')


def ending_node_shutdown_reason(spec: NodeSpec, returncode: int,
                                launch_stopping: bool) -> str | None:
    """:func:`ending_node_exited` as the launch files apply it: the reason to shut the launch
    down with, or None when the launch is stopping already (Ctrl-C), since a second Shutdown
    makes launch_ros fail the launch ("Cannot shutdown a ROS adapter that is not running")."""
    ending_node_exited(spec, returncode)
    return None if launch_stopping else f'{spec.fully_qualified_name} exited'


GRAPHS = {
    'train_sim': (TRAIN_SIM_ARGUMENTS, train_sim_graph),
    'deploy': (DEPLOY_ARGUMENTS, deploy_graph),
}
