"""The launch files declare exactly graph.py's arguments and start exactly its nodes.

``launch`` / ``launch_ros`` cannot be installed here, so small stand-in modules that record their
constructor arguments are put into ``sys.modules`` for the duration of each test; the real launch
files are then executed (``generate_launch_description()``, their ``OpaqueFunction`` and their
event handlers' functions) and what they built is compared with :mod:`fpmd_ros.graph`. Also: the
specs' parameters exist in the nodes' declarations with the same types, argument validation, the
resolved config the trainer is given, and the runner's command lines.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
from runner_helpers import POLICY_TASK, export_untrained_policy

from fpmd_core.config import RESOLVED_CONFIG_NAME, ConfigError, make_config
from fpmd_ros import graph, runner
from fpmd_ros.graph import (
    DEPLOY_ARGUMENTS,
    SEED_STRIDE,
    TRAIN_SIM_ARGUMENTS,
    GraphArgumentError,
    GraphError,
    NodeSpec,
    SimEpisodes,
    deploy_graph,
    launch_arguments,
    train_sim_graph,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
LAUNCH_DIR = REPO_ROOT / 'launch'
TASK = 'InvertedPendulum-v5'


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    """train_sim_graph writes <output_dir>/config.yaml; the default output_dir is relative."""
    monkeypatch.chdir(tmp_path)


# --- stand-ins for launch / launch_ros -----------------------------------------------------------

class Recorded:
    """Records how it was constructed."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs


class LaunchConfiguration(Recorded):
    def perform(self, context) -> str:
        return context.launch_configurations[self.args[0]]


def _matches_action(action):
    return ('matches_action', action)


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _kind(name: str, base=Recorded) -> type:
    return type(name, (base,), {})


