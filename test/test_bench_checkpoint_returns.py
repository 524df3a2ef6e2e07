"""bench/bench_checkpoint_returns.py on real trainer checkpoints: the trainer's episodes on
the given seeds, repeatable, with the standard error of their mean."""

import math

import numpy as np
import pytest

from bench.bench_checkpoint_returns import checkpoint_returns
from fpmd_core.config import make_config
from fpmd_core.trainer import Trainer

EPISODES = 4


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """algo -> the final checkpoint of a short Reacher run."""
    paths = {}
    for algo in ('fpmd_m', 'sac'):
        cfg = make_config('cpu', overrides={
            'task.id': 'Reacher-v5', 'agent.algo': algo, 'agent.hidden': 32,
            'agent.batch_size': 32, 'trainer.total_steps': 200, 'trainer.warmup_steps': 100,
            'trainer.eval_interval': 0, 'trainer.checkpoint_interval': 0,
            'trainer.progress': False, 'trainer.torch_threads': 1, 'trainer.device': 'cpu',
            'trainer.output_dir': str(tmp_path_factory.mktemp(algo))})
        paths[algo] = Trainer(cfg).run().checkpoint
    return paths


@pytest.mark.parametrize('algo, mode', [('fpmd_m', 'deploy'), ('fpmd_m', 'best_of_n'),
                                        ('sac', 'deploy')])
def test_returns_of_the_given_seeds_repeatably_with_their_standard_error(checkpoints, algo,
                                                                         mode):
    row = checkpoint_returns(checkpoints[algo], EPISODES, mode, first_seed=7)
    assert (row['algo'], row['task'], row['env_steps'], row['mode']) == (
        algo, 'Reacher-v5', 200, mode)
    returns = np.array(row['returns'])
    assert len(returns) == EPISODES and np.all(returns < 0)  # Reacher's rewards are costs
    assert row['return_mean'] == pytest.approx(returns.mean())
    assert row['return_standard_error'] == pytest.approx(returns.std(ddof=1) / math.sqrt(EPISODES))
    assert row['final_goal_distance_mean'] is None  # Gymnasium's Reacher reports none
    if mode == 'deploy':  # deterministic: episode i is seed first_seed + i's, whatever else
        assert checkpoint_returns(checkpoints[algo], EPISODES, mode, first_seed=7) == row
        shifted = checkpoint_returns(checkpoints[algo], EPISODES, mode, first_seed=8)
        # The same episodes, up to rounding: the episodes' observations go through the network
        # as one batch, and a BLAS may round a row differently at another place in the batch
        # (seen on an Intel Xeon, by 1e-8).
        assert shifted['returns'][:-1] == pytest.approx(row['returns'][1:], rel=1e-6)
        assert shifted['returns'][-1] != pytest.approx(row['returns'][-1], rel=1e-3)


def test_sac_has_no_best_of_n_mode(checkpoints):
    with pytest.raises(ValueError, match='SAC has no best-of-N mode'):
        checkpoint_returns(checkpoints['sac'], EPISODES, 'best_of_n', first_seed=0)


def test_missing_checkpoints_are_named_before_any_work(checkpoints, tmp_path, monkeypatch,
                                                       capsys):
    from bench import bench_checkpoint_returns

    missing = [tmp_path / 'a.pt', tmp_path / 'b.pt']
    monkeypatch.setattr('sys.argv', ['bench_checkpoint_returns', str(checkpoints['sac']),
                                     *map(str, missing)])
    with pytest.raises(SystemExit) as exit_info:
        bench_checkpoint_returns.main()
    assert exit_info.value.code == 2
    assert f'no such checkpoint: {missing[0]}, {missing[1]}' in capsys.readouterr().err
