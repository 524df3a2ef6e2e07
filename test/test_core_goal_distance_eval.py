"""Evaluation of a goal task records the final goal distance of its episodes (mean, std, median,
worst) in eval.csv, TensorBoard, the progress line and the run's result; tasks without a goal
leave those columns empty."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fpmd_core.config import make_config
from fpmd_core.logger import EVAL_FIELDS, ProgressLine, goal_distance_columns
from fpmd_core.tasks import make_env
from fpmd_core.trainer import Trainer, run_episodes

ARM = 'sim/arm_reach.yaml'
TINY = {
    'agent.hidden': 32, 'agent.layers': 2, 'agent.batch_size': 32, 'agent.particles': 4,
    'agent.flow_steps': 2, 'trainer.replay_size': 1000, 'trainer.eval_episodes': 3,
    'trainer.progress': False, 'trainer.torch_threads': 1, 'trainer.checkpoint_interval': 0,
    'trainer.log_interval': 1000,
}


class ScriptedAgent:
    """Acts from a fixed sequence of actions (the same for every episode), one per step."""

    def __init__(self, actions: np.ndarray):
        self.actions, self.step = actions, 0

    def act(self, obs, mode):
        action = self.actions[self.step % len(self.actions)]
        self.step += 1
        return np.repeat(action[None], len(obs), axis=0)


def read_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def train(out: Path, task_id: str, **overrides):
    values = dict(TINY, **{'task.id': task_id, 'trainer.output_dir': str(out),
                           'trainer.total_steps': 150, 'trainer.warmup_steps': 100,
                           'trainer.eval_interval': 0})
    values.update(overrides)
    return Trainer(make_config('cpu', overrides=values)).run()


def test_the_final_goal_distance_is_that_of_each_episodes_last_step():
    rng = np.random.default_rng(3)
    actions = rng.uniform(-1, 1, (125, 3)).astype(np.float32)
    seeds = [11, 12]
    episodes = run_episodes(ScriptedAgent(actions), [make_env(ARM), make_env(ARM)], 'deploy',
                            seeds)
    # The same episodes one by one, reading the distance of the last step from the env itself.
    expected = []
    for seed in seeds:
        env = make_env(ARM)
        env.reset(seed=seed)
        done, step = False, 0
        while not done:
            _, _, terminated, truncated, _ = env.step(actions[step])
            done, step = terminated or truncated, step + 1
        expected.append(env.unwrapped.goal_distance())
    assert list(episodes.lengths) == [125, 125]
    np.testing.assert_allclose(episodes.final_goal_distances, expected)
    # Random actions leave the fingertip away from the goal (the box is 20 x 40 x 30 cm).
    assert all(0.0 < d < 1.0 for d in expected) and expected[0] != expected[1]
    stats = episodes.goal_distance_stats('deploy')
    assert list(stats) == list(goal_distance_columns('deploy'))
    assert stats['final_goal_distance_deploy'] == pytest.approx(np.mean(expected))
    assert stats['final_goal_distance_deploy_std'] == pytest.approx(np.std(expected))
    assert stats['final_goal_distance_deploy_median'] == pytest.approx(np.median(expected))
    assert stats['final_goal_distance_deploy_max'] == pytest.approx(max(expected))


def test_a_task_without_a_goal_reports_no_goal_distance():
    agent = ScriptedAgent(np.zeros((1, 1), dtype=np.float32))
    episodes = run_episodes(agent, [make_env('InvertedPendulum-v5')], 'deploy', [0])
    assert episodes.final_goal_distances is None
    assert episodes.goal_distance_stats('deploy') == {}


def test_a_goal_task_run_records_the_final_goal_distance(tmp_path, capsys, one_thread_torch):
    result = train(tmp_path, ARM, **{'agent.algo': 'fpmd_r'})
    rows = read_rows(tmp_path / 'eval.csv')
    assert len(rows) == 1
    row = rows[0]
    for mode in ('deploy', 'best_of_n'):
        mean, std, median, worst = (float(row[name]) for name in goal_distance_columns(mode))
        assert 0.0 < mean <= worst < 1.0 and std >= 0.0 and median <= worst
    assert result.final_goal_distance_deploy == float(row['final_goal_distance_deploy'])
    # The same scalars in TensorBoard, at the evaluation's env step.
    events = EventAccumulator(str(tmp_path / 'tensorboard'))
    events.Reload()
    for name in (*goal_distance_columns('deploy'), *goal_distance_columns('best_of_n')):
        [scalar] = events.Scalars(f'eval/{name}')
        assert scalar.step == 150 and scalar.value == pytest.approx(float(row[name]))
    done = [line for line in capsys.readouterr().err.splitlines()
            if line.startswith('progress: done')]
    assert (f'final goal distance {100 * result.final_goal_distance_deploy:.2f} cm '
            '(deploy, mean)') in done[0]


def test_a_task_without_a_goal_leaves_the_columns_empty(tmp_path, capsys, one_thread_torch):
    result = train(tmp_path, 'InvertedPendulum-v5',
                   **{'agent.algo': 'sac', 'trainer.total_steps': 110})
    [row] = read_rows(tmp_path / 'eval.csv')
    goal_columns = [name for name in EVAL_FIELDS if 'goal_distance' in name]
    assert goal_columns == [*goal_distance_columns('deploy'), *goal_distance_columns('best_of_n')]
    assert all(row[name] == '' for name in goal_columns)
    assert row['return_deploy'] != ''
    assert result.final_goal_distance_deploy is None
    assert 'goal distance' not in capsys.readouterr().err


def test_the_progress_line_shows_the_goal_distance_in_centimetres():
    written = []

    class Stream:
        def write(self, text):
            written.append(text)

        def flush(self):
            pass

    line = ProgressLine(1000, 0, 30.0, clock=lambda: 0.0, stream=Stream())
    line.close(1000, {'env_steps': 1000, 'return_deploy': -2.5,
                      'final_goal_distance_deploy': 0.01834})
    assert 'last eval return -2.5 (deploy, at 1000 env steps), final goal distance 1.83 cm ' \
           '(deploy, mean), took' in ''.join(written)
