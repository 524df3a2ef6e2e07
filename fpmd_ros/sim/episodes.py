"""mujoco_sim's episode logic without ROS: resets, steps, seeds, sim time and episode bookkeeping.

The node (fpmd_ros.sim.node) publishes what this class reports, in the order the mujoco_sim
docstring gives; it renders camera frames between a step and the reset that follows it, which
is why :meth:`Episodes.step` never resets by itself: it says so (``done`` or ``failed``) and the
node calls :meth:`Episodes.reset` (Gymnasium's SAME_STEP autoreset, spelled out).

Rules (tested in test/test_sim_episodes.py, with a real MuJoCo env and no DDS)
    Seeds: episodes are numbered k = 0, 1, ... over the sim's life; episode k is reset with
    ``seed + k``. :meth:`Episodes.set_seed` restarts the sequence: the next reset uses the new
    ``seed + 0``, the one after ``seed + 1``, ... (the episode index keeps counting).
    Sim time: the first state is at 0; every env step advances it by one control period
    (``action_repeat`` physics control steps included), and so does every reset after the first,
    so every state has a time of its own and a terminal state and the next initial state are one
    period apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StepResult:
    """One env step: its transition, and whether the episode is over (``done``: terminated or
    truncated; ``failed``: the env raised, the error's repr; the state is then unusable and the
    node must reset)."""

    observation: np.ndarray | None
    reward: float
    terminated: bool
    truncated: bool
    failed: str = ''

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class Episodes:
    """One env's episodes (``env`` as made by fpmd_core.tasks.make_env) with a seed sequence
    and a sim clock of ``period_ns`` per step and per reset."""

    def __init__(self, env, seed: int, period_ns: int) -> None:
        self.env = env
        self.period_ns = int(period_ns)
        self._seed = int(seed)
        self._seed_origin_episode = 0
        self._seed_restart = False
        self.episode_index = -1  # no episode yet: the first reset starts episode 0
        self.step_index = 0
        self.episode_seed = 0
        self.episode_return = 0.0
        self.sim_time_ns = 0
        self.observation: np.ndarray | None = None

    def set_seed(self, seed: int) -> None:
        """Restart the seed sequence at the next reset (see the rules above)."""
        self._seed, self._seed_restart = int(seed), True

    def seed_of(self, episode: int) -> int:
        return self._seed + episode - self._seed_origin_episode

    def reset(self) -> int:
        """Start the next episode; returns its seed. The initial observation is
        :attr:`observation`."""
        if self.episode_index >= 0:
            # A reset takes one control period, so the new initial state never shares a stamp
            # with the state before it (pixel trainers pair frames and transitions by stamp).
            self.sim_time_ns += self.period_ns
        self.episode_index += 1
        if self._seed_restart:
            self._seed_origin_episode, self._seed_restart = self.episode_index, False
        seed = self.seed_of(self.episode_index)
        observation, _ = self.env.reset(seed=seed)
        self.step_index = 0
        self.episode_seed = seed
        self.episode_return = 0.0
        self.observation = observation
        return seed

    def step(self, action: np.ndarray) -> StepResult:
        """One env step with ``action`` (env units). An exception from the env (e.g. a
        dm_control PhysicsError) is returned as ``failed``, never raised: the sim stays alive."""
        try:
            observation, reward, terminated, truncated, _ = self.env.step(action)
        except Exception as error:
            return StepResult(None, 0.0, False, False, failed=repr(error))
        self.step_index += 1
        self.episode_return += float(reward)
        self.sim_time_ns += self.period_ns
        self.observation = observation
        return StepResult(observation, float(reward), bool(terminated), bool(truncated))
