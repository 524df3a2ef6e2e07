"""Tasks: Gymnasium MuJoCo and dm_control ids, the [-1, 1] action mapping, task specs, vector
envs with explicit num_envs, exact env snapshots, and unknown ids refused with TaskError."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fpmd_core.tasks import (
    TaskError,
    get_env_state,
    make_env,
    make_vector_env,
    scale_action,
    set_env_state,
    task_spec,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- unknown ids -------------------------------------------------------------------------------

@pytest.mark.parametrize(('task_id', 'message'), [
    ('Hoper-v5', "task 'Hoper-v5': unknown Gymnasium id; expected e.g. Hopper-v5"),
    ('Hopper-v9', r'unknown Gymnasium id \(registered: .*Hopper-v5\)'),
    ('nonsense', 'unknown Gymnasium id'),
    ('cheetah-runn', "task 'cheetah-runn': not a dm_control suite task"),
    ('Cheetah-Run', 'not a dm_control suite task'),
    ('CartPole-v1', "task 'CartPole-v1': not a MuJoCo task"),
])
def test_unknown_or_unusable_task_ids_raise_task_error(task_id, message):
    with pytest.raises(TaskError, match=message):
        make_env(task_id)


def test_non_mujoco_id_is_a_task_error_in_a_fresh_process():
    """Before any MuJoCo env is made, gym.envs.mujoco is not imported yet; the check must not
    depend on import order (this used to raise AttributeError)."""
    code = textwrap.dedent('''
        import sys
        sys.path.insert(0, sys.argv[1])
        from fpmd_core.tasks import TaskError, make_env
        try:
            make_env('Pendulum-v1')
        except TaskError as err:
            print('TaskError:', err)
    ''')
    result = subprocess.run([sys.executable, '-c', code, REPO_ROOT], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "TaskError: task 'Pendulum-v1': not a MuJoCo task" in result.stdout


# --- specs ---------------------------------------------------------------------------------

@pytest.mark.parametrize('task_id', ['InvertedPendulum-v5', 'InvertedPendulum-v4'])
def test_gymnasium_spec(task_id):
    env = make_env(task_id)
    spec = task_spec(env, task_id)
    assert spec.id == task_id
    assert (spec.obs_dim, spec.act_dim) == (4, 1)
    assert spec.action_low == (-3.0,) and spec.action_high == (3.0,)
    assert spec.obs_terms == (('observation', 4),)
    assert spec.joint_names == ('slider', 'hinge')
    assert spec.actuator_names == ('slide',)
    assert spec.control_dt == pytest.approx(0.04)
    assert spec.max_episode_steps == 1000
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (4,)
    assert env.action_space.low.tolist() == [-1.0] and env.action_space.high.tolist() == [1.0]


def test_dm_control_spec_and_time_limit():
    env = make_env('cartpole-swingup', max_episode_steps=5)
    spec = task_spec(env, 'cartpole-swingup')
    assert spec.obs_terms == (('position', 3), ('velocity', 2)) and spec.obs_dim == 5
    assert spec.act_dim == 1 and spec.action_low == (-1.0,) and spec.action_high == (1.0,)
    assert spec.joint_names == ('slider', 'hinge_1')
    assert spec.control_dt == pytest.approx(0.01)
    assert spec.max_episode_steps == 5
    obs, _ = env.reset(seed=1)
    assert obs.dtype == np.float32 and obs.shape == (5,)
    ends = []
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        ends.append((terminated, truncated))
    assert ends[:-1] == [(False, False)] * 4
    assert ends[-1] == (False, True)  # a time limit is truncation: the critic bootstraps


def test_max_episode_steps_override_truncates_gymnasium_episodes():
    env = make_env('InvertedPendulum-v5', max_episode_steps=3)
    assert task_spec(env, 'InvertedPendulum-v5').max_episode_steps == 3
    env.reset(seed=0)
    flags = [env.step(np.zeros(1, np.float32))[3] for _ in range(3)]
    assert flags == [False, False, True]


# --- action mapping ------------------------------------------------------------------------

def test_scale_action_maps_and_clips():
    low, high = np.array([-3.0, 0.0]), np.array([3.0, 10.0])
    np.testing.assert_allclose(scale_action([-1, -1], low, high), [-3.0, 0.0])
    np.testing.assert_allclose(scale_action([1, 1], low, high), [3.0, 10.0])
    np.testing.assert_allclose(scale_action([0, 0.5], low, high), [0.0, 7.5])
    np.testing.assert_allclose(scale_action([7, -9], low, high), [3.0, 0.0])  # clipped first


def test_normalized_actions_reach_the_simulator_in_env_units():
    from fpmd_core.tasks import mujoco_handles

    env = make_env('InvertedPendulum-v5')
    env.reset(seed=0)
    _, data = mujoco_handles(env)
    for action, ctrl in [(0.5, 1.5), (-1.0, -3.0), (4.0, 3.0)]:
        env.step(np.array([action], np.float32))
        assert data.ctrl[0] == pytest.approx(ctrl)


# --- vector envs and snapshots -------------------------------------------------------------

def test_vector_env_has_explicit_num_envs_and_same_step_autoreset():
    envs = make_vector_env('InvertedPendulum-v5', 3, max_episode_steps=4)
    obs, _ = envs.reset(seed=0)
    assert envs.num_envs == 3 and obs.shape == (3, 4)
    assert not np.array_equal(obs[0], obs[1])  # each env seeded differently
    zeros = np.zeros((3, 1), np.float32)
    for _ in range(3):
        assert not envs.step(zeros)[3].any()
    obs, rewards, terminated, truncated, infos = envs.step(zeros)
    assert truncated.all() and not terminated.any()
    # SAME_STEP autoreset: the returned obs already starts a new episode, the final obs is in info
    assert infos['_final_obs'].all()
    assert not np.array_equal(np.stack(infos['final_obs']), obs)


@pytest.mark.parametrize('task_id', ['InvertedPendulum-v5', 'cartpole-swingup'])
def test_env_snapshot_restores_the_exact_future(task_id):
    env = make_env(task_id, max_episode_steps=30)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (40, 1)).astype(np.float32)
    for a in actions[:5]:
        env.step(a)
    state = get_env_state(env)

    def future():
        out = []
        for a in actions[5:]:
            obs, reward, terminated, truncated, _ = env.step(a)
            out.append((obs.copy(), reward, terminated, truncated))
            if terminated or truncated:
                out.append(env.reset()[0].copy())  # the next episode's start uses the env RNG
                break
        return out

    first = future()
    set_env_state(env, state)
    second = future()
    assert len(first) == len(second) > 1
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,),
                        strict=True):
            np.testing.assert_array_equal(x, y)
