"""The node graphs of ``train_sim`` and ``deploy``: the one description of what runs.

Three consumers read it, so they cannot drift apart:

* ``launch/train_sim.launch.py`` and ``launch/deploy.launch.py`` declare exactly the arguments of
  :data:`TRAIN_SIM_ARGUMENTS` / :data:`DEPLOY_ARGUMENTS` and turn every :class:`NodeSpec` that
  :func:`train_sim_graph` / :func:`deploy_graph` return into a ``launch_ros`` ``Node`` (or
  ``LifecycleNode``);
* ``python -m fpmd_ros.runner`` runs the same specs as subprocesses where the ROS 2 CLI is missing;
* the tests compare both against these specs.

Arguments arrive as strings (launch configurations, ``name:=value`` on the runner's command line);
the graph functions validate them and raise :class:`GraphArgumentError`, which names the argument
and the values it expects. Parameter values in the specs carry their ROS types (``float`` for
double parameters, ``list[str]`` for string arrays), so every consumer passes them unchanged.

This module imports neither rclpy nor launch: the launch files and the runner load it cheaply.
Nothing here assumes one host: sims listed in ``remote_envs`` run wherever they were started.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpmd_core.config import ALGORITHMS
from fpmd_ros.interface import OBSERVATION_MODES, TRIGGERS

PACKAGE = 'fpmd_ros'
SIM_EXECUTABLE = SIM_NODE_NAME = 'mujoco_sim'
TRAINER_EXECUTABLE = TRAINER_NODE_NAME = 'trainer'
CONTROLLER_EXECUTABLE = CONTROLLER_NODE_NAME = 'policy_controller'
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
    """An invalid graph (launch) argument; ``argument`` names it, the message says what is
    expected."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"argument '{argument}': {message}")
        self.argument = argument


