"""Typed configuration and `fpmd-train`'s command line: paper defaults, profiles, files and
overrides; every bad value is an error that names the field, nothing is silently coerced."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
from pathlib import Path

import pytest

from fpmd_core import cli, config
from fpmd_core.agents.fpmd import target_entropy_alpha
from fpmd_core.config import (
    AgentConfig,
    Config,
    ConfigError,
    TaskConfig,
    TrainerConfig,
    config_from_dict,
    gradient_steps_of_run,
    make_config,
    parse_override,
    training_steps,
)

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_papers():
    cfg = make_config()
    a, t = cfg.agent, cfg.trainer
    assert (a.algo, a.hidden, a.layers, a.batch_size) == ('fpmd_r', 256, 3, 256)
    assert (a.gamma, a.tau, a.reward_scale, a.actor_interval) == (0.99, 0.005, 0.2, 2)
    assert (a.critic_lr, a.actor_lr, a.actor_lr_final) == (3e-4, 3e-4, 3e-5)
    assert (a.lr_decay_start, a.lr_decay_length) == (25_000, 50_000)
    assert (a.flow_steps, a.meanflow_steps, a.particles, a.noise_scale_init) == (20, 1, 32, 0.5)
    assert (a.alpha_init, a.alpha_lr, a.alpha_interval) == (5.0, 7e-3, 250)
    assert (a.target_entropy_scale, a.explore_noise, a.q_stat_rate) == (1.5, 0.1, 0.001)
    assert (a.weight_clip, a.weight_form, a.p_equal, a.diffusion_steps) == (
        3.0, 'normalized', 0.0, 20)
    assert (cfg.task.num_envs, t.updates_per_step, t.warmup_steps, t.replay_size) == (
        5, 1, 30_000, 1_000_000)
    assert make_config('paper') == cfg


def test_every_field_has_a_docstring():
    """Each dataclass field is followed by its string comment in the source."""
    for cls in (TaskConfig, AgentConfig, TrainerConfig):
        body = ast.parse(inspect.getsource(cls)).body[0].body
        documented = {
            node.target.id for node, after in zip(body, body[1:] + [None], strict=True)
            if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
            and after.value.value.strip()
        }
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields - documented == set(), cls.__name__


def test_cpu_profile_then_overrides():
    cpu, paper = make_config('cpu'), make_config('paper')
    profile = config.PROFILES['cpu']
    for key, value in profile.items():
        section, name = key.split('.')
        assert getattr(getattr(cpu, section), name) == value, key
    untouched = {f'agent.{f.name}' for f in dataclasses.fields(AgentConfig)} - set(profile)
    for key in untouched:
        assert getattr(cpu.agent, key[6:]) == getattr(paper.agent, key[6:]), key
    # a CPU budget: fewer particles, flow steps and warm-up than the paper
    assert cpu.agent.particles < paper.agent.particles
    assert cpu.agent.flow_steps < paper.agent.flow_steps
    assert cpu.trainer.warmup_steps < paper.trainer.warmup_steps
    # stable-baselines3 SAC's network and reward scale (docs/algorithm.md, Profiles)
    assert (cpu.agent.hidden, cpu.agent.layers, cpu.agent.reward_scale) == (256, 2, 1.0)
    assert cpu.agent.alpha_schedule == paper.agent.alpha_schedule == 'entropy'  # FPMD-R's
    cfg = make_config('cpu', overrides={'agent.particles': 3, 'trainer.warmup_steps': 10})
    assert (cfg.agent.particles, cfg.trainer.warmup_steps) == (3, 10)
    assert cfg.agent.flow_steps == cpu.agent.flow_steps
    assert make_config('cpu', overrides=['agent.particles=3']).agent.particles == 3


def test_cpu_fpmd_m_anneals_alpha_over_the_budget_and_the_others_keep_the_papers_pace(tmp_path):
    """`ALGORITHM_PROFILES`: the profile's entries for the run's algorithm, from an override or
    the config file; a file field or an override still wins over them."""
    def schedule(profile, **kwargs):
        return make_config(profile, **kwargs).agent.alpha_schedule

    for profile in ('cpu', 'cpu_pixels'):
        assert schedule(profile, overrides={'agent.algo': 'fpmd_m'}) == 'budget'
        for algo in ('fpmd_r', 'dpmd', 'sac'):
            assert schedule(profile, overrides={'agent.algo': algo}) == 'entropy', algo
    assert schedule('paper', overrides={'agent.algo': 'fpmd_m'}) == 'entropy'
    assert schedule('cpu', overrides=['agent.algo=fpmd_m', 'agent.alpha_schedule=entropy']) \
        == 'entropy'
    run_file = tmp_path / 'run.yaml'
    run_file.write_text('profile: cpu\nagent:\n  algo: fpmd_m\n')
    assert schedule(None, file=run_file) == 'budget'
    assert schedule(None, file=run_file, overrides={'agent.algo': 'fpmd_r'}) == 'entropy'
    # cpu FPMD-M, and the file's own field wins (docs/benchmarks.md: InvertedPendulum)
    assert schedule(None, file=REPO / 'config' / 'train_sim.yaml') == 'entropy'
    assert schedule(None, file=REPO / 'config' / 'train_sim.yaml',
                    overrides={'task.id': 'Hopper-v5'}) == 'entropy'
    cpu_m = make_config('cpu', overrides={'agent.algo': 'fpmd_m'})
    cpu_r = make_config('cpu', overrides={'agent.algo': 'fpmd_r'})
    fields_m, fields_r = (
        {f'{section}.{name}': value for section, values in cfg.to_dict().items()
         for name, value in values.items()} for cfg in (cpu_m, cpu_r))
    differing = {name for name in fields_m if fields_m[name] != fields_r[name]}
    assert differing == {'agent.algo'} | set(config.ALGORITHM_PROFILES['cpu']['fpmd_m'])


def test_cpu_fpmd_m_learns_after_a_shorter_warm_up():
    """`cpu` FPMD-M: 500 random env steps before learning (Hopper stayed behind SB3 SAC at 25k
    with 2,000); the other algorithms keep the profile's 2,000, and config/train_sim.yaml its
    5,000, with which its runs were measured."""
    def warmup(profile, algo, **kwargs):
        return make_config(profile, overrides={'agent.algo': algo}, **kwargs).trainer.warmup_steps

    assert warmup('cpu', 'fpmd_m') == warmup('cpu_pixels', 'fpmd_m') == 500
    for algo in ('fpmd_r', 'dpmd', 'sac'):
        assert warmup('cpu', algo) == 2_000, algo
    assert warmup('paper', 'fpmd_m') == 30_000
    assert warmup(None, 'fpmd_m', file=REPO / 'config' / 'train_sim.yaml') == 5_000


def test_cpu_fpmd_m_samples_its_training_actions_from_the_full_prior():
    """`cpu` FPMD-M draws training samples from x0 = 1.0 eps (Ant collapsed with the paper's
    0.5); the paper and the other algorithms keep 0.5, and so does config/train_sim.yaml, whose
    runs were measured with it."""
    def noise_scale(profile, algo, **kwargs):
        return make_config(profile, overrides={'agent.algo': algo}, **kwargs).agent.noise_scale_init

    for profile in ('cpu', 'cpu_pixels'):
        assert noise_scale(profile, 'fpmd_m') == 1.0
        for algo in ('fpmd_r', 'dpmd', 'sac'):
            assert noise_scale(profile, algo) == 0.5, algo
    assert noise_scale('paper', 'fpmd_m') == 0.5
    assert make_config(file=REPO / 'config' / 'train_sim.yaml').agent.noise_scale_init == 0.5
    assert make_config('cpu', overrides=['agent.algo=fpmd_m', 'agent.noise_scale_init=0.7']) \
        .agent.noise_scale_init == 0.7


def test_cpu_fpmd_m_weighs_samples_by_their_advantage():
    """`cpu` FPMD-M compares each sample with its state's own baseline; the paper and the other
    algorithms keep (Q - mu) / sigma, and so does config/train_sim.yaml, measured with it."""
    def form(profile, algo):
        return make_config(profile, overrides={'agent.algo': algo}).agent.weight_form

    for profile in ('cpu', 'cpu_pixels'):
        assert form(profile, 'fpmd_m') == 'advantage'
        for algo in ('fpmd_r', 'dpmd'):
            assert form(profile, algo) == 'normalized', algo
    assert form('paper', 'fpmd_m') == 'normalized'
    assert make_config(file=REPO / 'config' / 'train_sim.yaml').agent.weight_form == 'normalized'


def test_cpu_fpmd_m_updates_its_actor_every_gradient_step():
    """`cpu` FPMD-M, as SAC; the paper, the other algorithms and config/train_sim.yaml (measured
    with it) keep the released delay of 2."""
    def interval(profile, algo):
        return make_config(profile, overrides={'agent.algo': algo}).agent.actor_interval

    for profile in ('cpu', 'cpu_pixels'):
        assert interval(profile, 'fpmd_m') == 1
        for algo in ('fpmd_r', 'dpmd'):
            assert interval(profile, algo) == 2, algo
    assert interval('paper', 'fpmd_m') == 2
    assert make_config(file=REPO / 'config' / 'train_sim.yaml').agent.actor_interval == 2


def test_cpu_fpmd_m_anneals_to_a_higher_temperature_floor():
    """`cpu` FPMD-M targets the entropy -1.0 d, so `budget` ends at alpha 0.89, not 0.54 (its
    Reacher runs fell late at 0.54); the paper, the other algorithms and config/train_sim.yaml
    (measured with it) keep -1.5 d."""
    def scale(profile, algo):
        return make_config(profile, overrides={'agent.algo': algo}).agent.target_entropy_scale

    for profile in ('cpu', 'cpu_pixels'):
        assert scale(profile, 'fpmd_m') == 1.0
        for algo in ('fpmd_r', 'dpmd'):
            assert scale(profile, algo) == 1.5, algo
    assert scale('paper', 'fpmd_m') == 1.5
    assert make_config(file=REPO / 'config' / 'train_sim.yaml').agent.target_entropy_scale == 1.5
    # The floor's closed form, with the profile's exploration noise 0.1.
    cpu_m = make_config('cpu', overrides={'agent.algo': 'fpmd_m'}).agent
    floor = target_entropy_alpha(cpu_m.target_entropy_scale, cpu_m.explore_noise)
    assert floor == pytest.approx(math.exp(-1.0) / (math.sqrt(2 * math.pi * math.e) * 0.1))
    assert round(floor, 2) == 0.89
    assert round(target_entropy_alpha(1.5, 0.1), 2) == 0.54


def test_the_default_run_updates_on_two_threads_and_the_cpu_profile_on_one():
    """config/train_sim.yaml (./fpmd train: its lockstep sims wait while the trainer updates)
    gives the update both cores of a 2-core machine; the `cpu` profile keeps one thread, for
    benchmark lanes that share the cores; the paper keeps torch's default (0)."""
    assert make_config(file=REPO / 'config' / 'train_sim.yaml').trainer.torch_threads == 2
    assert make_config('cpu').trainer.torch_threads == 1
    assert make_config('paper').trainer.torch_threads == 0


