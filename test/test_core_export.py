"""ONNX export of the deploy-mode sampler: parity with torch for all four algorithms, metadata
stored in the model, and an OnnxPolicy that refuses bad observations and bad files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from fpmd_core.agents import make_agent
from fpmd_core.checkpoint import CheckpointError
from fpmd_core.config import make_config
from fpmd_core.export import METADATA_KEY, deploy_graph, export_onnx, graph_digest
from fpmd_core.runtime import (
    ObservationError,
    OnnxPolicy,
    PolicyError,
    load_policy,
)
from fpmd_core.tasks import make_env, task_spec

TASK = 'InvertedPendulum-v5'
ALGOS = ['fpmd_r', 'fpmd_m', 'dpmd', 'sac']


@pytest.fixture(scope='module')
def spec():
    env = make_env(TASK)
    try:
        return task_spec(env, TASK)
    finally:
        env.close()


def build(algo: str, spec):
    cfg = make_config('cpu', overrides={'task.id': TASK, 'agent.algo': algo, 'agent.hidden': 32,
                                        'agent.layers': 2})
    torch.manual_seed(0)
    agent = make_agent(spec.obs_dim, spec.act_dim, cfg.agent, torch.device('cpu'))
    with torch.no_grad():  # larger outputs than a fresh init, so parity is not checked at ~0
        for p in agent.parameters():
            p.mul_(1.5)
    return cfg, agent


@pytest.fixture(scope='module')
def exported(spec, tmp_path_factory):
    """algo -> (cfg, agent, path of its exported policy)."""
    out = tmp_path_factory.mktemp('export')
    models = {}
    for algo in ALGOS:
        cfg, agent = build(algo, spec)
        path = export_onnx(agent, spec, cfg, out / f'{algo}.onnx', env_steps=123)
        models[algo] = (cfg, agent, path)
    return models


def observations(spec, n: int = 64, scale: float = 2.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, spec.obs_dim)) * scale).astype(np.float32)


@pytest.mark.parametrize('algo', ALGOS)
def test_onnx_matches_torch(algo, spec, exported):
    _, agent, path = exported[algo]
    policy = OnnxPolicy(path)
    obs = observations(spec)
    with torch.no_grad():
        expected = deploy_graph(agent, spec)(torch.as_tensor(obs)).numpy()
    got = policy(obs)
    assert got.shape == (64, spec.act_dim) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5
    assert expected.std() > 0.05  # a non-trivial map: parity is not checked on constants
    assert np.abs(got).max() <= 3.0  # env bounds of InvertedPendulum
    np.testing.assert_allclose(policy(obs[3]), expected[3], atol=1e-5)  # single observation


@pytest.mark.parametrize('algo', ALGOS)
def test_metadata_fields(algo, spec, exported):
    cfg, _, path = exported[algo]
    meta = OnnxPolicy(path).metadata
    assert meta['format'] == 'fpmd_ros.policy/1'
    assert meta['algorithm'] == algo
    assert meta['task'] == TASK
    assert meta['nfe'] == (20 if algo == 'dpmd' else 1)
    assert meta['obs_dim'] == 4 and meta['act_dim'] == 1
    assert meta['obs_terms'] == [['observation', 4]]
    assert meta['action_low'] == [-3.0] and meta['action_high'] == [3.0]
    assert meta['control_period_s'] == pytest.approx(0.04)
    assert meta['config_hash'] == cfg.hash()
    assert meta['env_steps'] == 123
    assert meta['noise_input'] is False
    assert meta['joint_names'] == list(spec.joint_names) and meta['joint_names']
    assert meta['actuator_names'] == list(spec.actuator_names)


def test_dpmd_nfe_follows_its_step_count(spec, tmp_path):
    cfg = make_config('cpu', overrides={'agent.algo': 'dpmd', 'agent.hidden': 16,
                                        'agent.layers': 1, 'agent.diffusion_steps': 5})
    agent = make_agent(spec.obs_dim, spec.act_dim, cfg.agent, torch.device('cpu'))
    assert OnnxPolicy(export_onnx(agent, spec, cfg, tmp_path / 'p.onnx')).metadata['nfe'] == 5


@pytest.mark.parametrize('algo', ['fpmd_r', 'fpmd_m'])
def test_noise_input_export_matches_torch(algo, spec, tmp_path):
    cfg, agent = build(algo, spec)
    path = export_onnx(agent, spec, cfg, tmp_path / 'noisy.onnx', noise_input=True)
    policy = OnnxPolicy(path)
    assert policy.metadata['noise_input'] is True
    obs = observations(spec, 16)
    noise = np.random.default_rng(1).normal(size=(16, spec.act_dim)).astype(np.float32)
    with torch.no_grad():
        expected = deploy_graph(agent, spec, noise_input=True)(torch.as_tensor(obs),
                                                              torch.as_tensor(noise))
    np.testing.assert_allclose(policy(obs, noise), expected.numpy(), rtol=0, atol=1e-5)
    # no noise given = x0 = 0 = the plain deploy action; noise changes the action
    with torch.no_grad():
        plain = deploy_graph(agent, spec)(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(policy(obs), plain, rtol=0, atol=1e-5)
    assert np.abs(policy(obs, noise) - plain).max() > 1e-3


def test_sac_refuses_a_noise_input_it_would_ignore(spec, tmp_path):
    cfg, agent = build('sac', spec)
    with pytest.raises(ValueError, match='noise_input: the sac deploy action does not use noise'):
        export_onnx(agent, spec, cfg, tmp_path / 'sac.onnx', noise_input=True)
    assert not (tmp_path / 'sac.onnx').exists()


def test_export_leaves_only_the_model(spec, tmp_path):
    cfg, agent = build('fpmd_r', spec)
    export_onnx(agent, spec, cfg, tmp_path / 'a' / 'policy.onnx')
    assert [p.name for p in (tmp_path / 'a').iterdir()] == ['policy.onnx']
    # readable by others (a deploy user, a container): not the 0600 of a temporary file
    assert (tmp_path / 'a' / 'policy.onnx').stat().st_mode & 0o777 == 0o644


# --- OnnxPolicy input validation -----------------------------------------------------------

@pytest.mark.parametrize('bad', [
    np.zeros(5, np.float32), np.zeros((2, 3), np.float32), np.zeros((2, 2, 4), np.float32),
    np.zeros((0, 4), np.float32), np.float32(1.0),
], ids=['long', 'narrow', '3d', 'empty', 'scalar'])
def test_wrong_shape_observation_is_refused(bad, exported):
    with pytest.raises(ObservationError, match=r'expected shape \(4,\) or \(B, 4\)'):
        OnnxPolicy(exported['fpmd_r'][2])(bad)


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf])
def test_non_finite_observation_is_refused(value, exported):
    obs = np.zeros((3, 4), np.float32)
    obs[1, 2] = value
    with pytest.raises(ObservationError, match='NaN or Inf'):
        OnnxPolicy(exported['fpmd_r'][2])(obs)


@pytest.fixture(scope='module')
def noisy_policy(spec, tmp_path_factory):
    cfg, agent = build('fpmd_r', spec)
    return OnnxPolicy(export_onnx(agent, spec, cfg, tmp_path_factory.mktemp('noisy') / 'p.onnx',
                                  noise_input=True))


@pytest.mark.parametrize(('noise', 'message'), [
    (np.zeros((2, 2), np.float32), r'noise: expected shape \(1,\) or \(2, 1\)'),
    (np.zeros((3, 1), np.float32), r'noise: expected shape \(1,\) or \(2, 1\)'),
    (np.array([[0.0], [np.nan]], np.float32), 'noise: contains NaN or Inf'),
    (np.array([[np.inf], [0.0]], np.float32), 'noise: contains NaN or Inf'),
])
def test_bad_noise_is_refused(noisy_policy, noise, message):
    with pytest.raises(ObservationError, match=message):
        noisy_policy(np.zeros((2, 4), np.float32), noise)


def test_noise_for_a_policy_without_noise_input_is_refused(noisy_policy, exported):
    assert noisy_policy(np.zeros(4, np.float32), np.zeros(1, np.float32)).shape == (1,)
    with pytest.raises(ObservationError, match='exported without a noise input'):
        OnnxPolicy(exported['fpmd_r'][2])(np.zeros(4, np.float32), np.zeros(1, np.float32))


# --- OnnxPolicy file validation ------------------------------------------------------------

def rewrite_metadata(src, dst, change) -> None:
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    for key, value in change(props).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(dst))


def test_model_without_metadata_is_refused(exported, tmp_path):
    path = tmp_path / 'bare.onnx'
    rewrite_metadata(exported['fpmd_r'][2], path, lambda props: {})
    with pytest.raises(PolicyError, match=f'no {METADATA_KEY!r} metadata'):
        OnnxPolicy(path)


def test_metadata_that_is_not_json_is_refused(exported, tmp_path):
    path = tmp_path / 'badjson.onnx'
    rewrite_metadata(exported['fpmd_r'][2], path, lambda props: {METADATA_KEY: '{nope'})
    with pytest.raises(PolicyError, match='not valid JSON'):
        OnnxPolicy(path)


@pytest.mark.parametrize(('field', 'value', 'message'), [
    ('nfe', '1', "field 'nfe' is '1', expected int"),
    ('obs_dim', True, "field 'obs_dim' is True, expected int"),
    ('control_period_s', True, "field 'control_period_s' is True, expected float"),
    ('action_low', None, "field 'action_low' is None"),
    ('format', 'other/1', "format 'other/1'"),
    ('action_high', [1.0, 2.0], 'act_dim=1'),
    ('obs_terms', [['observation', 5]], 'obs_terms sizes do not sum to obs_dim=4'),
    ('obs_dim', 5, 'metadata obs_shape [4] is not'),
    ('noise_input', True, 'noise input presence'),
    ('graph_sha256', 'abc', "metadata graph_sha256 is 'abc', expected 64 hex digits"),
])
def test_bad_metadata_field_is_named(exported, tmp_path, field, value, message):
    def change(props):
        meta = json.loads(props[METADATA_KEY])
        meta[field] = value
        if field == 'obs_dim':  # keep the layout consistent so the named check is reached
            meta['obs_terms'] = [['observation', value if value is not True else 4]]
        return {METADATA_KEY: json.dumps(meta)}

    path = tmp_path / 'bad.onnx'
    rewrite_metadata(exported['fpmd_r'][2], path, change)
    with pytest.raises(PolicyError, match=message.replace('(', r'\(').replace('[', r'\[')):
        OnnxPolicy(path)


def test_corrupt_and_missing_model_files_are_refused(exported, tmp_path):
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(PolicyError, match='not a loadable ONNX model'):
        OnnxPolicy(corrupt)
    truncated = tmp_path / 'truncated.onnx'
    data = exported['fpmd_r'][2].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(PolicyError, match='not a loadable ONNX model'):
        OnnxPolicy(truncated)
    with pytest.raises(PolicyError, match='file not found'):
        OnnxPolicy(tmp_path / 'missing.onnx')


def test_a_changed_weight_is_refused_by_the_graph_digest(exported, tmp_path):
    """One flipped bit in one weight still parses and runs; the digest recorded at export
    refuses it. The same file re-saved unchanged loads."""
    source = exported['fpmd_r'][2]
    model = onnx.load(str(source))
    assert json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])[
        'graph_sha256'] == graph_digest(model.graph)
    onnx.save(model, str(tmp_path / 'same.onnx'))
    OnnxPolicy(tmp_path / 'same.onnx')
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    data = bytearray(weight.raw_data)
    data[len(data) // 2] ^= 0x01
    weight.raw_data = bytes(data)
    onnx.save(model, str(tmp_path / 'flipped.onnx'))
    with pytest.raises(PolicyError, match=r'flipped.onnx: corrupt: its graph \(operators and '
                       r'weights\) has sha256 [0-9a-f]{12}\.\.\., its metadata graph_sha256 says'):
        OnnxPolicy(tmp_path / 'flipped.onnx')


@pytest.mark.parametrize(('expected', 'message'), [
    ({'obs_dim': 5}, 'obs_dim is 4 in the model, expected 5'),
    ({'act_dim': 2}, 'act_dim is 1 in the model, expected 2'),
    ({'control_period_s': 0.02}, 'control_period_s is 0.04'),
    ({'algorithm': 'sac'}, "algorithm is 'fpmd_r' in the model, expected 'sac'"),
    ({'joint_names': ['nope']}, 'joint_names'),
])
def test_mismatched_expectations_are_named(exported, expected, message):
    with pytest.raises(PolicyError, match=message):
        OnnxPolicy(exported['fpmd_r'][2], expected=expected)


def test_matching_expectations_and_load_policy_dispatch(exported, tmp_path):
    path = exported['fpmd_r'][2]
    policy = load_policy(path, expected={'obs_dim': 4, 'act_dim': 1, 'control_period_s': 0.04,
                                         'algorithm': 'fpmd_r'})
    assert isinstance(policy, OnnxPolicy)
    assert len(policy.model_hash) == 64
    with pytest.raises(CheckpointError, match='file not found'):  # .pt -> CheckpointPolicy
        load_policy(tmp_path / 'missing.pt')


@pytest.mark.parametrize("algo", ["fpmd_r", "fpmd_m"])
def test_folded_one_step_equals_generate_from_zero(algo):
    """The exported one-step graph folds the constant inputs (x0 = 0, fixed times) into the
    first layer; it must give the actions of the policy's own one-step generate."""
    from fpmd_core.agents import make_agent
    from fpmd_core.config import make_config

    cfg = make_config("cpu", overrides={"agent.algo": algo, "agent.hidden": 32})
    agent = make_agent(5, 3, cfg.agent, torch.device("cpu"))
    with torch.no_grad():
        for p in agent.ema_policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
        obs = torch.randn(64, 5)
        expected = agent.ema_policy.generate(obs, torch.zeros(64, 3), 1).clamp(-1, 1)
        folded = agent.ema_policy.one_step_from_zero()(obs)
    assert torch.allclose(folded, expected, atol=1e-5)
    assert not torch.allclose(expected, torch.zeros_like(expected))