@dataclass(frozen=True)
class LaunchArgument:
    """One row of a launch file's argument table (``DeclareLaunchArgument``)."""

    name: str
    default: str
    description: str


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
    """The whole graph stops when this node exits (the trainer)."""
    respawn: bool = False
    respawn_delay_s: float = 0.0
    package: str = PACKAGE

    @property
    def fully_qualified_name(self) -> str:
        namespace = self.namespace.strip('/')
        return f'/{namespace}/{self.name}' if namespace else f'/{self.name}'

    def launch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``launch_ros.actions.Node`` (or ``LifecycleNode``)."""
        kwargs: dict[str, Any] = {
            'package': self.package, 'executable': self.executable, 'name': self.name,
            'namespace': self.namespace, 'parameters': [dict(self.parameters)],
            'remappings': list(self.remappings),
        }
        if self.respawn:
            kwargs.update(respawn=True, respawn_delay=self.respawn_delay_s)
        return kwargs


TRAIN_SIM_ARGUMENTS = (
    LaunchArgument('task', '', (
        'Task id: a Gymnasium MuJoCo id (InvertedPendulum-v5, Hopper-v5, ...) or a dm_control '
        'domain-task (cheetah-run); empty: the config file\'s task.id '
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
    LaunchArgument('seed', '', (
        'Seed of networks, replay and exploration; sim i gets seed + i * 1000000; empty: the '
        'config file\'s trainer.seed.')),
    LaunchArgument('config', '', (
        'Training config file (YAML: profile and task/agent/trainer sections, see '
        'fpmd_core/config.py); the other arguments override it; empty: the package\'s '
        'config/train_sim.yaml.')),
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
)


# --- argument helpers ------------------------------------------------------------------------

def _with_defaults(args: dict[str, Any], table: tuple[LaunchArgument, ...]) -> dict[str, Any]:
    names = [row.name for row in table]
    unknown = sorted(set(args) - set(names))
    if unknown:
        raise GraphArgumentError(unknown[0], f'unknown argument; expected one of: '
                                 f'{", ".join(names)}')
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


def check_task(task_id: str, argument: str = 'task') -> None:
    """Refuse task ids that no sim can run, without building the task (cheap: no MuJoCo)."""
    if not task_id:
        raise GraphArgumentError(argument, "empty; expected a task id such as "
                                 "InvertedPendulum-v5, Hopper-v5 or cheetah-run")
    if _DM_CONTROL.match(task_id):
        return  # a dm_control domain-task; the sims check it against the suite
    try:
        from gymnasium.envs.registration import registry
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        return
    entry = registry.get(task_id)
    if entry is None or 'mujoco' not in str(entry.entry_point):
        raise GraphArgumentError(argument, (
            f'{task_id!r} is neither a Gymnasium MuJoCo id nor a dm_control domain-task; '
            'expected e.g. InvertedPendulum-v5, Hopper-v5, HalfCheetah-v5 or cheetah-run'))


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
                    'trainer.total_steps': 'total_steps', 'trainer.seed': 'seed',
                    'trainer.output_dir': 'output_dir'}


def _make_config(config: str, overrides: dict[str, Any]):
    from fpmd_core.config import ConfigError, make_config

    try:
        return make_config(file=config, overrides=overrides)
    except ConfigError as error:
        text = str(error)
        for config_field, argument in _FIELD_ARGUMENTS.items():
            if text.startswith(config_field + ':') and config_field in overrides:
                raise GraphArgumentError(argument, text) from None
        raise GraphArgumentError('config', text) from None


# --- the graphs --------------------------------------------------------------------------------

def train_sim_graph(args: dict[str, Any]) -> list[NodeSpec]:
    """N lockstep ``mujoco_sim`` nodes (``env_0`` ... ``env_{N-1}``) and one ``trainer``.

    The trainer's parameters are the fully resolved run (config file + these arguments), so
    ``ros2 param dump /trainer`` shows what is trained; the config file stays the source of
    every field the arguments do not set.
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
    if _text(values, 'seed'):
        overrides['trainer.seed'] = _int(values, 'seed', 0, MAX_SEED)
    if _text(values, 'output_dir'):
        overrides['trainer.output_dir'] = os.path.expanduser(_text(values, 'output_dir'))
    remote = _namespace_list(values, 'remote_envs')
    cfg = _make_config(config, overrides)
    local = (_int(values, 'num_envs', 0 if remote else 1) if _text(values, 'num_envs')
             else cfg.task.num_envs)
    namespaces = [f'env_{i}' for i in range(local)] + remote
    if not namespaces:
        raise GraphArgumentError('num_envs', '0 and no remote_envs; expected at least one sim')
    duplicates = sorted({ns for ns in namespaces if namespaces.count(ns) > 1})
    if duplicates:
        raise GraphArgumentError('remote_envs', f'{", ".join(duplicates)} listed twice or also '
                                 f'started here (local sims: {", ".join(namespaces[:local])}); '
                                 'expected distinct namespaces')
    overrides['task.num_envs'] = len(namespaces)
    cfg = _make_config(config, overrides)
    check_task(cfg.task.id, 'task' if 'task.id' in overrides else 'config')
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

    sims = [NodeSpec(SIM_EXECUTABLE, SIM_NODE_NAME, namespace, {
        'task': cfg.task.id,
        'mode': 'lockstep',
        'seed': seed + i * SEED_STRIDE,
        'max_episode_steps': cfg.task.max_episode_steps,
        **sim_task_parameters(cfg.task),
    }, respawn=True, respawn_delay_s=SIM_RESPAWN_DELAY_S) for i, namespace in enumerate(
        namespaces[:local])]
    trainer = NodeSpec(TRAINER_EXECUTABLE, TRAINER_NODE_NAME, '', {
        'config': config,
        'task': cfg.task.id,
        'algo': cfg.agent.algo,
        'num_envs': len(namespaces),
        'env_namespaces': list(namespaces),
        'total_steps': cfg.trainer.total_steps,
        'seed': seed,
        'output_dir': os.path.abspath(cfg.trainer.output_dir),
        'step_timeout_s': _float(values, 'step_timeout_s', 0.0, inclusive=False),
        'connect_timeout_s': _float(values, 'connect_timeout_s', 0.0, inclusive=False),
        'max_recoveries': _int(values, 'max_recoveries', 0),
        'resume': resume,
    }, ends_launch=True)
    return [*sims, trainer]


