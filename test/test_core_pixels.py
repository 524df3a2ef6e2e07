"""Pixel tasks in fpmd_core: camera frames as observations, the DrQ-v2 encoder trained by the
critic only, random-shift augmentation, and the exported graph that takes uint8 frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fpmd_core.agents import make_agent
from fpmd_core.checkpoint import save_checkpoint
from fpmd_core.config import make_config
from fpmd_core.export import export_onnx
from fpmd_core.frames import FrameStack
from fpmd_core.nets import random_shift
from fpmd_core.rendering import Camera, RenderError
from fpmd_core.runtime import CheckpointPolicy, ObservationError, OnnxPolicy
from fpmd_core.tasks import (
    PixelOptions,
    TaskError,
    env_from_config,
    make_env,
    mujoco_handles,
    task_spec,
)

TASK = 'cartpole-swingup'
SIZE = 32


def pixel_config(algo: str = 'fpmd_m', **overrides):
    values = {'task.id': TASK, 'task.image_size': SIZE, 'agent.algo': algo, 'agent.hidden': 32,
              'agent.batch_size': 8, 'task.max_episode_steps': 40}
    values.update(overrides)
    return make_config('cpu_pixels', overrides=values)


def test_pixel_env_observes_stacked_uint8_frames_and_keeps_the_state_in_info():
    env = env_from_config(pixel_config().task)
    obs, info = env.reset(seed=0)
    assert obs.shape == (SIZE, SIZE, 9) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    # After a reset the stack holds the first frame three times.
    np.testing.assert_array_equal(obs[..., :3], obs[..., 6:])
    assert obs.std() > 0  # a rendered scene, not a blank buffer
    assert info['state'].shape == (5,)
    for _ in range(3):
        obs, _, _, _, info = env.step(np.ones(1, np.float32))
    # Oldest first: the newest frame is the last three channels, and the cart has moved.
    assert not np.array_equal(obs[..., :3], obs[..., 6:])
    model, data = mujoco_handles(env)
    camera = Camera(model, SIZE, SIZE, 0)
    np.testing.assert_array_equal(obs[..., 6:], camera.render(data))
    camera.close()
    env.close()


@pytest.mark.parametrize('task', ['cartpole-swingup', 'cheetah-run', 'walker-walk'])
def test_the_papers_visual_tasks_make_pixel_envs(task):
    cfg = make_config('cpu_pixels', overrides={'task.id': task})
    env = env_from_config(cfg.task)
    obs, _ = env.reset(seed=0)
    next_obs, reward, _, _, _ = env.step(env.action_space.sample())
    assert obs.shape == next_obs.shape == (84, 84, 9) and next_obs.dtype == np.uint8
    assert next_obs[..., 6:].std() > 0 and np.isfinite(reward)
    spec = task_spec(env, task)
    assert (spec.action_repeat, spec.camera) == (2, '0')
    env.close()


def test_action_repeat_sums_rewards_and_lengthens_the_control_period():
    plain = make_env(TASK, normalized_actions=False)
    repeated = make_env(TASK, normalized_actions=False, action_repeat=2)
    plain.reset(seed=3)
    repeated.reset(seed=3)
    action = np.float32([0.7])
    expected = sum(plain.step(action)[1] for _ in range(2))
    assert repeated.step(action)[1] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_array_equal(mujoco_handles(plain)[1].qpos, mujoco_handles(repeated)[1].qpos)
    spec, spec_plain = task_spec(repeated, TASK), task_spec(plain, TASK)
    assert spec.control_dt == pytest.approx(2 * spec_plain.control_dt)
    assert spec.max_episode_steps == spec_plain.max_episode_steps // 2
    assert spec.action_repeat == 2


def test_task_spec_of_a_pixel_task_describes_frames():
    env = env_from_config(pixel_config().task)
    spec = task_spec(env, TASK)
    assert spec.obs_shape == (SIZE, SIZE, 9)
    assert spec.obs_dim == SIZE * SIZE * 9
    assert spec.obs_terms == (('pixels', SIZE * SIZE * 9),)
    assert spec.camera == '0'
    env.close()


def test_bad_camera_and_bad_sizes_are_refused_by_name():
    with pytest.raises(RenderError, match="no camera named 'nope'"):
        make_env(TASK, pixels=PixelOptions(SIZE, SIZE, 'nope'))
    with pytest.raises(RenderError, match=r'camera: expected -1 \(free camera\) or an id'):
        make_env(TASK, pixels=PixelOptions(SIZE, SIZE, '7'))
    with pytest.raises(TaskError, match='action_repeat: expected an integer >= 1'):
        make_env(TASK, action_repeat=0)
    from fpmd_core.config import ConfigError
    with pytest.raises(ConfigError, match='task.image_size: expected an integer >= 16'):
        pixel_config(**{'task.image_size': 8})


def test_frame_stack_keeps_the_last_k_frames_oldest_first():
    stack = FrameStack(3)
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(5)]
    assert stack.reset(frames[0])[0, 0].tolist() == [0] * 9
    for frame in frames[1:]:
        observation = stack.push(frame)
    assert observation[0, 0].tolist() == [2, 2, 2, 3, 3, 3, 4, 4, 4]
    with pytest.raises(ValueError, match='frame_stack: expected an integer >= 1'):
        FrameStack(0)


def test_random_shift_moves_each_image_by_at_most_pad_with_replicated_edges():
    torch.manual_seed(0)
    frames = torch.arange(6 * 10 * 10 * 3, dtype=torch.int64).remainder(251).to(torch.uint8)
    frames = frames.reshape(6, 10, 10, 3)
    shifted = random_shift(frames, 2)
    assert shifted.shape == frames.shape and shifted.dtype == torch.uint8
    assert torch.equal(random_shift(frames, 0), frames)
    moved = 0
    for original, result in zip(frames, shifted, strict=True):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                rows = (torch.arange(10) + dy).clamp(0, 9)
                cols = (torch.arange(10) + dx).clamp(0, 9)
                if torch.equal(original[rows][:, cols], result):
                    matches.append((dy, dx))
        assert matches, 'every augmented image is a shifted copy of its original'
        moved += (0, 0) not in matches
    assert moved > 0


@pytest.mark.parametrize('algo', ['fpmd_m', 'fpmd_r', 'sac'])
def test_updates_train_the_encoder_only_through_the_critic(algo):
    torch.manual_seed(0)
    cfg = pixel_config(algo)
    updates = 2 * cfg.agent.actor_interval
    agent = make_agent((SIZE, SIZE, 9), 1, cfg.agent, torch.device('cpu'), gradient_budget=updates)
    rng = np.random.default_rng(0)
    batch = {
        'obs': torch.as_tensor(rng.integers(0, 256, (8, SIZE, SIZE, 9), dtype=np.uint8)),
        'next_obs': torch.as_tensor(rng.integers(0, 256, (8, SIZE, SIZE, 9), dtype=np.uint8)),
        'actions': torch.as_tensor(rng.uniform(-1, 1, (8, 1)).astype(np.float32)),
        'rewards': torch.as_tensor(rng.uniform(0, 1, 8).astype(np.float32)),
        'terminated': torch.zeros(8),
    }

    def snapshot(module):
        return [p.detach().clone() for p in module.parameters()]

    # With the critic frozen (lr 0), actor updates must leave the encoder untouched.
    for group in agent.critic.optimizer.param_groups:
        group['lr'] = 0.0
    encoder, policy = snapshot(agent.encoder), snapshot(agent.policy)
    for _ in range(updates):
        agent.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(encoder, snapshot(agent.encoder), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(policy, snapshot(agent.policy),
                                                        strict=True))
    # With the critic learning, the encoder learns too.
    for group in agent.critic.optimizer.param_groups:
        group['lr'] = cfg.agent.critic_lr
    agent.update(batch)
    assert not all(torch.equal(a, b) for a, b in zip(encoder, snapshot(agent.encoder),
                                                        strict=True))


@pytest.fixture(scope='module')
def pixel_policy(tmp_path_factory):
    torch.manual_seed(1)
    cfg = pixel_config('fpmd_m')
    env = env_from_config(cfg.task)
    spec = task_spec(env, TASK)
    agent = make_agent(spec.obs_shape, spec.act_dim, cfg.agent, torch.device('cpu'))
    with torch.no_grad():  # larger outputs than a fresh init, so parity is not checked at ~0
        for p in agent.parameters():
            p.mul_(1.5)
    out = tmp_path_factory.mktemp('pixels')
    path = export_onnx(agent, spec, cfg, out / 'policy.onnx', env_steps=7)
    frames = [env.reset(seed=0)[0]] + [env.step(np.float32([0.5]))[0] for _ in range(3)]
    env.close()
    return cfg, spec, agent, path, np.stack(frames)


def test_onnx_pixel_policy_takes_uint8_frames_and_matches_torch(pixel_policy):
    cfg, spec, agent, path, frames = pixel_policy
    policy = OnnxPolicy(path)
    assert policy.pixels
    meta = policy.metadata
    assert (meta['obs_shape'], meta['obs_dtype'], meta['frame_stack']) == \
        ([SIZE, SIZE, 9], 'uint8', 3)
    assert meta['action_repeat'] == 2 and meta['camera'] == '0'
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    assert session.get_inputs()[0].type == 'tensor(uint8)'
    expected = agent.act(frames, 'deploy') * 1.0  # cartpole's action bounds are [-1, 1]
    np.testing.assert_allclose(policy(frames), expected, atol=1e-5)
    np.testing.assert_allclose(policy(frames[0]), expected[0], atol=1e-5)
    assert np.ptp(expected) > 1e-4  # different frames, different actions


def test_pixel_policy_refuses_wrong_frames(pixel_policy):
    _, _, _, path, frames = pixel_policy
    policy = OnnxPolicy(path)
    with pytest.raises(ObservationError, match='expected uint8 frames, got float32'):
        policy(frames[0].astype(np.float32))
    with pytest.raises(ObservationError, match=r'expected frames of shape \(32, 32, 9\)'):
        policy(frames[0][..., :6])


@pytest.mark.parametrize(('field', 'value'), [('frame_stack', 2), ('obs_dtype', 'float32'),
                                              ('frame_stack', None)])
def test_inconsistent_pixel_metadata_is_refused_by_name(pixel_policy, tmp_path, field, value):
    import json

    import onnx

    from fpmd_core.export import METADATA_KEY
    from fpmd_core.runtime import PolicyError

    model = onnx.load(str(pixel_policy[3]))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    meta = json.loads(entry.value)
    meta[field] = value
    entry.value = json.dumps(meta)
    bad = tmp_path / 'bad.onnx'
    onnx.save(model, str(bad))
    with pytest.raises(PolicyError, match=r'pixel metadata obs_shape \[32, 32, 9\]'):
        OnnxPolicy(bad)


def test_checkpoint_policy_matches_the_onnx_export(pixel_policy, tmp_path):
    cfg, spec, agent, path, frames = pixel_policy
    import dataclasses
    payload = {'config': cfg.to_dict(), 'task_spec': dataclasses.asdict(spec),
               'agent': agent.full_state(), 'replay': {}, 'counters': {'env_steps': 7},
               'rng': {}, 'envs': {}}
    checkpoint = save_checkpoint(payload, tmp_path / 'pixels.pt')
    np.testing.assert_allclose(CheckpointPolicy(checkpoint)(frames), OnnxPolicy(path)(frames),
                               atol=1e-5)


def test_a_short_pixel_run_trains_and_exports(tmp_path):
    from fpmd_core.trainer import Trainer

    cfg = pixel_config('fpmd_m', **{'trainer.total_steps': 60, 'trainer.warmup_steps': 40,
                                    'trainer.eval_episodes': 1, 'trainer.progress': False,
                                    'trainer.output_dir': str(tmp_path)})
    trainer = Trainer(cfg)
    result = trainer.run()
    assert result.updates == 21  # from env step 40 (the last warm-up step) to 60
    assert trainer.replay.data['obs'].dtype == np.uint8
    assert OnnxPolicy(result.policy).metadata['obs_shape'] == [SIZE, SIZE, 9]


def test_egl_and_osmesa_backends_render_the_same_frame():
    """MUJOCO_GL selects the backend (read once, at import: one process each)."""
    import hashlib
    import os
    import subprocess
    import sys

    script = ('import hashlib, numpy as np\n'
              'from fpmd_core.tasks import PixelOptions, make_env\n'
              f'env = make_env({TASK!r}, pixels=PixelOptions(48, 48))\n'
              'obs, _ = env.reset(seed=4)\n'
              'assert obs.std() > 0\n'
              'print(hashlib.sha256(obs.tobytes()).hexdigest())\n'
              'env.close()\n')
    digests = {}
    for backend in ('egl', 'osmesa'):
        # This process imported mujoco with EGL, which set PYOPENGL_PLATFORM for its children.
        env = {k: v for k, v in os.environ.items() if k != 'PYOPENGL_PLATFORM'}
        env['MUJOCO_GL'] = backend
        done = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f'{backend}: {done.stderr[-2000:]}'
        digests[backend] = done.stdout.strip().splitlines()[-1]
    assert digests['egl'] == digests['osmesa']
    assert hashlib.sha256(b'').hexdigest() not in digests.values()


@pytest.mark.parametrize('found, backend', [
    ({'EGL', 'OSMesa'}, 'egl'), ({'OSMesa'}, 'osmesa'), (set(), 'disable')])
def test_headless_backend_is_one_that_is_installed(found, backend):
    """mujoco imports the named backend's library at its own import: naming a missing one
    breaks even state-only work (seen on a GPU server without libEGL)."""
    from fpmd_core import headless_backend

    assert headless_backend(lambda name: f'lib{name}.so' if name in found else None) == backend


def test_without_any_gl_library_state_tasks_run_and_rendering_names_the_packages():
    import os
    import subprocess
    import sys

    script = ('from fpmd_core.tasks import PixelOptions, make_env\n'
              'from fpmd_core.rendering import RenderError\n'
              'env = make_env("InvertedPendulum-v5")\n'
              'env.reset(seed=0)\n'
              'print("reward", float(env.step(env.action_space.sample())[1]))\n'
              'try:\n'
              f'    make_env({TASK!r}, pixels=PixelOptions(48, 48))\n'
              'except RenderError as err:\n'
              '    print("RenderError", err)\n')
    env = {k: v for k, v in os.environ.items() if k not in ('PYOPENGL_PLATFORM', 'DISPLAY')}
    env['MUJOCO_GL'] = 'disable'  # what fpmd_core picks when neither EGL nor OSMesa is found
    done = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'reward 1.0' in done.stdout
    assert "RenderError cannot create an offscreen OpenGL context with MUJOCO_GL='disable'" \
        in done.stdout and 'apt-get install' in done.stdout
