"""Checkpoints: save -> load gives the same deploy action; a resumed run equals an uninterrupted
one bit for bit; corrupt (down to one changed bit), truncated, foreign, mismatched and malicious
files are refused with an error that names the problem, and loading never runs pickled code;
temporary files of a killed writer are removed by the next write."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fpmd_core.agents.fpmd import actor_learning_rate, budget_alpha, target_entropy_alpha
from fpmd_core.checkpoint import DIGEST_KEY, CheckpointError, load_checkpoint, save_checkpoint
from fpmd_core.config import gradient_steps_of_run, make_config
from fpmd_core.export import deploy_graph
from fpmd_core.runtime import CheckpointPolicy, ObservationError, PolicyError, load_policy
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


def test_budget_temperature_spans_the_run_and_resumes_on_its_schedule(tmp_path):
    """`alpha_schedule` budget: the trainer gives the agent the run's gradient steps, alpha
    reaches the target-entropy temperature at the run's last step, and a resumed run follows the
    same schedule exactly."""
    budget = {'agent.alpha_schedule': 'budget', 'agent.alpha_init': 3.0}
    full = Trainer(tiny_config(tmp_path / 'full', 'fpmd_m', **budget))
    full_result = full.run()
    assert full.agent.gradient_steps == gradient_steps_of_run(full.cfg)
    floor = target_entropy_alpha(full.cfg.agent.target_entropy_scale, full.cfg.agent.explore_noise)
    assert full.agent.alpha.item() == pytest.approx(floor, rel=1e-6)
    half = load_checkpoint(full_result.output_dir / 'checkpoints' / f'step_{HALF}.pt')
    half_steps = half['agent']['counters']['gradient_steps']
    half_alpha = math.exp(half['agent']['modules']['log_alpha'].item())
    assert 0 < half_steps < full.agent.gradient_steps
    assert half_alpha == pytest.approx(budget_alpha(half_steps, full.agent.gradient_steps, 3.0,
                                                    floor), rel=1e-6)
    resumed = Trainer(tiny_config(tmp_path / 'resumed', 'fpmd_m', **budget),
                      resume=full_result.output_dir / 'checkpoints' / f'step_{HALF}.pt')
    resumed.run()
    assert_same_state(params(resumed.agent), params(full.agent))


DECAYING_ACTOR_LR = {'agent.lr_decay_start': 10, 'agent.lr_decay_length': 100}


@pytest.mark.parametrize('algo, overrides', [
    ('fpmd_r', {}), ('sac', {}),
    # its running advantage std is state the checkpoint must carry
    ('fpmd_m', {'agent.weight_form': 'advantage'}),
    # a second sampling call per update moves the random stream a resume must restore
    ('fpmd_m', {'agent.actor_samples': 'policy'}),
    # the actor's learning rate mid-decay at the checkpoint, as the paper profile has it
    ('fpmd_r', DECAYING_ACTOR_LR)])
def test_resumed_run_equals_uninterrupted_run(algo, overrides, uninterrupted, tmp_path):
    if algo == 'fpmd_r' and not overrides:
        full, full_result = uninterrupted
    else:
        full = Trainer(tiny_config(tmp_path / 'full', algo, **overrides))
        full_result = full.run()
    half = full_result.output_dir / 'checkpoints' / f'step_{HALF}.pt'
    resumed = Trainer(tiny_config(tmp_path / 'resumed', algo, **overrides), resume=half)
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


@pytest.mark.parametrize('algo', ['fpmd_r', 'sac'])
def test_a_resumed_run_follows_its_configured_learning_rates(algo, tmp_path):
    """A checkpoint's optimiser state carries the learning rates it was written with; a run
    resumed with other ones uses its own from the first update (the actor's on its schedule)."""
    first = Trainer(tiny_config(tmp_path / 'first', algo, **DECAYING_ACTOR_LR)).run()
    changed = {'agent.critic_lr': 1e-5, 'agent.actor_lr': 2e-5, 'agent.actor_lr_final': 1e-6,
               'agent.alpha_lr': 3e-5}
    agent = Trainer(tiny_config(tmp_path / 'resumed', algo, **DECAYING_ACTOR_LR, **changed),
                    resume=first.output_dir / 'checkpoints' / f'step_{HALF}.pt').agent
    rates = {name: [group['lr'] for group in optimizer.param_groups]
             for name, optimizer in agent.optimizers().items()}
    assert rates['critic'] == [1e-5]
    if algo == 'sac':  # SAC's temperature steps at the actor's rate
        assert rates['policy'] == rates['alpha'] == [2e-5]
    else:
        assert rates['alpha'] == [3e-5]
        [actor] = rates['policy']
        assert actor == actor_learning_rate(agent.actor_updates, agent.cfg)
        assert 1e-6 < actor < 2e-5  # mid-decay at the checkpoint


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


# --- one changed bit -------------------------------------------------------------------------

def flip_bit_inside(path: Path, tensor: torch.Tensor, out: Path) -> Path:
    """A copy of `path` with one bit changed in the middle of `tensor`'s stored bytes."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().contiguous().numpy().tobytes()
    start = data.find(raw)
    assert start >= 0 and data.find(raw, start + 1) < 0, 'tensor bytes not found once'
    data[start + len(raw) // 2] ^= 0x08
    out.write_bytes(data)
    return out


@pytest.mark.parametrize('tensor', ['policy weight', 'replay observations'])
def test_one_flipped_bit_inside_a_tensor_is_refused_by_every_loader(uninterrupted, tmp_path,
                                                                    tensor):
    _, result = uninterrupted
    payload = load_checkpoint(result.checkpoint)
    value = (payload['agent']['modules']['ema_policy.net.0.weight'] if tensor == 'policy weight'
             else payload['replay']['data']['obs'])
    bad = flip_bit_inside(result.checkpoint, value, tmp_path / 'flipped.pt')
    # torch alone reads it without complaint, with one value changed:
    changed = torch.load(bad, weights_only=True)
    differs = (changed['agent']['modules']['ema_policy.net.0.weight'] if tensor == 'policy weight'
               else changed['replay']['data']['obs']) != value
    assert int(differs.sum()) == 1
    corrupt = rf'checkpoint {bad}: corrupt: its content does not match the sha256 digest'
    with pytest.raises(CheckpointError, match=corrupt):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match=corrupt):
        Trainer(tiny_config(tmp_path / 'resumed'), resume=bad)
    with pytest.raises(CheckpointError, match=corrupt):
        load_policy(bad)  # -> CheckpointPolicy, as the policy_controller loads a .pt


def test_checkpoints_carry_a_digest_and_earlier_versions_are_refused(uninterrupted, tmp_path):
    _, result = uninterrupted
    payload = load_checkpoint(result.checkpoint)
    assert payload['version'] == 3 and len(payload[DIGEST_KEY]) == 64
    path = tmp_path / 'old.pt'
    # Same tensor names, other networks (SAC's activation, the time embedding): resuming such a
    # file would silently train something else.
    for version in (1, 2):
        torch.save(payload | {'version': version}, path)
        with pytest.raises(CheckpointError, match=f'version {version}, written by an earlier'):
            load_checkpoint(path)
        with pytest.raises(CheckpointError, match='train again'):
            CheckpointPolicy(path)
    del payload[DIGEST_KEY]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"missing entries \['sha256'\]"):
        load_checkpoint(path)


def test_checkpoints_are_readable_by_others(uninterrupted, tmp_path):
    _, result = uninterrupted
    assert result.checkpoint.stat().st_mode & 0o777 == 0o644
    assert save_checkpoint({'counters': {}}, tmp_path / 'c.pt').stat().st_mode & 0o777 == 0o644


# --- mismatches named by the loader ------------------------------------------------------------

def resave(source: Path, out: Path, change) -> Path:
    """`source` with `change(payload)` applied, saved as a valid checkpoint (a new digest)."""
    payload = load_checkpoint(source)
    del payload[DIGEST_KEY], payload['format'], payload['version']
    change(payload)
    return save_checkpoint(payload, out)


def test_agent_state_of_another_algorithm_is_named(uninterrupted, tmp_path):
    """An fpmd_r agent's tensors under a configuration that says sac: the error names both
    algorithms on one line, for the policy loader (the controller's) and for resume."""
    _, result = uninterrupted

    def say_sac(payload):
        payload['config']['agent']['algo'] = 'sac'
    path = resave(result.checkpoint, tmp_path / 'sac.pt', say_sac)
    message = (rf"checkpoint {path}: its agent state does not fit the configured agent \(a sac "
               r"agent for observations of shape \[4\] and 1 actions\): the tensors are those "
               r"of a fpmd_r agent; \d+ unexpected \(first ema_policy\.")
    with pytest.raises(CheckpointError, match=message) as info:
        load_policy(path)
    assert '\n' not in str(info.value)
    with pytest.raises(CheckpointError, match=message):
        Trainer(tiny_config(tmp_path / 'resumed', 'sac'), resume=path)


def test_agent_state_of_another_observation_size_is_named(uninterrupted, tmp_path):
    _, result = uninterrupted

    def say_five(payload):
        payload['task_spec'].update(obs_dim=5, obs_shape=(5,), obs_terms=(('observation', 5),))
    path = resave(result.checkpoint, tmp_path / 'obs5.pt', say_five)
    with pytest.raises(CheckpointError, match=(
            r'a fpmd_r agent for observations of shape \[5\] and 1 actions\): '
            r'critic\.online\.q1\.0\.weight has shape \[32, 5\] in the checkpoint, \[32, 6\] in '
            r'the agent')):
        load_policy(path)
    # what a caller expects is compared before any tensor is loaded
    with pytest.raises(PolicyError, match='obs_dim is 5 in the model, expected 4'):
        load_policy(path, expected={'obs_dim': 4})
    # resume compares with the run's own environment (4 observations)
    with pytest.raises(CheckpointError, match=r'observation shape is \[5\], expected \[4\]'):
        Trainer(tiny_config(tmp_path / 'resumed'), resume=path)


# --- temporary files of a killed writer ---------------------------------------------------------

def dead_pid() -> int:
    """The id of a process that has exited (not reused within the test: ids grow)."""
    child = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def test_the_next_save_removes_temp_files_of_a_killed_writer(tmp_path):
    folder = tmp_path / 'checkpoints'
    folder.mkdir()
    stale = [folder / f'.step_100.pt.{dead_pid()}.k3x9_a2b.tmp',
             folder / 'step_50.pt.a1b2c3d4.tmp',  # the name earlier versions used
             ]
    in_progress = folder / f'.step_100.pt.{os.getpid()}.zz9y8x7w.tmp'  # a live writer's
    for path in [*stale, in_progress]:
        path.write_bytes(b'\0' * 4096)
    unrelated = folder / 'notes.tmp'
    unrelated.write_text('not ours')
    save_checkpoint({'counters': {'env_steps': 1}}, folder / 'step_200.pt')
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ['step_200.pt', in_progress.name, unrelated.name])


def test_a_run_removes_temp_files_left_in_its_output_dir(tmp_path):
    out = tmp_path / 'out'
    (out / 'checkpoints').mkdir(parents=True)
    pid = dead_pid()
    left = [out / f'.policy.onnx.{pid}.abcd1234.tmp',
            out / 'checkpoints' / f'.final.pt.{pid}.abcd1234.tmp']
    for path in left:
        path.write_bytes(b'\0' * 4096)
    Trainer(tiny_config(out, 'sac', **{'trainer.total_steps': 60})).run()
    assert not list(out.rglob('*.tmp'))
    assert (out / 'policy.onnx').stat().st_mode & 0o777 == 0o644
