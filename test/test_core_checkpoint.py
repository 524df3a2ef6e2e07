"""Checkpoints: save -> load gives the same deploy action; a resumed run equals an uninterrupted
one bit for bit; corrupt, truncated, foreign, mismatched and malicious files are refused with an
error that names the problem, and loading never runs pickled code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fpmd_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fpmd_core.config import make_config
from fpmd_core.export import deploy_graph
from fpmd_core.runtime import CheckpointPolicy, ObservationError, PolicyError
from fpmd_core.trainer import Trainer

TASK = 'InvertedPendulum-v5'
TOTAL, HALF = 200, 100


def tiny_config(out: Path, algo: str = 'fpmd_r', **overrides):
    values = {
        'task.id': TASK, 'agent.algo': algo, 'agent.hidden': 32, 'agent.layers': 2,
        'agent.batch_size': 32, 'agent.particles': 4, 'agent.flow_steps': 2,
        'agent.diffusion_steps': 4, 'agent.alpha_interval': 7,
        'trainer.total_steps': TOTAL, 'trainer.warmup_steps': 50,
        'trainer.checkpoint_interval': HALF, 'trainer.eval_interval': HALF,
        'trainer.eval_episodes': 1, 'trainer.log_interval': 30, 'trainer.replay_size': 1000,
        'trainer.deterministic': True, 'trainer.progress': False, 'trainer.torch_threads': 1,
        'trainer.device': 'cpu',  # exact resume and determinism are promised on CPU
        'trainer.output_dir': str(out),
    }
    values.update(overrides)
    return make_config('cpu', overrides=values)


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """One fpmd_r run of TOTAL env steps with a checkpoint at HALF (shared by several tests)."""
    out = tmp_path_factory.mktemp('full')
    trainer = Trainer(tiny_config(out))
    result = trainer.run()
    return trainer, result


def params(agent) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in agent.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f'differ after resume: {different}'


# --- round trip and exact resume -----------------------------------------------------------

def test_checkpoint_files_are_written_atomically(uninterrupted):
    trainer, result = uninterrupted
    folder = result.output_dir / 'checkpoints'
    names = sorted(p.name for p in folder.iterdir())
    assert names == ['final.pt', f'step_{HALF}.pt', f'step_{TOTAL}.pt']  # no *.tmp left over
    payload = load_checkpoint(result.checkpoint)
    assert payload['counters']['env_steps'] == TOTAL
    assert payload['agent']['counters']['gradient_steps'] == trainer.agent.gradient_steps > 0


def test_save_load_gives_the_same_deploy_action(uninterrupted):
    trainer, result = uninterrupted
    obs = np.random.default_rng(0).normal(size=(16, trainer.spec.obs_dim)).astype(np.float32)
    policy = CheckpointPolicy(result.checkpoint)
    with torch.no_grad():
        # CheckpointPolicy runs the general graph (it accepts x0); the export folds constants.
        graph = deploy_graph(trainer.agent, trainer.spec, noise_input=True)
        expected = graph(torch.as_tensor(obs)).numpy()
    np.testing.assert_array_equal(policy(obs), expected)
    # = the agent's own deploy action in [-1, 1], rescaled to the env bounds [-3, 3]
    np.testing.assert_allclose(policy(obs), 3.0 * trainer.agent.act(obs, 'deploy'), atol=1e-6)
    single = policy(obs[0])
    assert single.shape == (trainer.spec.act_dim,)
    assert policy.metadata['obs_dim'] == trainer.spec.obs_dim
    assert policy.metadata['env_steps'] == TOTAL


def test_checkpoint_policy_validates_noise(uninterrupted):
    _, result = uninterrupted
    policy = CheckpointPolicy(result.checkpoint)
    obs = np.zeros((2, 4), np.float32)
    noisy = policy(obs, np.array([[0.8], [-0.8]], np.float32))
    assert noisy.shape == (2, 1) and not np.allclose(noisy, policy(obs))
    with pytest.raises(ObservationError, match='noise: contains NaN or Inf'):
        policy(obs, np.array([[np.nan], [0.0]], np.float32))
    with pytest.raises(ObservationError, match='noise: expected shape'):
        policy(obs, np.zeros((2, 3), np.float32))


@pytest.mark.parametrize('algo', ['fpmd_r', 'sac'])
def test_resumed_run_equals_uninterrupted_run(algo, uninterrupted, tmp_path):
    if algo == 'fpmd_r':
        full, full_result = uninterrupted
    else:
        full = Trainer(tiny_config(tmp_path / 'full', algo))
        full_result = full.run()
    half = full_result.output_dir / 'checkpoints' / f'step_{HALF}.pt'
    resumed = Trainer(tiny_config(tmp_path / 'resumed', algo), resume=half)
    assert resumed.env_steps == HALF
    result = resumed.run()
    assert result.env_steps == full_result.env_steps == TOTAL
    assert resumed.agent.gradient_steps == full.agent.gradient_steps
    assert_same_state(params(resumed.agent), params(full.agent))
    for key, value in full.replay.data.items():
        np.testing.assert_array_equal(resumed.replay.data[key][: full.replay.size],
                                      value[: full.replay.size], err_msg=key)
    for name, optimizer in full.agent.optimizers().items():
        ours = resumed.agent.optimizers()[name].state_dict()['state']
        for index, state in optimizer.state_dict()['state'].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(ours[index][key]), torch.as_tensor(value)), \
                    f'{name} optimizer {index}.{key}'


# --- refused files -------------------------------------------------------------------------

def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match='file not found'):
        load_checkpoint(tmp_path / 'nope.pt')


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / 'random.pt'
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match='cannot be read.*corrupt'):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(uninterrupted, tmp_path):
    _, result = uninterrupted
    data = result.checkpoint.read_bytes()
    path = tmp_path / 'truncated.pt'
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated'):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        CheckpointPolicy(path)


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / 'weights.pt'
    torch.save({'linear.weight': torch.zeros(3, 3)}, path)
    with pytest.raises(CheckpointError, match='not an fpmd_core checkpoint'):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match='not an fpmd_core checkpoint'):
        load_checkpoint(path)


def test_wrong_version_and_missing_entries_are_named(uninterrupted, tmp_path):
    _, result = uninterrupted
    payload = load_checkpoint(result.checkpoint)
    payload['version'] = 99
    path = tmp_path / 'v99.pt'
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match='version 99'):
        load_checkpoint(path)
    payload = load_checkpoint(result.checkpoint)
    del payload['rng']
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"missing entries \['rng'\]"):
        load_checkpoint(path)


@pytest.mark.parametrize(('field', 'value'), [('agent.algo', 'fpmd_m'),
                                              ('task.id', 'InvertedDoublePendulum-v5'),
                                              ('agent.hidden', 64)])
def test_resume_from_a_mismatched_checkpoint_names_the_field(uninterrupted, tmp_path, field,
                                                             value):
    _, result = uninterrupted
    cfg = tiny_config(tmp_path, **{field: value})
    with pytest.raises(CheckpointError, match=rf'{field} is .* configured with {value!r}'):
        Trainer(cfg, resume=result.checkpoint)


def test_resume_with_a_structurally_different_agent_is_a_checkpoint_error(tmp_path):
    """Fields outside the compared list can still change tensor shapes (DPMD's step count is
    the size of its alpha_bar buffer): the error is a CheckpointError naming the tensor."""
    first = Trainer(tiny_config(tmp_path / 'a', 'dpmd', **{'trainer.total_steps': 60}))
    result = first.run()
    cfg = tiny_config(tmp_path / 'b', 'dpmd', **{'agent.diffusion_steps': 6})
    with pytest.raises(CheckpointError, match=r'does not fit the configured agent.*alpha_bars'):
        Trainer(cfg, resume=result.checkpoint)


def test_checkpoint_policy_checks_expected_fields(uninterrupted):
    _, result = uninterrupted
    with pytest.raises(PolicyError, match='obs_dim is 4 in the model, expected 5'):
        CheckpointPolicy(result.checkpoint, expected={'obs_dim': 5})
    with pytest.raises(PolicyError, match='algorithm'):
        CheckpointPolicy(result.checkpoint, expected={'algorithm': 'sac'})
    assert CheckpointPolicy(result.checkpoint, expected={'obs_dim': 4, 'act_dim': 1})


class Evil:
    """Unpickling this would create `marker` (a stand-in for arbitrary code)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.mark.parametrize('writer', ['torch', 'pickle'])
def test_loading_never_unpickles_code(tmp_path, writer):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pt'
    payload = {'format': 'fpmd_core.checkpoint', 'version': 1, 'config': Evil(str(marker))}
    if writer == 'torch':
        torch.save(payload, path)
    else:
        with path.open('wb') as handle:
            pickle.dump(payload, handle)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match='cannot be read'):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        CheckpointPolicy(path)
    assert not marker.exists()


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / 'ckpt.pt'
    save_checkpoint({'counters': {'env_steps': 1}}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for a lambda
        save_checkpoint({'counters': {'env_steps': 2}, 'bad': lambda: None}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ['ckpt.pt']