@pytest.fixture
def fake_launch(monkeypatch):
    """``launch`` and ``launch_ros`` stand-ins; returns their classes by name."""
    node = _kind('Node')
    kinds = {name: _kind(name) for name in (
        'LaunchDescription', 'DeclareLaunchArgument', 'EmitEvent', 'OpaqueFunction',
        'RegisterEventHandler', 'OnProcessExit', 'Shutdown', 'ChangeState', 'OnStateTransition')}
    kinds['Node'] = node
    kinds['LifecycleNode'] = _kind('LifecycleNode', node)
    modules = {
        'launch': _module('launch', LaunchDescription=kinds['LaunchDescription']),
        'launch.actions': _module('launch.actions', **{k: kinds[k] for k in (
            'DeclareLaunchArgument', 'EmitEvent', 'OpaqueFunction', 'RegisterEventHandler')}),
        'launch.substitutions': _module('launch.substitutions',
                                        LaunchConfiguration=LaunchConfiguration),
        'launch.event_handlers': _module('launch.event_handlers',
                                         OnProcessExit=kinds['OnProcessExit']),
        'launch.events': _module('launch.events', Shutdown=kinds['Shutdown'],
                                 matches_action=_matches_action),
        'launch_ros': _module('launch_ros'),
        'launch_ros.actions': _module('launch_ros.actions', Node=node,
                                      LifecycleNode=kinds['LifecycleNode']),
        'launch_ros.events': _module('launch_ros.events'),
        'launch_ros.events.lifecycle': _module('launch_ros.events.lifecycle',
                                               ChangeState=kinds['ChangeState']),
        'launch_ros.event_handlers': _module('launch_ros.event_handlers',
                                             OnStateTransition=kinds['OnStateTransition']),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return kinds


def _load_launch_file(name: str):
    path = LAUNCH_DIR / name
    spec = importlib.util.spec_from_file_location(f'_launch_under_test_{name[:-3]}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _describe(kinds, name, table):
    """Execute the launch file; check its declarations; return its OpaqueFunction's function."""
    description = _load_launch_file(name).generate_launch_description()
    assert isinstance(description, kinds['LaunchDescription'])
    entities = description.args[0]
    declared = [e for e in entities if isinstance(e, kinds['DeclareLaunchArgument'])]
    opaque = [e for e in entities if isinstance(e, kinds['OpaqueFunction'])]
    assert len(declared) + len(opaque) == len(entities)
    assert [(d.args[0], d.kwargs['default_value'], d.kwargs['description']) for d in declared] \
        == [(row.name, row.default, row.description) for row in table]
    assert all(row.description.strip() for row in table)
    assert len(opaque) == 1
    return opaque[0].kwargs['function']


def _context(table, **values):
    launch_configurations = {row.name: row.default for row in table}
    launch_configurations.update(values)
    return types.SimpleNamespace(launch_configurations=launch_configurations)


def _assert_node_matches(action, spec: NodeSpec):
    kwargs = action.kwargs
    assert action.args == ()
    assert kwargs['package'] == spec.package == 'fpmd_ros'
    assert kwargs['executable'] == spec.executable
    assert kwargs['name'] == spec.name
    assert kwargs['namespace'] == spec.namespace
    assert kwargs['parameters'] == [*spec.parameter_files, spec.parameters]
    assert [tuple(r) for r in kwargs['remappings']] == spec.remappings
    assert kwargs.get('respawn', False) == spec.respawn
    if spec.respawn:
        assert kwargs['respawn_delay'] == spec.respawn_delay_s
    assert kwargs['output'] == 'screen'
    # Typed values, as the launch file hands them to launch_ros unchanged.
    for value in spec.parameters.values():
        assert isinstance(value, (bool, int, float, str, list))


# --- train_sim.launch.py -------------------------------------------------------------------------

def _train_sim_actions(kinds, **values):
    function = _describe(kinds, 'train_sim.launch.py', TRAIN_SIM_ARGUMENTS)
    context = _context(TRAIN_SIM_ARGUMENTS, **values)
    actions = function(context)
    specs = train_sim_graph(launch_arguments(context.launch_configurations,
                                             TRAIN_SIM_ARGUMENTS))
    nodes = [a for a in actions if isinstance(a, kinds['Node'])]
    assert not any(isinstance(a, kinds['LifecycleNode']) for a in nodes)
    assert len(nodes) == len(specs)
    for action, spec in zip(nodes, specs, strict=True):
        _assert_node_matches(action, spec)
    # The launch ends when the trainer exits, and nothing else is registered.
    assert len(actions) == len(nodes) + 1
    _assert_exit_handlers(kinds, actions, nodes, specs, context)
    return specs


def _assert_exit_handlers(kinds, actions, nodes, specs, context):
    """Each node whose spec `ends_launch` has one exit handler that ends the launch, and no
    other node has one."""
    for node, spec in zip(nodes, specs, strict=True):
        handlers = [a for a in actions if isinstance(a, kinds['RegisterEventHandler'])
                    and isinstance(a.args[0], kinds['OnProcessExit'])
                    and a.args[0].kwargs['target_action'] is node]
        assert len(handlers) == spec.ends_launch
        for handler in handlers:
            _assert_exit_ends_launch(kinds, handler, node, spec, context)


def _assert_exit_ends_launch(kinds, handler, node, spec, context):
    """`handler` shuts the launch down when `node` exits: cleanly after exit code 0, else with
    an error (raised in the handler: ros2 launch then returns non-zero)."""
    assert isinstance(handler, kinds['RegisterEventHandler'])
    on_exit = handler.args[0]
    assert isinstance(on_exit, kinds['OnProcessExit'])
    assert on_exit.kwargs['target_action'] is node
    for stopping in (False, True):
        context.is_shutdown = stopping
        exited = on_exit.kwargs['on_exit'](types.SimpleNamespace(returncode=0), context)
        if stopping:  # after Ctrl-C a second Shutdown would fail the launch in launch_ros
            assert exited == []
        else:
            [emit] = exited
            assert isinstance(emit, kinds['EmitEvent'])
            assert isinstance(emit.kwargs['event'], kinds['Shutdown'])
            assert emit.kwargs['event'].kwargs == {
                'reason': f'{spec.fully_qualified_name} exited'}
        for code in (1, 2, 130):
            with pytest.raises(GraphError, match=rf'{spec.fully_qualified_name} failed '
                               rf'\(exit code {code}\)'):
                on_exit.kwargs['on_exit'](types.SimpleNamespace(returncode=code), context)


def _trainer_config(trainer: NodeSpec):
    """The resolved config file the trainer is given, read back as the trainer reads it."""
    path = Path(trainer.parameters['config'])
    assert path.name == RESOLVED_CONFIG_NAME and path.is_file()
    cfg = make_config(file=path)
    assert path == Path(cfg.trainer.output_dir) / RESOLVED_CONFIG_NAME
    return cfg


def test_train_sim_launch_defaults(fake_launch, tmp_path):
    specs = _train_sim_actions(fake_launch)
    # config/train_sim.yaml: one env, InvertedPendulum-v5, fpmd_m, 25000 steps, seed 0.
    assert [(s.executable, s.name, s.namespace) for s in specs] == [
        ('mujoco_sim', 'mujoco_sim', 'env_0'), ('trainer', 'trainer', '')]
    sim, trainer = specs
    assert sim.parameters == {'task': TASK, 'mode': 'lockstep', 'seed': 0,
                              'max_episode_steps': 0, 'action_repeat': 1}
    assert sim.respawn and not sim.ends_launch and not sim.lifecycle
    assert trainer.ends_launch and not trainer.respawn
    params = trainer.parameters
    assert params['config'] == str(tmp_path / 'runs' / 'fpmd' / RESOLVED_CONFIG_NAME)
    cfg = _trainer_config(trainer)
    expected = make_config(file=graph.default_config_path())
    assert cfg.trainer.output_dir == str(tmp_path / 'runs' / 'fpmd')
    expected.trainer.output_dir = cfg.trainer.output_dir
    assert cfg == expected  # the package's config as it is, every field
    assert params['env_namespaces'] == ['env_0']
    assert params['step_timeout_s'] == 10.0 and isinstance(params['step_timeout_s'], float)
    assert params['connect_timeout_s'] == 60.0 and isinstance(params['connect_timeout_s'], float)
    assert params['max_recoveries'] == 3 and params['resume'] == ''
    assert set(params) == {'config', 'env_namespaces', 'step_timeout_s', 'connect_timeout_s',
                           'max_recoveries', 'resume'}


def test_train_sim_launch_arguments_override_the_config(fake_launch, tmp_path):
    specs = _train_sim_actions(
        fake_launch, task='Hopper-v5', algo='sac', num_envs='3', total_steps='500', seed='7',
        warmup_steps='100', eval_interval='250', output_dir=str(tmp_path / 'out'),
        remote_envs='lab/env_9, env_10', step_timeout_s='2.5', connect_timeout_s='30',
        max_recoveries='0')
    sims, trainer = specs[:-1], specs[-1]
    assert [s.namespace for s in sims] == ['env_0', 'env_1', 'env_2']  # remote ones: not here
    for i, sim in enumerate(sims):
        assert sim.parameters == {'task': 'Hopper-v5', 'mode': 'lockstep',
                                  'seed': 7 + i * SEED_STRIDE, 'max_episode_steps': 0,
                                  'action_repeat': 1}
    params = trainer.parameters
    assert params['env_namespaces'] == ['env_0', 'env_1', 'env_2', 'lab/env_9', 'env_10']
    cfg = _trainer_config(trainer)
    assert (cfg.task.id, cfg.agent.algo, cfg.task.num_envs, cfg.trainer.total_steps,
            cfg.trainer.seed, cfg.trainer.warmup_steps, cfg.trainer.eval_interval) == (
        'Hopper-v5', 'sac', 5, 500, 7, 100, 250)
    assert params['config'] == str(tmp_path / 'out' / RESOLVED_CONFIG_NAME)
    # Fields no argument sets keep the config file's values.
    assert cfg.agent.critic_lr == make_config(file=graph.default_config_path()).agent.critic_lr
    assert params['step_timeout_s'] == 2.5
    assert params['connect_timeout_s'] == 30.0 and isinstance(params['connect_timeout_s'], float)
    assert params['max_recoveries'] == 0


def test_launch_arguments_refuse_mistyped_names_and_ignore_the_launch_systems(fake_launch):
    function = _describe(fake_launch, 'train_sim.launch.py', TRAIN_SIM_ARGUMENTS)
    # ros2 launch fpmd_ros train_sim.launch.py total_step:=100: a configuration no one reads.
    with pytest.raises(GraphArgumentError, match="argument 'total_step': unknown argument; did "
                       'you mean total_steps\\? expected one of: task, algo') as caught:
        function(_context(TRAIN_SIM_ARGUMENTS, total_step='100'))
    assert caught.value.argument == 'total_step'
    # What ros2 launch (--launch-prefix), launch and launch_ros put there themselves is fine.
    system = {'launch-prefix': 'gdb -ex run --args', 'launch-prefix-filter': 'trainer',
              'emulate_tty': 'true', 'ros_namespace': '/lab', 'global_params': [],
              'anon1234': 'x'}
    values = launch_arguments({**system, 'seed': '3'}, TRAIN_SIM_ARGUMENTS)
    assert values == {**{row.name: row.default for row in TRAIN_SIM_ARGUMENTS}, 'seed': '3'}
    deploy = _describe(fake_launch, 'deploy.launch.py', DEPLOY_ARGUMENTS)
    with pytest.raises(GraphArgumentError, match="'polcy': unknown argument; did you mean "
                       'policy\\?'):
        deploy(_context(DEPLOY_ARGUMENTS, polcy='x.onnx'))


def test_train_sim_config_file_values(tmp_path):
    config = tmp_path / 'mine.yaml'
    config.write_text('profile: cpu\ntask: {id: cheetah-run, num_envs: 2, max_episode_steps: 50}'
                      '\ntrainer: {seed: 3, output_dir: ' + str(tmp_path / 'o') + '}\n')
    sims = train_sim_graph({'config': str(config)})[:-1]
    assert [s.parameters for s in sims] == [
        {'task': 'cheetah-run', 'mode': 'lockstep', 'seed': 3 + i * SEED_STRIDE,
         'max_episode_steps': 50, 'action_repeat': 1} for i in range(2)]
    resume = tmp_path / 'ckpt.pt'
    resume.write_bytes(b'')
    trainer = train_sim_graph({'config': str(config), 'resume': str(resume),
                               'num_envs': '0', 'remote_envs': 'far_0'})
    assert len(trainer) == 1  # only the trainer: its sim runs elsewhere
    assert trainer[0].parameters['env_namespaces'] == ['far_0']
    assert trainer[0].parameters['resume'] == str(resume)
    cfg = _trainer_config(trainer[0])
    assert (cfg.trainer.output_dir, cfg.task.num_envs, cfg.task.id) == (
        str(tmp_path / 'o'), 1, 'cheetah-run')
    # remote_envs without num_envs: the config's local sims and the remote ones.
    sims_and_trainer = train_sim_graph({'config': str(config), 'remote_envs': 'far_0'})
    assert [s.namespace for s in sims_and_trainer[:-1]] == ['env_0', 'env_1']
    assert sims_and_trainer[-1].parameters['env_namespaces'] == ['env_0', 'env_1', 'far_0']
    assert _trainer_config(sims_and_trainer[-1]).task.num_envs == 3


# --- deploy.launch.py ----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def policy_file(tmp_path_factory) -> Path:
    return export_untrained_policy(tmp_path_factory.mktemp('policy') / 'policy.onnx')


def _deploy_actions(kinds, **values):
    function = _describe(kinds, 'deploy.launch.py', DEPLOY_ARGUMENTS)
    context = _context(DEPLOY_ARGUMENTS, **values)
    actions = function(context)
    specs = deploy_graph(dict(context.launch_configurations))
    nodes = [a for a in actions if isinstance(a, kinds['Node'])]
    assert len(nodes) == len(specs)
    for action, spec in zip(nodes, specs, strict=True):
        _assert_node_matches(action, spec)
        assert isinstance(action, kinds['LifecycleNode']) == spec.lifecycle
    _assert_exit_handlers(kinds, actions, nodes, specs, context)
    from lifecycle_msgs.msg import Transition

    for spec, node in zip(specs, nodes, strict=True):
        if not spec.lifecycle:
            continue
        # [after-configure handler, node, configure]: configure on start; the outcome of that
        # first configure (once) activates the node or ends the launch.
        at = actions.index(node)
        handler, configure = actions[at - 1], actions[at + 1]
        assert isinstance(handler, kinds['RegisterEventHandler'])
        transition = handler.args[0]
        assert isinstance(transition, kinds['OnStateTransition'])
        assert transition.kwargs['target_lifecycle_node'] is node
        assert transition.kwargs['start_state'] == 'configuring'
        assert 'goal_state' not in transition.kwargs  # success and failure alike
        # Once: a user's deactivate -> cleanup -> configure must not be re-activated.
        assert transition.kwargs['handle_once'] is True
        [after] = transition.kwargs['entities']
        assert isinstance(after, kinds['OpaqueFunction'])

        def outcome(goal_state, after=after):
            event = types.SimpleNamespace(start_state='configuring', goal_state=goal_state)
            context = types.SimpleNamespace(locals=types.SimpleNamespace(event=event))
            return after.kwargs['function'](context, *after.kwargs['args'])

        [activate] = outcome('inactive')
        assert isinstance(activate, kinds['EmitEvent'])
        assert activate.kwargs['event'].kwargs == {
            'lifecycle_node_matcher': ('matches_action', node),
            'transition_id': Transition.TRANSITION_ACTIVATE}
        for failed in ('unconfigured', 'errorprocessing'):
            with pytest.raises(GraphError, match=rf'{spec.fully_qualified_name}: configure at '
                               rf"start-up failed \(it went to '{failed}'\)"):
                outcome(failed)
        assert isinstance(configure, kinds['EmitEvent'])
        assert configure.kwargs['event'].kwargs == {
            'lifecycle_node_matcher': ('matches_action', node),
            'transition_id': Transition.TRANSITION_CONFIGURE}
    return specs


def test_deploy_launch_defaults(fake_launch, policy_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default policy is runs/fpmd/policy.onnx
    (tmp_path / 'runs' / 'fpmd').mkdir(parents=True)
    (tmp_path / 'runs' / 'fpmd' / 'policy.onnx').write_bytes(policy_file.read_bytes())
    [controller] = _deploy_actions(fake_launch)
    assert (controller.executable, controller.name, controller.namespace) == (
        'policy_controller', 'policy_controller', '')
    assert controller.lifecycle and controller.ends_launch
    assert controller.parameters == {
        'policy': str(tmp_path / 'runs' / 'fpmd' / 'policy.onnx'),
        'observation_mode': 'observation', 'control_rate_hz': 0.0, 'trigger': 'timer',
        'use_sim_time': False}
    assert isinstance(controller.parameters['control_rate_hz'], float)
    assert controller.remappings == [('commands', 'commands')]


def test_deploy_of_a_pixel_policy_starts_a_camera_sim_and_wires_its_frames(fake_launch,
                                                                          tmp_path):
    policy = export_untrained_policy(tmp_path / 'pixels.onnx', 'cartpole-swingup', pixels=True)
    sim, controller = _deploy_actions(fake_launch, policy=str(policy), observation_mode='image',
                                      sim='true')
    assert sim.parameters == {'task': 'cartpole-swingup', 'mode': 'realtime',
                              'publish_clock': False, 'action_repeat': 2,
                              'camera_enabled': True, 'image_width': 32, 'image_height': 32,
                              'camera': '0'}
    assert controller.parameters['observation_mode'] == 'image'
    assert ('image_raw', 'camera/image_raw') in controller.remappings
    with pytest.raises(GraphArgumentError, match="'observation', but .* acts from camera"):
        deploy_graph({'policy': str(policy), 'sim': 'true'})
    (controller,) = deploy_graph({'policy': str(policy), 'observation_mode': 'image',
                                  'image_topic': '/robot/front/image_raw'})
    assert ('image_raw', '/robot/front/image_raw') in controller.remappings


def test_deploy_launch_with_sim(fake_launch, policy_file):
    sim, controller = _deploy_actions(
        fake_launch, policy=str(policy_file), observation_mode='joint_states',
        control_rate_hz='50', sim='true', command_topic='/robot/commands', namespace='/lab/r1',
        use_sim_time='True')
    assert (sim.executable, sim.namespace, sim.lifecycle) == ('mujoco_sim', '/lab/r1', False)
    assert sim.parameters == {'task': POLICY_TASK, 'mode': 'realtime', 'publish_clock': True,
                              'action_repeat': 1}
    assert controller.namespace == '/lab/r1'  # same namespace: observation/joint_states wired
    assert controller.fully_qualified_name == '/lab/r1/policy_controller'
    assert runner.node_command(controller, 'p')[6:8] == ['-r', '__ns:=/lab/r1']
    assert controller.parameters['control_rate_hz'] == 50.0
    assert isinstance(controller.parameters['control_rate_hz'], float)
    assert controller.parameters['use_sim_time'] is True
    assert controller.parameters['observation_mode'] == 'joint_states'
    # With the sim, the controller steps on each of its observations (no timer phase delay).
    assert controller.parameters['trigger'] == 'observation'
    # The controller's commands reach the sim on the chosen topic.
    assert controller.remappings == sim.remappings == [('commands', '/robot/commands')]


def test_deploy_trigger_argument(policy_file):
    def trigger(**args):
        specs = deploy_graph({'policy': str(policy_file), **args})
        return specs[-1].parameters['trigger']

    assert (trigger(), trigger(sim='true')) == ('timer', 'observation')
    assert trigger(sim='true', trigger='timer') == 'timer'
    assert trigger(trigger='observation') == 'observation'


def test_deploy_params_file_reaches_the_controller_before_the_arguments(fake_launch,
                                                                       policy_file, tmp_path):
    params = tmp_path / 'controller.yaml'
    params.write_text('/lab/r1/policy_controller:\n  ros__parameters:\n'
                      '    max_action_delta: 0.05\n'
                      'other_node:\n  ros__parameters:\n    policy: not ours\n')
    [controller] = _deploy_actions(fake_launch, policy=str(policy_file), namespace='/lab/r1',
                                   params_file=str(params))
    assert controller.parameter_files == [str(params)]
    # launch_ros loads a file entry before the dict: the two share no parameter (below).
    assert controller.launch_kwargs()['parameters'] == [str(params), controller.parameters]
    command = runner.node_command(controller, 'p')
    at = command.index('--params-file')
    assert command[at + 1] == str(params) and at < command.index('-p')
    (controller,) = deploy_graph({'policy': str(policy_file)})
    assert controller.parameter_files == []


@pytest.mark.parametrize('key', ['policy_controller', '/policy_controller', '/**',
                                 '/**/policy_controller'])
def test_deploy_params_file_keys_that_reach_the_controller(policy_file, tmp_path, key):
    params = tmp_path / 'p.yaml'
    params.write_text(f"'{key}':\n  ros__parameters:\n    safe_action: hold\n")
    (controller,) = deploy_graph({'policy': str(policy_file), 'params_file': str(params)})
    assert controller.parameter_files == [str(params)]


@pytest.mark.parametrize('text, expected', [
    (None, 'file not found'),
    # One line of the parser's message, with its type.
    ('a: [unclosed\n', r'does not read as YAML \(ParserError: [^\n]+\)$'),
    ('- a list\n', r'no section for /policy_controller; expected a top-level key '
                   r'/policy_controller or policy_controller or /\*\* or '
                   r'/\*\*/policy_controller holding ros__parameters'),
    ('/other/policy_controller:\n  ros__parameters: {x: 1}\n', 'no section for'),
    ('policy_controller:\n  safe_action: hold\n', 'expected ros__parameters: followed by'),
    ('/**:\n  ros__parameters:\n    control_rate_hz: 50.0\n',
     'sets control_rate_hz, which the argument control_rate_hz:=... sets'),
    ('policy_controller:\n  ros__parameters:\n    autostart: true\n', 'sets autostart'),
])
def test_deploy_params_file_errors(policy_file, tmp_path, text, expected):
    params = tmp_path / 'p.yaml'
    if text is not None:
        params.write_text(text)
    with pytest.raises(GraphArgumentError, match=expected) as caught:
        deploy_graph({'policy': str(policy_file), 'params_file': str(params)})
    assert caught.value.argument == 'params_file'


def test_argument_controller_parameters_are_the_arguments_deploy_graph_sets(policy_file,
                                                                           tmp_path):
    (controller,) = deploy_graph({'policy': str(policy_file), 'task_file': str(tmp_path)})
    assert set(controller.parameters) == set(graph.ARGUMENT_CONTROLLER_PARAMETERS)
    assert set(graph.ARGUMENT_CONTROLLER_PARAMETERS) <= {r.name for r in DEPLOY_ARGUMENTS}


# --- the specs' parameters exist in the nodes, with the same types ------------------------------

def _declared_types(module) -> dict[str, type]:
    from rclpy.parameter import Parameter

    types_by_kind = {Parameter.Type.STRING_ARRAY: list, Parameter.Type.DOUBLE_ARRAY: list}
    declared = {}
    for name, (default, _) in module.PARAMETERS.items():
        declared[name] = types_by_kind.get(default, type(default))
    declared['use_sim_time'] = bool  # declared by every rclpy node
    return declared


def test_spec_parameters_are_declared_by_the_nodes(policy_file):
    from fpmd_ros import trainer_node
    from fpmd_ros.controller import parameters as controller_parameters
    from fpmd_ros.sim import node as sim_node

    declared = {'mujoco_sim': _declared_types(sim_node),
                'trainer': _declared_types(trainer_node),
                'policy_controller': _declared_types(controller_parameters)}
    specs = [*train_sim_graph({'num_envs': '2', 'remote_envs': 'x'}),
             *deploy_graph({'policy': str(policy_file), 'sim': 'true'}),
             *deploy_graph({'policy': str(policy_file), 'sim': 'true', 'trigger': 'timer'},
                           sim_episodes=SimEpisodes(2.0, 1, 10))]
    assert {s.executable for s in specs} == set(declared)
    for spec in specs:
        for name, value in spec.parameters.items():
            assert name in declared[spec.executable], f'{spec.executable} has no {name!r}'
            assert type(value) is declared[spec.executable][name], (spec.executable, name)
    # The runner knows a module for every executable, matching setup.py's console scripts.
    setup_py = (REPO_ROOT / 'setup.py').read_text()
    for executable, module in runner.MODULES.items():
        assert f"'{executable} = {module}:main'" in setup_py


# --- argument validation -----------------------------------------------------------------------

@pytest.mark.parametrize('args, argument, expected', [
    ({'num_envs': 'two'}, 'num_envs', 'expected an integer >= 1'),
    ({'num_envs': '0'}, 'num_envs', 'expected an integer >= 1'),
    ({'algo': 'ppo'}, 'algo', 'expected one of: fpmd_r, fpmd_m, dpmd, sac'),
    ({'task': 'CartPole-v1'}, 'task', 'neither a Gymnasium MuJoCo id'),
    ({'total_steps': '-5'}, 'total_steps', 'expected an integer >= 1'),
    ({'seed': '1.5'}, 'seed', 'expected an integer >= 0'),
    ({'config': '/no/such.yaml'}, 'config', 'file not found'),
    ({'step_timeout_s': '0'}, 'step_timeout_s', 'expected a number > 0'),
    ({'connect_timeout_s': 'soon'}, 'connect_timeout_s', 'expected a number > 0'),
    ({'max_recoveries': '-1'}, 'max_recoveries', 'expected an integer >= 0'),
    ({'remote_envs': 'env_0'}, 'remote_envs', 'expected distinct namespaces'),
    ({'remote_envs': 'bad name!'}, 'remote_envs', 'not a ROS namespace'),
    ({'resume': '/no/such.pt'}, 'resume', 'file not found'),
    ({'tsak': 'Hopper-v5'}, 'tsak', 'unknown argument; did you mean task\\? expected one of: '
     'task, algo'),
    ({'warmup_steps': '-1'}, 'warmup_steps', 'expected an integer >= 0'),
    ({'eval_interval': 'often'}, 'eval_interval', 'expected an integer >= 0'),
    ({'output_dir': '/proc/no_such_folder'}, 'output_dir', 'cannot write config.yaml'),
])
def test_train_sim_argument_errors(args, argument, expected):
    with pytest.raises(GraphArgumentError, match=expected) as caught:
        train_sim_graph(args)
    assert caught.value.argument == argument
    assert str(caught.value).startswith(f"argument '{argument}': ")


def test_train_sim_config_errors_name_the_field(tmp_path):
    config = tmp_path / 'bad.yaml'
    config.write_text('agent: {hiden: 32}\n')
    with pytest.raises(GraphArgumentError, match=rf"argument 'config': {config}: agent.hiden: "
                       r'unknown field \(did you mean agent.hidden\?\)'):
        train_sim_graph({'config': str(config)})
    assert not (tmp_path / 'runs').exists()  # nothing written for a refused run


def test_config_errors_name_the_arguments_that_set_the_fields(tmp_path):
    # A field that an argument sets is named as that argument, wherever its value came from.
    config = tmp_path / 'negative.yaml'
    config.write_text('profile: cpu\ntrainer: {warmup_steps: -3}\n')
    with pytest.raises(GraphArgumentError, match=r"argument 'warmup_steps': "
                       r'trainer.warmup_steps: expected an integer >= 0, got -3 \(config file '):
        train_sim_graph({'config': str(config)})
    # A run that would train nothing: fpmd_core refuses total_steps <= warmup_steps.
    try:
        make_config('cpu', overrides={'trainer.total_steps': 100, 'trainer.warmup_steps': 200})
    except ConfigError:
        pass
    else:
        pytest.skip('this fpmd_core does not refuse total_steps <= warmup_steps yet')
    for args in ({'total_steps': '100', 'warmup_steps': '200'},
                 {'total_steps': '100'}):  # the default config's warm-up is 5000 steps
        with pytest.raises(GraphArgumentError) as caught:
            train_sim_graph(args)
        # Named as launch arguments: each one whose field fpmd_core's message mentions.
        fields = {'trainer.total_steps': 'total_steps', 'trainer.warmup_steps': 'warmup_steps'}
        mentioned = {argument for field, argument in fields.items()
                     if field in str(caught.value)}
        assert mentioned and set(caught.value.arguments) == mentioned, str(caught.value)


@pytest.mark.parametrize('args, argument, expected', [
    ({'policy': '/no/such.onnx'}, 'policy', 'file not found'),
    ({'observation_mode': 'lidar'}, 'observation_mode',
     'expected one of: observation, joint_states, image'),
    ({'observation_mode': 'image'}, 'observation_mode', 'is a state policy'),
    ({'image_topic': 'camera image'}, 'image_topic', 'expected a ROS topic name'),
    ({'control_rate_hz': '-1'}, 'control_rate_hz', 'expected a number >= 0'),
    ({'control_rate_hz': 'nan'}, 'control_rate_hz', 'expected a number >= 0'),
    ({'sim': 'maybe'}, 'sim', 'expected true or false'),
    ({'trigger': 'often'}, 'trigger', 'expected one of: timer, observation'),
    ({'use_sim_time': '2'}, 'use_sim_time', 'expected true or false'),
    ({'command_topic': 'bad topic'}, 'command_topic', 'expected a ROS topic name'),
    ({'namespace': 'a//b'}, 'namespace', 'expected a ROS namespace'),
    ({'polcy': 'x'}, 'polcy', 'unknown argument; did you mean policy'),
])
def test_deploy_argument_errors(args, argument, expected, policy_file):
    args = {'policy': str(policy_file), **args}
    with pytest.raises(GraphArgumentError, match=expected) as caught:
        deploy_graph(args)
    assert caught.value.argument == argument


def test_deploy_policy_that_is_missing_or_a_directory(tmp_path):
    with pytest.raises(GraphArgumentError, match=r'file not found: .*; train one first \(ros2 '
                       r'launch fpmd_ros train_sim.launch.py, or ./fpmd train\)'):
        deploy_graph({'policy': str(tmp_path / 'runs' / 'policy.onnx')})
    (tmp_path / 'run.onnx').mkdir()
    for sim in ('false', 'true'):
        with pytest.raises(GraphArgumentError, match=rf"argument 'policy': {tmp_path}/run.onnx "
                           rf'is a directory; expected the policy file in it, e.g. '
                           rf'{tmp_path}/run.onnx/policy.onnx'):
            deploy_graph({'policy': str(tmp_path / 'run.onnx'), 'sim': sim})
    with pytest.raises(GraphArgumentError, match='is a directory'):
        graph.policy_metadata(str(tmp_path))


def test_deploy_graph_takes_the_rehearsals_sim_settings(policy_file):
    meta = graph.policy_metadata(str(policy_file))
    sim, controller = deploy_graph({'policy': str(policy_file), 'sim': 'true',
                                    'trigger': 'timer'}, meta=meta,
                                   sim_episodes=SimEpisodes(2.0, 5, 30))
    assert {k: sim.parameters[k] for k in ('realtime_factor', 'seed', 'max_episode_steps')} == {
        'realtime_factor': 2.0, 'seed': 5, 'max_episode_steps': 30}
    # A timer at the policy's rate would fall behind a sim twice as fast as real time.
    assert controller.parameters['control_rate_hz'] == 2.0 / meta['control_period_s']
    sim, controller = deploy_graph({'policy': str(policy_file), 'sim': 'true'}, meta=meta,
                                   sim_episodes=SimEpisodes(0.5, 0, 0))
    assert controller.parameters['control_rate_hz'] == 0.0  # trigger observation: the sim's
    [plain_sim, _] = deploy_graph({'policy': str(policy_file), 'sim': 'true'})
    assert not {'realtime_factor', 'seed', 'max_episode_steps'} & set(plain_sim.parameters)


def test_deploy_unreadable_policy_is_named(tmp_path):
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(b'not a model')
    deploy_graph({'policy': str(broken)})  # without the sim, the controller checks it
    with pytest.raises(GraphArgumentError, match="argument 'policy': cannot read the policy"):
        deploy_graph({'policy': str(broken), 'sim': 'true'})


# --- runner command lines ------------------------------------------------------------------------

@pytest.mark.parametrize('value, text', [
    (True, 'true'), (False, 'false'), (3, '3'), (-2, '-2'), (2.0, '2.0'), (0.25, '0.25'),
    (1e-05, '1.0e-05'), (1e20, '1.0e+20'), ('Hopper-v5', "'Hopper-v5'"), ('123', "'123'"),
    ('true', "'true'"), ('', "''"), ("it's", "'it''s'"), (['env_0', 'env_1'], "['env_0','env_1']"),
    ([1, 2.5], '[1.0,2.5]'), ([1, 2], '[1,2]'),
])
def test_format_parameter(value, text):
    assert runner.format_parameter(value) == text


def test_format_parameter_refuses_untyped_values():
    with pytest.raises(ValueError, match='empty array'):
        runner.format_parameter([])
    with pytest.raises(TypeError):
        runner.format_parameter(['a', 1])
    with pytest.raises(TypeError):
        runner.format_parameter({'a': 1})


def test_a_pixel_config_gives_sims_their_camera(tmp_path):
    config = tmp_path / 'pixels.yaml'
    config.write_text('profile: cpu_pixels\ntask: {id: walker-walk, image_size: 64, '
                      'camera: "1"}\n')
    sim, trainer = train_sim_graph({'config': str(config)})
    assert sim.parameters == {'task': 'walker-walk', 'mode': 'lockstep', 'seed': 0,
                              'max_episode_steps': 0, 'action_repeat': 2,
                              'camera_enabled': True, 'image_width': 64, 'image_height': 64,
                              'camera': '1'}
    assert _trainer_config(trainer).task.image_size == 64


def test_node_commands_of_the_train_sim_graph():
    sim, trainer = train_sim_graph({'seed': '4'})
    assert runner.node_command(sim, 'python') == [
        'python', '-m', 'fpmd_ros.sim_node', '--ros-args', '-r', '__node:=mujoco_sim',
        '-r', '__ns:=/env_0', '-p', "task:='InvertedPendulum-v5'", '-p', "mode:='lockstep'",
        '-p', 'seed:=4', '-p', 'max_episode_steps:=0', '-p', 'action_repeat:=1']
    command = runner.node_command(trainer, 'python')
    assert command[:6] == ['python', '-m', 'fpmd_ros.trainer_node', '--ros-args', '-r',
                           '__node:=trainer']
    assert '__ns:=' not in ' '.join(command)
    assert "env_namespaces:=['env_0']" in command
    assert 'step_timeout_s:=10.0' in command
    assert f"config:='{trainer.parameters['config']}'" in command
    remapped = NodeSpec('policy_controller', 'policy_controller', 'a/b', {'x': 1.0},
                        [('commands', '/c')])
    assert runner.node_command(remapped, 'p')[4:] == [
        '-r', '__node:=policy_controller', '-r', '__ns:=/a/b', '-p', 'x:=1.0', '-r',
        'commands:=/c']


def test_runner_command_line_errors(capsys):
    assert runner.main(['train_sim', 'num_envs=2']) == 2
    assert 'expected name:=value' in capsys.readouterr().err
    assert runner.main(['train_sim', 'num_envs:=x']) == 2
    assert "argument 'num_envs': 'x'; expected an integer >= 1" in capsys.readouterr().err
    assert runner.main(['train_sim', 'total_step:=100']) == 2
    assert "'total_step': unknown argument; did you mean total_steps?" in capsys.readouterr().err
    assert runner.main(['fly']) == 2
    assert "unknown graph 'fly'" in capsys.readouterr().err
    assert runner.main(['deploy', '--show-args']) == 0
    shown = capsys.readouterr().out
    assert all(row.name in shown and row.description in shown for row in DEPLOY_ARGUMENTS)
