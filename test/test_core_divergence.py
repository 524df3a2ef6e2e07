"""A NaN or Inf in a loss stops training with TrainingDiverged, a message that says what and
where, and the last good checkpoint intact."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fpmd_core.agents import NonFiniteLossError
from fpmd_core.agents.critic import check_finite
from fpmd_core.checkpoint import load_checkpoint
from fpmd_core.config import make_config
from fpmd_core.runtime import CheckpointPolicy
from fpmd_core.trainer import Trainer, TrainingDiverged


def tiny_config(out: Path, algo: str = 'fpmd_r', **overrides):
    values = {
        'task.id': 'InvertedPendulum-v5', 'agent.algo': algo, 'agent.hidden': 32,
        'agent.layers': 2, 'agent.batch_size': 32, 'agent.particles': 4, 'agent.flow_steps': 2,
        'trainer.total_steps': 200, 'trainer.warmup_steps': 40,
        'trainer.checkpoint_interval': 80, 'trainer.eval_interval': 0,
        'trainer.eval_episodes': 1, 'trainer.log_interval': 50, 'trainer.replay_size': 1000,
        'trainer.progress': False, 'trainer.torch_threads': 1, 'trainer.output_dir': str(out),
    }
    values.update(overrides)
    return make_config('cpu', overrides=values)


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def poison_rewards(trainer):
    trainer.replay.data['rewards'][: trainer.replay.size] = np.nan


def poison_critic(trainer):
    with torch.no_grad():
        trainer.agent.critic.online.q1[0].weight[0, 0] = float('inf')


def poison_at(step: int, poison):
    def on_progress(trainer):
        if trainer.env_steps == step:
            poison(trainer)
    return on_progress


@pytest.mark.parametrize(('algo', 'poison'), [('fpmd_r', poison_rewards),
                                              ('fpmd_m', poison_critic),
                                              ('sac', poison_rewards)])
def test_nan_loss_stops_with_training_diverged_and_keeps_the_last_checkpoint(tmp_path, algo,
                                                                              poison):
    trainer = Trainer(tiny_config(tmp_path, algo), on_progress=poison_at(100, poison))
    with pytest.raises(TrainingDiverged) as info:
        trainer.run()
    message = str(info.value)
    last_good = tmp_path / 'checkpoints' / 'step_80.pt'
    assert re.search(r'critic_loss is (nan|inf)', message), message
    assert 'at env step 101' in message
    assert f'last good checkpoint: {last_good}' in message
    assert 'a resume from it with the same configuration repeats this divergence' in message
    assert isinstance(info.value.__cause__, NonFiniteLossError)
    # nothing was written after the divergence ...
    assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['step_80.pt']
    assert not (tmp_path / 'policy.onnx').exists()
    # ... and the last good checkpoint loads, is finite, and still acts
    payload = load_checkpoint(last_good)
    assert payload['counters']['env_steps'] == 80
    for name, tensor in payload['agent']['modules'].items():
        assert torch.isfinite(tensor).all(), name
    policy = CheckpointPolicy(last_good)
    action = policy(np.zeros(4, np.float32))
    assert np.isfinite(action).all() and abs(action[0]) <= 3.0


def test_divergence_before_any_checkpoint_says_so(tmp_path):
    cfg = tiny_config(tmp_path, **{'trainer.checkpoint_interval': 0})
    trainer = Trainer(cfg, on_progress=poison_at(50, poison_rewards))
    with pytest.raises(TrainingDiverged, match='last good checkpoint: none written yet'):
        trainer.run()


def test_nan_in_the_actor_loss_is_caught_before_the_step():
    """A weight of NaN reaches the actor loss only; check_finite names it and the policy is
    not updated."""
    from fpmd_core.agents import MirrorDescentAgent

    cfg = make_config('cpu', overrides={'agent.hidden': 16, 'agent.layers': 1}).agent
    agent = MirrorDescentAgent(3, 2, cfg, torch.device('cpu'))
    with torch.no_grad():
        agent.q_std.fill_(float('nan'))  # running std poisoned -> weights NaN
    before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match='actor_loss is nan'):
        obs, actions = torch.randn(8, 3), torch.rand(8, 2)
        agent.update_actor(obs, actions, agent.weights_and_q_statistics(obs, actions))
    after = agent.policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
def test_check_finite_rejects_nan_and_inf(value):
    with pytest.raises(NonFiniteLossError, match='my_loss'):
        check_finite('my_loss', torch.tensor(value))
    check_finite('fine', torch.tensor(1.0))  # and lets a finite value through


def test_fpmd_train_exits_with_the_diverged_code_and_names_the_loss(tmp_path, capsys):
    """The exit code that docs/training.md gives for a diverged run, from fpmd-train as from the
    trainer node; a critic learning rate of 1e30 blows up within the first updates."""
    from fpmd_core.cli import main
    from fpmd_core.trainer import EXIT_DIVERGED

    sets = {'task.id': 'InvertedPendulum-v5', 'agent.algo': 'sac', 'agent.hidden': 16,
            'agent.batch_size': 16, 'agent.critic_lr': 1e30, 'trainer.total_steps': 300,
            'trainer.warmup_steps': 40, 'trainer.eval_interval': 0,
            'trainer.checkpoint_interval': 0, 'trainer.progress': False,
            'trainer.torch_threads': 1, 'trainer.output_dir': str(tmp_path)}
    argv = ['--profile', 'cpu']
    for key, value in sets.items():
        argv += ['--set', f'{key}={value}']
    assert main(argv) == EXIT_DIVERGED == 4
    err = capsys.readouterr().err
    assert re.search(r'fpmd-train: training diverged: \w+_loss is (nan|inf)', err), err
    assert 'last good checkpoint: none written yet' in err