def sim_task_parameters(task) -> dict[str, Any]:
    """The sim parameters that make a sim step the task as the config describes it: action
    repeat, and for pixel tasks the camera the trainer observes (fpmd_core.config.TaskConfig)."""
    params: dict[str, Any] = {'action_repeat': task.action_repeat}
    if task.pixels:
        params |= {'camera_enabled': True, 'image_width': task.image_size,
                   'image_height': task.image_size, 'camera': task.camera}
    return params


def policy_metadata(path: str) -> dict[str, Any]:
    """The metadata of a policy (task, observation shape, camera ...), for the rehearsal sim."""
    from fpmd_core.runtime import load_policy

    try:
        return dict(load_policy(path).metadata)
    except Exception as error:  # PolicyError, CheckpointError, onnxruntime errors ...
        raise GraphArgumentError('policy', f'cannot read the policy metadata of {path}: '
                                 f'{error}') from None


def rehearsal_sim_parameters(meta: dict[str, Any]) -> dict[str, Any]:
    """The sim that shows a policy what it was trained on: its task and action repeat, and for
    a pixel policy the camera, image size and rendering it was trained with."""
    params: dict[str, Any] = {'task': str(meta['task']),
                              'action_repeat': int(meta.get('action_repeat', 1))}
    shape = meta.get('obs_shape') or [meta['obs_dim']]
    if len(shape) == 3:
        params |= {'camera_enabled': True, 'image_height': int(shape[0]),
                   'image_width': int(shape[1]), 'camera': str(meta.get('camera', ''))}
    return params


def deploy_graph(args: dict[str, Any]) -> list[NodeSpec]:
    """The ``policy_controller`` lifecycle node (configured and activated on start) and, with
    ``sim:=true``, a realtime ``mujoco_sim`` of the policy's task in the same namespace, so its
    ``observation`` / ``joint_states`` reach the controller and the controller's commands (on
    ``command_topic``) reach it. With the sim the controller runs ``trigger`` = ``observation``
    (one control step per sim observation) unless ``trigger`` says otherwise: the sim steps on
    its own clock and holds the last command, and a free-running timer would add up to one
    control period of delay."""
    values = _with_defaults(args, DEPLOY_ARGUMENTS)
    policy = _text(values, 'policy')
    if not policy:
        raise GraphArgumentError('policy', 'empty; expected the path of an exported policy '
                                 '(.onnx) or checkpoint (.pt)')
    policy = os.path.abspath(os.path.expanduser(policy))
    if not os.path.isfile(policy):
        raise GraphArgumentError('policy', f'file not found: {policy}; expected an exported '
                                 'policy (.onnx) or checkpoint (.pt); train one first '
                                 '(./fpmd train)')
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
        nodes.append(NodeSpec(SIM_EXECUTABLE, SIM_NODE_NAME, namespace, {
            **rehearsal_sim_parameters(meta),
            'mode': 'realtime',
            'publish_clock': use_sim_time,
        }, remappings=list(remap_commands)))
    controller_remaps = list(remap_commands)
    if observation_mode == 'image':
        controller_remaps.append(('image_raw', image_topic))
    nodes.append(NodeSpec(CONTROLLER_EXECUTABLE, CONTROLLER_NODE_NAME, namespace, {
        'policy': policy,
        'observation_mode': observation_mode,
        'control_rate_hz': control_rate_hz,
        'trigger': trigger,
        'use_sim_time': use_sim_time,
    }, remappings=controller_remaps, lifecycle=True))
    return nodes


GRAPHS = {
    'train_sim': (TRAIN_SIM_ARGUMENTS, train_sim_graph),
    'deploy': (DEPLOY_ARGUMENTS, deploy_graph),
}
