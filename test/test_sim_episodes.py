"""mujoco_sim's episode logic without DDS (fpmd_ros.sim.episodes): seeds, sim time, bookkeeping,
against a real MuJoCo env stepped in-process the same way."""

from __future__ import annotations

import numpy as np

from fpmd_core.tasks import make_env, task_spec
from fpmd_ros.sim.episodes import Episodes

TASK = 'InvertedPendulum-v5'  # control period 0.04 s; random actions end episodes in ~5 steps
PERIOD_NS = 40_000_000


def run(episodes: Episodes, actions) -> list:
    """Step through ``actions`` with the node's autoreset; the (episode, seed, return, length)
    of every finished episode."""
    finished = []
    for action in actions:
        result = episodes.step(action)
        assert not result.failed
        if result.done:
            finished.append((episodes.episode_index, episodes.episode_seed,
                             episodes.episode_return, episodes.step_index))
            episodes.reset()
    return finished


def test_seeds_returns_and_sim_time_match_in_process_stepping():
    env = make_env(TASK, normalized_actions=False)
    assert int(round(task_spec(env, TASK).control_dt * 1e9)) == PERIOD_NS
    episodes = Episodes(env, seed=7, period_ns=PERIOD_NS)
    assert episodes.reset() == 7 and episodes.episode_index == 0 and episodes.sim_time_ns == 0
    actions = np.random.default_rng(0).uniform(-3, 3, size=(40, 1))
    finished = run(episodes, actions)
    assert len(finished) >= 2

    reference = make_env(TASK, normalized_actions=False)
    steps = 0
    for k, (episode, seed, episode_return, length) in enumerate(finished):
        assert (episode, seed) == (k, 7 + k)
        reference.reset(seed=seed)
        total = sum(float(reference.step(a)[1]) for a in actions[steps:steps + length])
        assert episode_return == total
        steps += length
    # One period per step and per reset after the first.
    assert episodes.sim_time_ns == (40 + len(finished)) * PERIOD_NS
    env.close()
    reference.close()


def test_set_seed_restarts_the_sequence_at_the_next_reset():
    episodes = Episodes(make_env(TASK, normalized_actions=False), seed=0, period_ns=PERIOD_NS)
    assert [episodes.reset() for _ in range(3)] == [0, 1, 2]
    episodes.set_seed(100)
    assert [episodes.reset() for _ in range(3)] == [100, 101, 102]
    assert episodes.episode_index == 5  # the index keeps counting
    episodes.env.close()


class _FailingEnv:
    """A real env whose next step raises, as dm_control's PhysicsError does."""

    def __init__(self):
        self.env = make_env(TASK, normalized_actions=False)
        self.fail = False

    def reset(self, seed):
        return self.env.reset(seed=seed)

    def step(self, action):
        if self.fail:
            raise RuntimeError('physics diverged')
        return self.env.step(action)


def test_a_failing_step_is_reported_not_raised():
    env = _FailingEnv()
    episodes = Episodes(env, seed=0, period_ns=PERIOD_NS)
    episodes.reset()
    assert not episodes.step(np.zeros(1)).failed
    env.fail = True
    result = episodes.step(np.zeros(1))
    assert 'physics diverged' in result.failed and not result.done
    assert episodes.step_index == 1 and episodes.sim_time_ns == PERIOD_NS  # nothing counted
    env.env.close()
