"""bench/bench_self_training.py on a real FPMD-M checkpoint: the refit reports at its intervals,
starts from the checkpoint's own policy whatever the noise scale, spreads samples with the noise
scale, and repeats for a seed."""

import math

import pytest

from bench.bench_self_training import refit_on_own_samples
from fpmd_core.config import make_config
from fpmd_core.trainer import Trainer

UPDATES = 10


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    cfg = make_config('cpu', overrides={
        'task.id': 'InvertedPendulum-v5', 'agent.algo': 'fpmd_m', 'agent.hidden': 32,
        'agent.batch_size': 32, 'trainer.total_steps': 300, 'trainer.warmup_steps': 100,
        'trainer.eval_interval': 0, 'trainer.checkpoint_interval': 0, 'trainer.progress': False,
        'trainer.torch_threads': 1, 'trainer.device': 'cpu',
        'trainer.output_dir': str(tmp_path_factory.mktemp('fpmd_m'))})
    return Trainer(cfg).run().checkpoint


def test_refit_reports_from_the_checkpoints_policy_and_spreads_with_the_noise(checkpoint):
    half = refit_on_own_samples(checkpoint, 0.5, UPDATES, seed=0)
    full = refit_on_own_samples(checkpoint, 1.0, UPDATES, seed=0)
    assert [r['updates'] for r in half] == [0, 2, 4, 6, 8, 10]
    assert all(math.isfinite(v) for r in half + full for v in r.values())
    # Before any refit both measure the checkpoint's deploy action (x0 = 0) ...
    assert half[0]['deploy_abs_action'] == full[0]['deploy_abs_action']
    # ... but samples from the wider prior spread more.
    assert full[0]['sample_spread'] > half[0]['sample_spread'] > 0
    # The refit moves the policy.
    assert half[-1]['deploy_abs_action'] != half[0]['deploy_abs_action']
    assert refit_on_own_samples(checkpoint, 0.5, UPDATES, seed=0) == half
    assert refit_on_own_samples(checkpoint, 0.5, UPDATES, seed=1) != half
