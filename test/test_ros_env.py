"""RosVectorEnv over 2 lockstep sims (real DDS) against gymnasium's SyncVectorEnv in-process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import NodeNameNonExistentError
from ros_helpers import fresh_name
from sim_helpers import RunningSim, SeedPerEpisode

from fpmd_core.tasks import PixelOptions, make_env
from fpmd_ros.ros_env import RosVectorEnv, SimError, SimTimeoutError

TASK = 'InvertedPendulum-v5'
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPISODE_STEPS = 6  # short, so that 25 steps cross several terminations and truncations


@pytest.fixture
def sims():
    running = [RunningSim(fresh_name(f'env_{i}'), task=TASK, max_episode_steps=EPISODE_STEPS)
               for i in range(2)]
    yield running
    for sim in running:
        sim.stop()


@pytest.fixture
def names(sims):
    return [sim.namespace for sim in sims]


def _reference(seeds):
    envs = gym.vector.SyncVectorEnv(
        [lambda: SeedPerEpisode(make_env(TASK, EPISODE_STEPS)) for _ in seeds],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return envs


def test_matches_sync_vector_env(names):
    env = RosVectorEnv(TASK, namespaces=names, max_episode_steps=EPISODE_STEPS,
                       step_timeout_s=5.0)
    try:
        assert env.metadata['autoreset_mode'] == gym.vector.AutoresetMode.SAME_STEP
        assert env.single_action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        assert env.observation_space.shape == (2, 4)
        seeds = [11, 11 + env.seed_stride]
        reference = _reference(seeds)
        obs, _ = env.reset(seed=11)
        ref_obs, _ = reference.reset(seed=seeds)
        np.testing.assert_array_equal(obs, ref_obs)
        assert obs.dtype == np.float32

        rng = np.random.default_rng(1)
        ends = np.zeros(2, dtype=int)
        for _ in range(25):
            # float32, as a policy emits them; out-of-range values are clipped
            actions = rng.uniform(-1.2, 1.2, size=(2, 1)).astype(np.float32)
            obs, rewards, terminated, truncated, infos = env.step(actions)
            ref = reference.step(actions)
            np.testing.assert_array_equal(obs, ref[0])
            np.testing.assert_array_equal(rewards, ref[1])
            np.testing.assert_array_equal(terminated, ref[2])
            np.testing.assert_array_equal(truncated, ref[3])
            assert rewards.dtype == np.float64 and terminated.dtype == np.bool_
            ref_infos = ref[4]
            if '_final_obs' in ref_infos:
                np.testing.assert_array_equal(infos['_final_obs'], ref_infos['_final_obs'])
                for i in np.flatnonzero(ref_infos['_final_obs']):
                    np.testing.assert_array_equal(infos['final_obs'][i],
                                                  ref_infos['final_obs'][i])
            else:
                assert '_final_obs' not in infos
            ends += terminated | truncated
        assert (ends >= 2).all(), f'episode ends per env: {ends}'

        # reset without a seed continues each sim's seed sequence, like the reference.
        obs, _ = env.reset()
        np.testing.assert_array_equal(obs, reference.reset()[0])
        # The sims published (episode, step)-indexed transitions in order; nothing left over.
        assert all(not sim.inbox for sim in env._sims)
    finally:
        env.close()
        reference.close()


def _graph_of(node_name: str, ready, timeout_s: float = 30.0) -> dict:
    """What another participant sees of ``node_name`` through the ROS graph API (discovery is
    asynchronous: polled until ``ready(graph)`` or the timeout)."""
    context = Context()
    rclpy.init(context=context)
    observer = rclpy.create_node(f'observer_p{os.getpid()}', context=context)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                graph = {
                    'subscriptions': dict(observer.get_subscriber_names_and_types_by_node(
                        node_name, '/')),
                    'publishers': dict(observer.get_publisher_names_and_types_by_node(
                        node_name, '/')),
                    'clients': dict(observer.get_client_names_and_types_by_node(
                        node_name, '/')),
                }
            except NodeNameNonExistentError:  # not discovered yet
                graph = {'subscriptions': {}, 'publishers': {}, 'clients': {}}
            if ready(graph) or time.monotonic() > deadline:
                return graph
            time.sleep(0.1)
    finally:
        observer.destroy_node()
        rclpy.shutdown(context=context)


def test_on_a_node_spun_elsewhere_the_sims_endpoints_are_that_nodes(names):
    """The trainer's way: the env's publishers, subscriptions and clients belong to the given
    node (spun by another thread), so the ROS graph shows them as that node's; close() removes
    them and leaves the node running."""
    name = f'trainer_p{os.getpid()}'
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    env = reference = None
    try:
        env = RosVectorEnv(TASK, namespaces=names, max_episode_steps=EPISODE_STEPS,
                           step_timeout_s=5.0, node=node)
        seeds = [3, 3 + env.seed_stride]
        reference = _reference(seeds)
        np.testing.assert_array_equal(env.reset(seed=3)[0], reference.reset(seed=seeds)[0])
        rng = np.random.default_rng(2)
        for _ in range(15):  # across several autoresets
            actions = rng.uniform(-1, 1, size=(2, 1)).astype(np.float32)
            for ours, theirs in zip(env.step(actions)[:4], reference.step(actions)[:4],
                                    strict=True):
                np.testing.assert_array_equal(ours, theirs)

        wanted = {f'/{ns}/transition' for ns in names}
        graph = _graph_of(name, lambda g: wanted <= set(g['subscriptions']))
        assert wanted <= set(graph['subscriptions']), graph
        assert {f'/{ns}/commands' for ns in names} <= set(graph['publishers']), graph
        assert f'/{names[0]}/mujoco_sim/reset' in graph['clients'], graph
        env.close()
        env = None
        assert not list(node.subscriptions) and not list(node.clients)
        assert context.ok()
    finally:
        for closable in (env, reference):
            if closable is not None:
                closable.close()
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=5.0)
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_single_env_action_actually_reaches_the_sim(sims, names):
    """Scaled commands arrive in env units: the sim applied scale_action(a) (gear 100 motor)."""
    env = RosVectorEnv(TASK, namespaces=names[1:], step_timeout_s=5.0)
    try:
        env.reset()
        env.step(np.array([[0.5]]))
        assert sims[1].node.applied_action.tolist() == [1.5]  # [-3, 3] bounds
    finally:
        env.close()


def test_killed_sim_is_named_not_a_hang(sims, names):
    timeout_s = 1.0
    env = RosVectorEnv(TASK, namespaces=names, step_timeout_s=timeout_s)
    try:
        env.reset(seed=0)
        for _ in range(3):
            env.step(np.zeros((2, 1)))
        episode, step = env._sims[1].episode, env._sims[1].step
        sims[1].stop()
        start = time.monotonic()
        with pytest.raises(SimTimeoutError, match=names[1]) as caught:
            env.step(np.zeros((2, 1)))
        assert time.monotonic() - start < timeout_s + 1.0
        assert caught.value.namespace == names[1]
        assert caught.value.awaited == (episode, step + 1)
        assert f'episode {episode}, step {step + 1}' in str(caught.value)
        with pytest.raises(RuntimeError, match='reset'):
            env.step(np.zeros((2, 1)))
        with pytest.raises(SimTimeoutError, match=names[1]):  # and reset names it too
            env.reset()
    finally:
        env.close()


def test_missing_and_mismatched_sims_are_named(names):
    start = time.monotonic()
    with pytest.raises(SimTimeoutError, match='ghost'):
        RosVectorEnv(TASK, namespaces=[names[0], 'ghost'], connect_timeout_s=1.5)
    assert time.monotonic() - start < 5.0
    with pytest.raises(SimError, match=f"{names[0]}: has task = 'InvertedPendulum-v5', "
                       "expected 'Hopper-v5'"):
        RosVectorEnv('Hopper-v5', namespaces=names[:1], connect_timeout_s=10.0)


def test_bad_actions_are_refused(names):
    env = RosVectorEnv(TASK, namespaces=names, step_timeout_s=5.0)
    try:
        with pytest.raises(RuntimeError, match='reset'):
            env.step(np.zeros((2, 1)))
        env.reset()
        with pytest.raises(ValueError, match='shape'):
            env.step(np.zeros((3, 1)))
        with pytest.raises(ValueError, match='NaN'):
            env.step(np.array([[0.0], [np.nan]]))
        env.step(np.zeros((2, 1)))  # still usable
    finally:
        env.close()


def _sim_process(namespace: str, *params: str) -> subprocess.Popen:
    """``python -m fpmd_ros.sim_node`` as its own process (what the console script runs)."""
    args = [sys.executable, '-m', 'fpmd_ros.sim_node', '--ros-args', '-r', f'__ns:=/{namespace}']
    for param in params:
        args += ['-p', param]
    return subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sim_process_killed_mid_run_is_named():
    name = f'env_proc_p{os.getpid()}'
    proc = _sim_process(name, f'task:={TASK}', 'seed:=5')
    try:
        env = RosVectorEnv(TASK, namespaces=[name], step_timeout_s=1.0,
                           connect_timeout_s=30.0)
        try:
            obs, _ = env.reset()
            reference = make_env(TASK)
            np.testing.assert_array_equal(obs[0], reference.reset(seed=5 + 1)[0])
            env.step(np.zeros((1, 1)))
            proc.kill()
            proc.wait(timeout=10)
            start = time.monotonic()
            with pytest.raises(SimTimeoutError, match=name):
                env.step(np.zeros((1, 1)))
            assert time.monotonic() - start < 2.5
        finally:
            env.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_sim_process_refuses_bad_parameters():
    proc = _sim_process(f'env_bad_p{os.getpid()}', 'mode:=fast')
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert "parameter 'mode' is 'fast'; expected one of: lockstep, realtime" in output


PIXEL_TASK = 'cartpole-swingup'
PIXELS = PixelOptions(32, 32, '', 3)


def test_pixel_observations_equal_the_in_process_pixel_env():
    """Frames over DDS, paired with transitions by stamp and stacked by the env, equal the
    in-process pixel env's observations, also across autoresets (final_obs included)."""
    name = f'pix_p{os.getpid()}'
    # The sim names its camera, the env uses the default id: the same camera (cartpole's 0).
    sim = RunningSim(name, task=PIXEL_TASK, max_episode_steps=8, action_repeat=2,
                     camera_enabled=True, image_width=32, image_height=32, camera='fixed')
    env = reference = None
    try:
        env = RosVectorEnv(PIXEL_TASK, namespaces=[name], max_episode_steps=8, action_repeat=2,
                           pixels=PIXELS, step_timeout_s=5.0)
        assert env.single_observation_space == gym.spaces.Box(0, 255, (32, 32, 9), np.uint8)
        reference = gym.vector.SyncVectorEnv(
            [lambda: SeedPerEpisode(make_env(PIXEL_TASK, 8, action_repeat=2, pixels=PIXELS))],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        obs, _ = env.reset(seed=5)
        np.testing.assert_array_equal(obs, reference.reset(seed=[5])[0])
        assert obs.dtype == np.uint8 and obs.std() > 0
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(10):  # 4 env steps per episode: two autoresets
            actions = rng.uniform(-1, 1, (1, 1)).astype(np.float32)
            obs, rewards, terminated, truncated, infos = env.step(actions)
            ref_obs, ref_rewards, _, ref_truncated, ref_infos = reference.step(actions)
            np.testing.assert_array_equal(obs, ref_obs)
            np.testing.assert_array_equal(rewards, ref_rewards)
            np.testing.assert_array_equal(truncated, ref_truncated)
            if '_final_obs' in ref_infos:
                np.testing.assert_array_equal(infos['final_obs'][0], ref_infos['final_obs'][0])
                ends += 1
        assert ends == 2
        assert not env._sims[0].frames  # every frame was paired with its transition
    finally:
        for closable in (env, reference):
            if closable is not None:
                closable.close()
        sim.stop()


def test_a_sim_without_the_expected_camera_is_refused_by_name(names):
    with pytest.raises(SimError, match=f'{names[0]}: has action_repeat = 1, expected 2'):
        RosVectorEnv(TASK, namespaces=names[:1], action_repeat=2, connect_timeout_s=10.0)
    with pytest.raises(SimTimeoutError, match='no publisher on .*camera/image_raw'):
        RosVectorEnv(TASK, namespaces=names[:1], pixels=PIXELS, connect_timeout_s=1.5)
