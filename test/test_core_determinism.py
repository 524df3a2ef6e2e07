"""Same seed, same first updates (agents and whole trainer runs); a different seed differs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from fpmd_core.agents import make_agent
from fpmd_core.config import make_config
from fpmd_core.trainer import Trainer

OBS_DIM, ACT_DIM = 5, 2


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def agent_after_updates(algo: str, seed: int, updates: int = 4, hidden: int = 32,
                        batch_size: int = 16, particles: int = 3):
    cfg = make_config('cpu', overrides={
        'agent.algo': algo, 'agent.hidden': hidden, 'agent.layers': 2,
        'agent.particles': particles, 'agent.flow_steps': 2, 'agent.diffusion_steps': 3,
        'agent.alpha_interval': 2, 'agent.batch_size': batch_size})
    torch.manual_seed(seed)
    agent = make_agent(OBS_DIM, ACT_DIM, cfg.agent, torch.device('cpu'), gradient_budget=updates)
    initial = {k: v.clone() for k, v in agent.state_dict().items()}
    data = np.random.default_rng(seed)
    for _ in range(updates):
        batch = {
            'obs': torch.as_tensor(data.normal(size=(batch_size, OBS_DIM)),
                                   dtype=torch.float32),
            'actions': torch.as_tensor(data.uniform(-1, 1, (batch_size, ACT_DIM)),
                                       dtype=torch.float32),
            'rewards': torch.as_tensor(data.normal(size=batch_size), dtype=torch.float32),
            'next_obs': torch.as_tensor(data.normal(size=(batch_size, OBS_DIM)),
                                        dtype=torch.float32),
            'terminated': torch.zeros(batch_size),
        }
        agent.update(batch)
    return initial, agent


def differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize('algo', ['fpmd_r', 'fpmd_m', 'dpmd', 'sac'])
def test_same_seed_same_first_updates(algo):
    init_a, a = agent_after_updates(algo, seed=11)
    init_b, b = agent_after_updates(algo, seed=11)
    assert differing(init_a, init_b) == []
    assert differing(a.state_dict(), b.state_dict()) == []
    # SAC and `cpu` FPMD-M update their actor every gradient step, the other mirror-descent
    # agents every second
    assert a.gradient_steps == b.gradient_steps == 4
    assert a.actor_updates == b.actor_updates == (4 if algo in ('sac', 'fpmd_m') else 2)
    # the updates did change the networks (the comparison above is not between two inits)
    moved = differing(init_a, a.state_dict())
    assert any(k.startswith('critic.online') for k in moved)
    assert any(k.startswith('policy') for k in moved)
    for name in a.optimizers():
        sa, sb = a.optimizers()[name].state_dict(), b.optimizers()[name].state_dict()
        for index, state in sa['state'].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb['state'][index][key]))


def test_two_threads_same_seed_identical_and_one_thread_equal_to_float_rounding():
    """config/train_sim.yaml (./fpmd train) updates on 2 threads. At its sizes (2x256, batch
    256, 4 particles: 262k-element tensors, which torch splits over its threads) the same seed
    still gives the same updates, and 1 thread the same ones up to float rounding."""
    sizes = {'hidden': 256, 'batch_size': 256, 'particles': 4}
    torch.set_num_threads(2)
    assert torch.get_num_threads() == 2
    _, a = agent_after_updates('fpmd_m', seed=11, **sizes)
    _, b = agent_after_updates('fpmd_m', seed=11, **sizes)
    torch.set_num_threads(1)
    _, one = agent_after_updates('fpmd_m', seed=11, **sizes)
    assert differing(a.state_dict(), b.state_dict()) == []
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, one.state_dict()[key], rtol=1e-4, atol=1e-5,
                                   msg=key)


@pytest.mark.parametrize('algo', ['fpmd_r', 'sac'])
def test_different_seed_differs(algo):
    init_a, a = agent_after_updates(algo, seed=11)
    init_b, b = agent_after_updates(algo, seed=12)
    assert len(differing(init_a, init_b)) > len(init_a) // 2
    assert differing(a.state_dict(), b.state_dict())


def trainer_run(out: Path, seed: int) -> Trainer:
    cfg = make_config('cpu', overrides={
        'task.id': 'InvertedPendulum-v5', 'agent.algo': 'fpmd_m', 'agent.hidden': 32,
        'agent.layers': 2, 'agent.batch_size': 32, 'agent.particles': 4,
        'agent.alpha_interval': 10, 'trainer.total_steps': 120, 'trainer.warmup_steps': 60,
        'trainer.eval_interval': 0, 'trainer.eval_episodes': 1, 'trainer.log_interval': 50,
        'trainer.checkpoint_interval': 0, 'trainer.replay_size': 500, 'trainer.seed': seed,
        'trainer.deterministic': True, 'trainer.progress': False, 'trainer.torch_threads': 1,
        'trainer.device': 'cpu',  # exact resume and determinism are promised on CPU
        'trainer.output_dir': str(out)})
    trainer = Trainer(cfg)
    trainer.run()
    return trainer


def test_trainer_same_seed_identical_runs_different_seed_differs(tmp_path):
    a = trainer_run(tmp_path / 'a', seed=3)
    b = trainer_run(tmp_path / 'b', seed=3)
    c = trainer_run(tmp_path / 'c', seed=4)
    assert a.agent.gradient_steps == b.agent.gradient_steps == 61
    assert differing(a.agent.state_dict(), b.agent.state_dict()) == []
    for key in a.replay.data:
        np.testing.assert_array_equal(a.replay.data[key], b.replay.data[key], err_msg=key)
    rows_a = list(csv.DictReader((tmp_path / 'a' / 'eval.csv').open()))
    rows_b = list(csv.DictReader((tmp_path / 'b' / 'eval.csv').open()))
    assert [r['return_best_of_n'] for r in rows_a] == [r['return_best_of_n'] for r in rows_b]
    assert differing(a.agent.state_dict(), c.agent.state_dict())
    assert not np.array_equal(a.replay.data['obs'], c.replay.data['obs'])
    assert not np.array_equal(a.replay.data['actions'], c.replay.data['actions'])