def test_ints_are_accepted_for_floats_and_become_floats():
    cfg = make_config(overrides={'agent.gamma': 1, 'agent.alpha_init': 2})
    assert cfg.agent.gamma == 1.0 and type(cfg.agent.gamma) is float
    assert type(cfg.agent.alpha_init) is float


def test_unknown_profile():
    with pytest.raises(ConfigError, match=r"profile: expected one of \['cpu', 'cpu_pixels', "
                                          r"'paper', 'paper_pixels'\], got 'gpu'"):
        make_config('gpu')


@pytest.mark.parametrize(('key', 'message'), [
    ('agent.particle', r'agent.particle: unknown field \(did you mean agent.particles\?\)'),
    ('trainer.total_step', r'did you mean trainer.total_steps\?'),
    ('agent.zzzz', r'agent.zzzz: unknown field$'),
    ('agnet.particles', r"section in \['agent', 'task', 'trainer'\] \(did you mean 'agent'\?\)"),
    ('particles', r'particles: expected section.field'),
    ('agent.particles.x', r'agent.particles.x: expected section.field'),
])
def test_unknown_fields_are_named_with_a_suggestion(key, message):
    with pytest.raises(ConfigError, match=message):
        make_config(overrides={key: 8})


@pytest.mark.parametrize(('key', 'value', 'message'), [
    ('agent.particles', 8.0, 'agent.particles: expected int, got float 8.0'),
    ('agent.particles', '8', "agent.particles: expected int, got str '8'"),
    ('agent.hidden', True, 'agent.hidden: expected int, got bool True'),
    ('agent.gamma', '0.99', "agent.gamma: expected float, got str '0.99'"),
    ('agent.gamma', False, 'agent.gamma: expected float, got bool False'),
    ('trainer.progress', 1, 'trainer.progress: expected bool, got int 1'),
    ('trainer.progress', 'false', "trainer.progress: expected bool, got str 'false'"),
    ('task.id', 5, 'task.id: expected str, got int 5'),
])
def test_wrong_types_are_refused_not_coerced(key, value, message):
    with pytest.raises(ConfigError, match=message):
        make_config(overrides={key: value})


