"""A short training run writes every output with stable names: config.yaml, eval.csv, train.csv,
TensorBoard scalars, learning_curve.png, checkpoints/final.pt and policy.onnx; env steps and
updates are counted as configured (num_envs, updates_per_step, warm-up); progress goes to the log
as lines where no terminal shows a bar; `fpmd-train` runs end to end."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fpmd_core import cli
from fpmd_core.agents import make_agent
from fpmd_core.checkpoint import load_checkpoint
from fpmd_core.config import RESOLVED_CONFIG_NAME, make_config
from fpmd_core.logger import EVAL_FIELDS, TRAIN_FIELDS, ProgressLine, format_duration
from fpmd_core.runtime import OnnxPolicy
from fpmd_core.tasks import make_env, task_spec
from fpmd_core.trainer import Trainer, evaluate_episodes

TINY = {
    'task.id': 'InvertedPendulum-v5', 'agent.hidden': 32, 'agent.layers': 2,
    'agent.batch_size': 32, 'agent.particles': 4, 'agent.flow_steps': 2,
    'agent.alpha_interval': 20, 'trainer.replay_size': 1000, 'trainer.eval_episodes': 2,
    'trainer.progress': False, 'trainer.torch_threads': 1,
}


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run(out: Path, **overrides):
    values = dict(TINY, **{'trainer.output_dir': str(out)})
    values.update(overrides)
    return Trainer(make_config('cpu', overrides=values)).run()


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open() as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


@pytest.fixture(scope='module')
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('run')
    values = dict(TINY, **{'trainer.output_dir': str(out), 'agent.algo': 'fpmd_r',
                           'trainer.total_steps': 300, 'trainer.warmup_steps': 100,
                           'trainer.eval_interval': 150, 'trainer.log_interval': 50,
                           'trainer.checkpoint_interval': 0})
    threads = torch.get_num_threads()
    try:
        return Trainer(make_config('cpu', overrides=values)).run()
    finally:
        torch.set_num_threads(threads)


def test_run_result_and_files(short_run):
    out = short_run.output_dir
    assert short_run.env_steps == 300
    assert short_run.updates == 201  # one gradient step per env step from step 100 on
    assert short_run.checkpoint == out / 'checkpoints' / 'final.pt'
    assert short_run.policy == out / 'policy.onnx'
    assert short_run.curve == out / 'learning_curve.png'
    assert sorted(p.name for p in out.iterdir()) == [
        'checkpoints', 'config.yaml', 'eval.csv', 'learning_curve.png', 'policy.onnx',
        'tensorboard', 'train.csv']
    assert [p.name for p in (out / 'checkpoints').iterdir()] == ['final.pt']
    # The result reports the last evaluation, of both modes.
    last = read_csv(out / 'eval.csv')[1][-1]
    assert short_run.final_return_deploy == float(last['return_deploy'])
    assert short_run.final_return_best_of_n == float(last['return_best_of_n'])


def test_the_resolved_configuration_is_written(short_run):
    path = short_run.output_dir / RESOLVED_CONFIG_NAME
    again = make_config(file=path)
    assert again.trainer.output_dir == str(short_run.output_dir)
    assert (again.trainer.total_steps, again.agent.hidden, again.trainer.eval_episodes) == (
        300, 32, 2)
    assert again.agent.flow_steps == 2 and again.trainer.warmup_steps == 100
    assert path.stat().st_mode & 0o777 == 0o644


def test_eval_csv_has_stable_columns_and_both_modes(short_run):
    fields, rows = read_csv(short_run.output_dir / 'eval.csv')
    assert fields == list(EVAL_FIELDS) == [
        'env_steps', 'updates', 'wall_time_s', 'return_deploy', 'return_best_of_n',
        'length_deploy', 'length_best_of_n', 'return_deploy_std', 'return_deploy_min',
        'return_deploy_max', 'return_best_of_n_std', 'return_best_of_n_min',
        'return_best_of_n_max', 'final_goal_distance_deploy', 'final_goal_distance_deploy_std',
        'final_goal_distance_deploy_median', 'final_goal_distance_deploy_max',
        'final_goal_distance_best_of_n', 'final_goal_distance_best_of_n_std',
        'final_goal_distance_best_of_n_median', 'final_goal_distance_best_of_n_max']
    assert [int(r['env_steps']) for r in rows] == [150, 300]
    assert [int(r['updates']) for r in rows] == [51, 201]
    for row in rows:
        for mode in ('deploy', 'best_of_n'):
            mean, length = float(row[f'return_{mode}']), float(row[f'length_{mode}'])
            low, high = float(row[f'return_{mode}_min']), float(row[f'return_{mode}_max'])
            # InvertedPendulum-v5 pays 1 per step but the terminating one, and every episode
            # here ends by falling (early training, far below the 1000-step limit): the mean
            # return is the mean length minus one.
            assert length < 1000 and mean == pytest.approx(length - 1), (mode, row)
            # Two episodes: the mean lies between them, the std (ddof 0) is half their distance
            assert low <= mean <= high, (mode, row)
            assert mean == pytest.approx((low + high) / 2)
            assert float(row[f'return_{mode}_std']) == pytest.approx((high - low) / 2)


def test_train_csv_has_stable_columns_and_update_metrics(short_run):
    fields, rows = read_csv(short_run.output_dir / 'train.csv')
    assert fields == list(TRAIN_FIELDS) == [
        'env_steps', 'updates', 'loss/critic', 'loss/actor', 'alpha', 'q/mean', 'weights/std',
        'weights/max', 'weights/min', 'grad_norm/actor', 'entropy', 'one_step_error',
        'train/episode_return', 'perf/updates_per_s', 'perf/env_steps_per_s', 'weights/ess']
    assert [int(r['env_steps']) for r in rows] == [50, 100, 150, 200, 250, 300]
    last = rows[-1]
    for key in ('loss/critic', 'loss/actor', 'alpha', 'weights/std', 'weights/max',
                'weights/min', 'one_step_error', 'perf/updates_per_s', 'perf/env_steps_per_s'):
        assert math.isfinite(float(last[key])), key
    alpha = float(last['alpha'])
    assert 0 < alpha < 5.0  # annealed from 5 by now (alpha_interval 20)
    bound = math.exp(3 / alpha) * 1.01  # the alpha of the logged actor update may be older
    assert 1 / bound <= float(last['weights/min']) <= float(last['weights/max']) <= bound
    assert 1 / 32 <= float(last['weights/ess']) <= 1  # between one sample and the whole batch
    assert last['entropy'] == ''  # a SAC-only column stays empty for FPMD
    assert rows[0]['loss/critic'] == ''  # still in warm-up at step 50: no update metrics


def test_tensorboard_scalars(short_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = short_run.output_dir / 'tensorboard'
    assert list(folder.glob('events.out.tfevents.*'))
    events = EventAccumulator(str(folder))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    assert {'loss/critic', 'loss/actor', 'alpha', 'q/mean', 'one_step_error',
            'weights/max', 'weights/min', 'perf/updates_per_s', 'eval/return_deploy',
            'eval/return_best_of_n', 'eval/length_deploy'} <= tags
    assert [e.step for e in events.Scalars('eval/return_deploy')] == [150, 300]


def test_learning_curve_png(short_run):
    data = short_run.curve.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5_000


def test_final_checkpoint_and_policy_agree(short_run):
    payload = load_checkpoint(short_run.checkpoint)
    assert payload['counters']['env_steps'] == 300
    policy = OnnxPolicy(short_run.policy)
    assert policy.metadata['env_steps'] == 300 and policy.metadata['algorithm'] == 'fpmd_r'
    from fpmd_core.runtime import CheckpointPolicy

    obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    np.testing.assert_allclose(policy(obs), CheckpointPolicy(short_run.checkpoint)(obs),
                               rtol=0, atol=1e-5)


def test_num_envs_and_updates_per_step_are_counted_explicitly(tmp_path, capsys):
    """2 envs, 2 updates per vector step, warm-up 40 env steps: vector steps ending at env steps
    40, 42, ..., 100 (31 of them) update twice. The progress bar is asked for, but stderr is
    not a terminal here: progress comes as log lines (every vector step with interval 0)."""
    result = run(tmp_path, **{'task.num_envs': 2, 'trainer.updates_per_step': 2,
                              'trainer.total_steps': 100, 'trainer.warmup_steps': 40,
                              'trainer.eval_interval': 0, 'trainer.log_interval': 1000,
                              'trainer.checkpoint_interval': 0, 'trainer.eval_best_of_n': False,
                              'trainer.progress': True, 'trainer.progress_interval_s': 0})
    assert result.env_steps == 100
    assert result.updates == 62
    assert result.final_return_best_of_n is None  # best-of-N evaluation switched off
    fields, rows = read_csv(tmp_path / 'eval.csv')
    assert len(rows) == 1 and rows[0]['return_best_of_n'] == ''
    for name in ('return_best_of_n_std', 'return_best_of_n_min', 'return_best_of_n_max'):
        assert rows[0][name] == ''
    lines = capsys.readouterr().err.splitlines()
    progress = [line for line in lines if line.startswith('progress: ')]
    assert progress[0].startswith('progress: 2/100 env steps (2.0%), ')
    assert 'no evaluation yet' in progress[0] and ' ETA ' in progress[0]
    assert progress[-2].startswith('progress: 100/100 env steps (100.0%), ')
    assert progress[-1].startswith('progress: done, 100/100 env steps, ')
    assert (f"last eval return {result.final_return_deploy:.1f} (deploy, at 100 env steps)"
            in progress[-1])
    assert len(progress) == 51  # one per vector step, and the final one
    assert not any('\r' in line or 'it/s' in line for line in lines)  # no tqdm bar


def test_progress_line_reports_rate_last_evaluation_and_eta():
    now = [100.0]
    written = []

    class Stream:
        def write(self, text):
            written.append(text)

        def flush(self):
            pass

    line = ProgressLine(10_000, 2_000, 30.0, clock=lambda: now[0], stream=Stream())
    line.update(2_500, {})
    assert written == []  # not before interval_s
    now[0] = 140.0
    line.update(4_000, {'env_steps': 3_000, 'return_deploy': 123.456})
    assert ''.join(written) == (
        'progress: 4000/10000 env steps (40.0%), 50.0 steps/s, last eval return 123.5 (deploy, '
        'at 3000 env steps), ETA 2 min 00 s\n')
    written.clear()
    now[0] = 170.0  # the rate is that since the previous line: 3000 steps in 30 s
    line.update(7_000, {'env_steps': 3_000, 'return_deploy': 123.456})
    text = ''.join(written)
    assert ', 100.0 steps/s, ' in text and text.endswith('ETA 30 s\n')
    written.clear()
    now[0] = 200.0
    line.close(10_000, {'env_steps': 10_000, 'return_deploy': 900.0})
    assert ''.join(written) == ('progress: done, 10000/10000 env steps, 80.0 steps/s, last eval '
                                'return 900.0 (deploy, at 10000 env steps), took 1 min 40 s\n')
    # During the warm-up its rate (no updates) says nothing about the time left.
    warm = ProgressLine(10_000, 0, 30.0, clock=lambda: now[0], stream=Stream(),
                        warmup_steps=5_000)
    written.clear()
    now[0] = 230.0
    warm.update(4_000, {})
    assert ''.join(written).endswith('ETA known once the warm-up ends at 5000 env steps\n')
    assert [format_duration(s) for s in (42, 315, 3 * 3600 + 420, 52 * 3600)] == [
        '42 s', '5 min 15 s', '3 h 07 min', '2 d 04 h']


def test_fpmd_train_command_line_end_to_end(tmp_path, capsys):
    argv = ['--profile', 'cpu']
    for key, value in dict(TINY, **{
            'agent.algo': 'sac', 'trainer.total_steps': 80, 'trainer.warmup_steps': 40,
            'trainer.eval_interval': 0, 'trainer.checkpoint_interval': 0,
            'trainer.log_interval': 40, 'trainer.output_dir': str(tmp_path)}).items():
        argv += ['--set', f'{key}={str(value).lower() if isinstance(value, bool) else value}']
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f'policy: {tmp_path / "policy.onnx"}' in out
    assert f'checkpoint: {tmp_path / "checkpoints" / "final.pt"}' in out
    assert 'deploy-mode return (NFE = 1):' in out
    assert OnnxPolicy(tmp_path / 'policy.onnx').metadata['algorithm'] == 'sac'
    fields, rows = read_csv(tmp_path / 'train.csv')
    assert rows[-1]['entropy'] != '' and rows[-1]['one_step_error'] == ''  # SAC's columns
    # and --resume continues that run from its final checkpoint to a larger total
    argv2 = argv + ['--set', 'trainer.total_steps=100', '--resume',
                    str(tmp_path / 'checkpoints' / 'final.pt')]
    assert cli.main(argv2) == 0
    assert load_checkpoint(tmp_path / 'checkpoints' / 'final.pt')['counters']['env_steps'] == 100
    assert 'no --profile given' not in capsys.readouterr().err
    # A checkpoint that does not fit is one line naming the file and the mismatch, no traceback.
    assert cli.main(argv2 + ['--set', 'agent.algo=fpmd_m']) == 2
    err = capsys.readouterr().err
    assert err == (f"fpmd-train: cannot resume: checkpoint {tmp_path / 'checkpoints' / 'final.pt'}"
                   ": agent.algo is 'sac', the run is configured with 'fpmd_m'\n")
    corrupt = tmp_path / 'corrupt.pt'
    data = bytearray((tmp_path / 'checkpoints' / 'final.pt').read_bytes())
    data[len(data) // 2] ^= 0x01
    corrupt.write_bytes(data)
    assert cli.main(argv + ['--resume', str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'fpmd-train: cannot resume: checkpoint {corrupt}: ')
    assert err.count('\n') == 1 and 'corrupt' in err


def test_a_run_into_an_existing_output_dir_rewrites_its_logs_from_its_start(tmp_path):
    """A fresh run starts new CSVs and TensorBoard curves; a resumed one keeps the rows up to
    its checkpoint and writes the later ones once (they used to be appended after the earlier
    run's)."""
    short = {'agent.algo': 'sac', 'trainer.total_steps': 120, 'trainer.warmup_steps': 40,
             'trainer.eval_interval': 40, 'trainer.log_interval': 20,
             'trainer.checkpoint_interval': 80}
    run(tmp_path, **short)
    run(tmp_path, **short)  # again, from scratch, into the same directory
    for name in ('eval.csv', 'train.csv'):
        steps = [int(r['env_steps']) for r in read_csv(tmp_path / name)[1]]
        assert steps == sorted(set(steps)) and steps[-1] == 120, (name, steps)
    values = dict(TINY, **short, **{'trainer.output_dir': str(tmp_path)})
    Trainer(make_config('cpu', overrides=values),
            resume=tmp_path / 'checkpoints' / 'step_80.pt').run()
    steps = [int(r['env_steps']) for r in read_csv(tmp_path / 'eval.csv')[1]]
    assert steps == [40, 80, 120]
    # TensorBoard reads all three runs' event files and shows each step once.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / 'tensorboard'))
    events.Reload()
    assert [e.step for e in events.Scalars('eval/return_deploy')] == [40, 80, 120]


def test_side_by_side_evaluation_scores_each_episode_as_if_run_alone():
    # Episodes cut at different lengths: one that has ended must stop stepping and stop
    # counting while the others go on.
    torch.manual_seed(0)
    cfg = make_config('cpu', overrides=dict(TINY, **{'agent.algo': 'sac'}))
    envs = [make_env(cfg.task.id, steps) for steps in (2, 4, 7)]
    spec = task_spec(envs[0], cfg.task.id)
    agent = make_agent(spec.obs_shape, spec.act_dim, cfg.agent, torch.device('cpu'))
    seeds = [3, 4, 5]
    alone = [evaluate_episodes(agent, [env], 'deploy', [seed])
             for env, seed in zip(envs, seeds, strict=True)]
    assert [length for _, length in alone] == [2, 4, 7]
    mean_return, mean_length = evaluate_episodes(agent, envs, 'deploy', seeds)
    assert mean_length == pytest.approx(13 / 3)
    assert mean_return == pytest.approx(np.mean([ret for ret, _ in alone]), rel=1e-5)