@pytest.mark.parametrize(('key', 'value', 'message'), [
    ('agent.gamma', 1.5, r'agent.gamma: expected a value in \[0, 1\], got 1.5'),
    ('agent.q_stat_rate', -0.1, r'agent.q_stat_rate: expected a value in \[0, 1\]'),
    ('agent.particles', 0, 'agent.particles: expected an integer >= 1, got 0'),
    ('task.num_envs', 0, 'task.num_envs: expected an integer >= 1'),
    ('trainer.warmup_steps', -1, 'trainer.warmup_steps: expected an integer >= 0'),
    ('agent.alpha_init', 0.0, 'agent.alpha_init: expected a positive number, got 0.0'),
    ('agent.alpha_lr', -1e-3, 'agent.alpha_lr: expected a positive number'),
    ('agent.explore_noise', -0.1, 'agent.explore_noise: expected a number >= 0'),
    ('agent.algo', 'td3', "agent.algo: expected one of .*, got 'td3'"),
    ('agent.weight_form', 'other',
     "agent.weight_form: expected one of normalized, released, advantage, got 'other'"),
    ('agent.actor_samples', 'best',
     "agent.actor_samples: expected one of best_of_n, policy, got 'best'"),
    ('trainer.device', 'tpu', 'trainer.device: expected auto, cpu or cuda'),
    ('agent.batch_size', 2_000_000, r'agent.batch_size: expected <= trainer.replay_size'),
    # the running std of Q needs two samples: batch 1 made every FPMD actor loss NaN
    ('agent.batch_size', 1, 'agent.batch_size: expected an integer >= 2, got 1'),
    ('trainer.progress_interval_s', -1, 'trainer.progress_interval_s: expected a number >= 0'),
    ('agent.alpha_schedule', 'linear',
     "agent.alpha_schedule: expected 'entropy' or 'budget', got 'linear'"),
    ('agent.alpha_anneal_fraction', 0.0,
     r'agent.alpha_anneal_fraction: expected a value in \(0, 1\], got 0.0'),
    ('agent.alpha_anneal_fraction', 1.5, r'agent.alpha_anneal_fraction: expected a value in'),
])
def test_out_of_range_values_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        make_config(overrides={key: value})


@pytest.mark.parametrize('total', [1_000, 2_000])
def test_a_run_that_ends_within_the_warm_up_is_refused(total):
    """It would train nothing and export an untrained policy (the cpu profile warms up 2000)."""
    with pytest.raises(ConfigError, match=(
            rf'^trainer.total_steps: expected more than trainer.warmup_steps \(2000\), got '
            rf'{total}: a run that ends within the warm-up .* trains nothing and exports an '
            'untrained policy$')):
        make_config('cpu', overrides={'trainer.total_steps': total})
    assert make_config('cpu', overrides={'trainer.total_steps': 2_001}).trainer.total_steps == 2_001
    with pytest.raises(ConfigError, match='got 5000'):
        make_config(overrides={'trainer.total_steps': 5_000})  # paper: 30000 warm-up steps


@pytest.mark.parametrize('key', ['agent.gamma', 'agent.alpha_lr', 'agent.alpha_init',
                                 'agent.grad_clip', 'agent.critic_lr', 'agent.weight_clip',
                                 'agent.target_entropy_scale'])
@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        make_config(overrides={key: value})


# --- files ---------------------------------------------------------------------------------

def test_yaml_file_with_profile_and_fields(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('profile: cpu\nagent:\n  algo: fpmd_m\n  particles: 6\n'
                    'trainer:\n  seed: 7\n')
    cfg = make_config(file=path, overrides={'trainer.seed': 8})
    assert (cfg.agent.algo, cfg.agent.particles, cfg.trainer.seed) == ('fpmd_m', 6, 8)
    assert cfg.task.num_envs == 1  # from the file's profile
    assert make_config('paper', file=path).task.num_envs == 5  # the argument wins


def test_json_file(tmp_path):
    path = tmp_path / 'run.json'
    path.write_text(json.dumps({'task': {'id': 'Walker2d-v5'}, 'agent': {'gamma': 0.98}}))
    cfg = make_config(file=path)
    assert cfg.task.id == 'Walker2d-v5' and cfg.agent.gamma == 0.98


@pytest.mark.parametrize(('text', 'message'), [
    ('agnt:\n  particles: 8\n', r"agnt.particles: expected section.field .*did you mean 'agent'"),
    ('agent:\n  particle: 8\n', r'agent.particle: unknown field \(did you mean agent.particles'),
    ('agent:\n  particles: 8.5\n', 'agent.particles: expected int, got float 8.5'),
    ('agent: 5\n', 'agent: expected a mapping of fields, got 5'),
    ('- agent\n- trainer\n', 'expected a mapping of sections'),
    ('agent: [unclosed\n', 'not valid YAML/JSON'),
    ('profile: gpu\n', "profile: expected one of .*got 'gpu'"),
])
def test_bad_config_files_are_named(tmp_path, text, message):
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        make_config(file=path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match='not found'):
        make_config(file=tmp_path / 'none.yaml')


# --- overrides, round trips, hash ----------------------------------------------------------

@pytest.mark.parametrize(('text', 'expected'), [
    ('agent.particles=8', ('agent.particles', 8)),
    ('agent.gamma=0.9', ('agent.gamma', 0.9)),
    ('trainer.progress=false', ('trainer.progress', False)),
    ('task.id=Hopper-v5', ('task.id', 'Hopper-v5')),
    (' agent.algo =sac', ('agent.algo', 'sac')),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_exponent_notation_is_a_number_in_files_and_overrides(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-3 as the string '1e-3'; float fields accept it as a number.
    config = tmp_path / 'c.yaml'
    config.write_text('agent: {critic_lr: 1e-3}\n')
    assert make_config(file=config).agent.critic_lr == 1e-3
    assert make_config(overrides=['agent.actor_lr=2E-4']).agent.actor_lr == 2e-4
    with pytest.raises(ConfigError, match="agent.particles: expected int, got str '1e2'"):
        make_config(overrides=['agent.particles=1e2'])


@pytest.mark.parametrize(('text', 'message'), [
    ('agent.particles', 'expected section.field=value'),
    ('agent.particles=[1, 2]', 'expected a scalar value'),
    ('agent.particles=~', 'expected a scalar value'),
    ('agent.particles={a: 1}', 'expected a scalar value'),
])
def test_bad_override_text(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_override(text)


def test_round_trip_and_hash():
    cfg = make_config('cpu', overrides={'agent.algo': 'dpmd'})
    again = config_from_dict(cfg.to_dict())
    assert again == cfg and again.hash() == cfg.hash()
    assert len(cfg.hash()) == 16
    other = make_config('cpu', overrides={'agent.algo': 'dpmd', 'trainer.seed': 1})
    assert other.hash() != cfg.hash()
    bad = cfg.to_dict()
    bad['agent']['particles'] = 'many'
    with pytest.raises(ConfigError, match='agent.particles: expected int'):
        config_from_dict(bad)


def test_budget_alpha_needs_exploration_noise():
    with pytest.raises(ConfigError, match="agent.explore_noise: expected a positive number with "
                                          "agent.alpha_schedule 'budget', got 0.0"):
        make_config(overrides={'agent.alpha_schedule': 'budget', 'agent.explore_noise': 0.0})


@pytest.mark.parametrize(('envs', 'updates', 'total', 'warmup', 'expected'), [
    (1, 1, 25_000, 2_000, 23_001),  # env steps 2000 .. 25000 each end a learning vector step
    (2, 2, 100, 40, 62),  # the trainer's count in test_core_trainer_outputs
    (3, 1, 100, 10, 31),  # vector steps end at 3, 6, ..., 102: 12 .. 102
    (1, 1, 100, 0, 100),
    (2, 0, 100, 10, 0),
])
def test_gradient_steps_of_run(envs, updates, total, warmup, expected):
    cfg = make_config(overrides={'task.num_envs': envs, 'trainer.updates_per_step': updates,
                                 'trainer.total_steps': total, 'trainer.warmup_steps': warmup})
    assert gradient_steps_of_run(cfg) == expected


def test_training_steps_per_algorithm():
    cfg = make_config(overrides={'agent.flow_steps': 7, 'agent.meanflow_steps': 2,
                                 'agent.diffusion_steps': 9})
    steps = {}
    for algo in config.ALGORITHMS:
        cfg.agent.algo = algo
        steps[algo] = training_steps(cfg.agent)
    assert steps == {'fpmd_r': 7, 'fpmd_m': 2, 'dpmd': 9, 'sac': 1}
    assert Config().agent.algo == 'fpmd_r'


# --- command line --------------------------------------------------------------------------

@pytest.mark.parametrize(('argv', 'message'), [
    (['--set', 'agent.particles=abc'], "agent.particles: expected int, got str 'abc'"),
    (['--set', 'agent.particle=8'], 'did you mean agent.particles?'),
    (['--set', 'agent.gamma=2'], 'agent.gamma: expected a value in [0, 1]'),
    (['--set', 'agent.particles'], 'expected section.field=value'),
    (['--config', '/nonexistent/run.yaml'], 'not found'),
])
def test_cli_returns_2_with_a_message_for_bad_configuration(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('fpmd-train: configuration error: ')
    assert message in err


@pytest.mark.parametrize(('task', 'message'), [
    ('Hoper-v5', "task 'Hoper-v5': unknown Gymnasium id"),
    ('sim/no_such_robot.yaml', "task file 'sim/no_such_robot.yaml': cannot read it"),
])
def test_cli_returns_2_with_one_line_for_a_bad_task(task, message, tmp_path, capsys):
    argv = ['--profile', 'cpu', '--set', f'task.id={task}',
            '--set', f'trainer.output_dir={tmp_path}']
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('fpmd-train: task error: ') and message in err
    assert 'Traceback' not in err


def test_cli_names_the_profile_it_runs_without_a_gpu(tmp_path):
    """Without --profile the paper profile runs; on a CPU that takes days, which is said."""
    def notice(argv, cuda):
        args = cli.parse_args(argv)
        cfg = make_config(args.profile, args.config, args.overrides)
        return cli.profile_notice(args, cfg, cuda_available=cuda)

    text = notice(['--set', 'agent.algo=fpmd_m'], cuda=False)
    assert text == (
        "fpmd-train: no --profile given, so the 'paper' profile runs on the CPU (no GPU found): "
        'fpmd_m, 1000000 env steps, 3x256 networks, 32 particles; on a 2-core CPU paper-size '
        'FPMD-R makes 0.6 updates/s, about 4 days for 1M env steps; --profile cpu is the budget '
        'for a CPU')
    assert notice(['--set', 'trainer.device=cpu'], cuda=True).startswith(
        "fpmd-train: no --profile given, so the 'paper' profile runs on the CPU")
    assert notice([], cuda=True) is None  # the paper's settings on a GPU: what they are for
    assert notice(['--profile', 'paper'], cuda=False) is None  # chosen knowingly
    assert notice(['--profile', 'cpu'], cuda=False) is None
    chosen = tmp_path / 'run.yaml'
    chosen.write_text('profile: cpu\n')
    assert notice(['--config', str(chosen)], cuda=False) is None
    unchosen = tmp_path / 'fields.yaml'
    unchosen.write_text('agent: {hidden: 64}\n')
    assert '3x64 networks' in notice(['--config', str(unchosen)], cuda=False)


def test_cli_rejects_unknown_profile_through_argparse(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(['--profile', 'gpu'])
    assert info.value.code == 2
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


def test_saved_config_reads_back_equal_whatever_the_profile(tmp_path):
    from fpmd_core.config import make_config, save_config

    cfg = make_config("cpu", overrides={"task.id": "Hopper-v5", "agent.algo": "sac",
                                        "agent.critic_lr": 1e-3})
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = make_config(file=path)
    assert again == cfg
    assert again.agent.hidden == 256  # a cpu-profile value, read from the file without a profile
    assert not list(path.parent.glob("*.tmp"))
