"""Short learning runs: FPMD-R, FPMD-M and DPMD must each clearly learn a small control task,
measured in deploy mode (the exported action: NFE = 1 for the flows), deterministically.

The task, `Reach`, is small enough for seconds of CPU and still needs the whole method: a
critic bootstrapped over a 10-step horizon, best-of-N sampling and the weighted policy update.
A point in the plane starts uniformly in [-1, 1]^2; each step moves it by 0.25 * action
(action in [-1, 1]^2) and pays -(distance to the origin). On 32 fixed start points: a random
policy scores -13.4, holding still -6.6, the untrained flow policies about -7 (DPMD -14 to -18),
and heading for the origin at full speed about -0.6.

Settings (CPU profile, 2x64 nets, 4 envs, 400 random warm-up steps, then one update per vector
step: 1400 updates in 6000 env steps): the temperature steps every 5 gradient steps instead of 250
(FPMD-M: the profile's `budget` schedule over those 1400 steps, its training noise scale 1.0,
advantage weights, actor every gradient step and target entropy -1.0 d) and the policy learning
rate is 1e-3, so that alpha anneals and the policy moves within such a short run; DPMD uses 10
diffusion steps instead of 20 for time. Measured with seeds 0, 1, 2: FPMD-R -1.39 / -1.49 / -1.11,
FPMD-M -2.01 / -1.61 / -1.71, DPMD -2.00 / -2.14 / -2.05; the threshold -3.0 is half way from
holding still to that. CPU time per run: about 9 s (FPMD-R), 10 s (FPMD-M), 14 s (DPMD).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fpmd_core.agents import make_agent
from fpmd_core.config import make_config
from fpmd_core.replay import ReplayBuffer

ALGORITHMS = ['fpmd_r', 'fpmd_m', 'dpmd']
THRESHOLD = -3.0
ENVS, WARMUP, ENV_STEPS = 4, 400, 6000


class Reach:
    """`n` copies of the task, stepped together; every episode lasts HORIZON steps."""

    DIM, HORIZON, SPEED, BOX = 2, 10, 0.25, 2.0

    def __init__(self, n: int, seed: int):
        self.n, self.rng = n, np.random.default_rng(seed)

    def reset(self, starts: np.ndarray | None = None) -> np.ndarray:
        self.pos = self.rng.uniform(-1, 1, (self.n, self.DIM)) if starts is None else starts.copy()
        self.t = 0
        return self.pos.astype(np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """(next observation, reward, episode over)"""
        self.pos = np.clip(self.pos + self.SPEED * np.clip(actions, -1, 1), -self.BOX, self.BOX)
        self.t += 1
        return (self.pos.astype(np.float32), -np.linalg.norm(self.pos, axis=1),
                self.t >= self.HORIZON)


EVAL_STARTS = np.random.default_rng(99).uniform(-1, 1, (32, Reach.DIM))


def deploy_return(agent) -> float:
    env = Reach(len(EVAL_STARTS), seed=0)
    obs, total, over = env.reset(EVAL_STARTS), np.zeros(len(EVAL_STARTS)), False
    while not over:
        obs, reward, over = env.step(agent.act(obs, 'deploy'))
        total += reward
    return float(total.mean())


def gradient_steps(env_steps: int) -> int:
    """Updates `train` makes: one per vector step from the one that reaches WARMUP on."""
    return (env_steps - WARMUP) // ENVS + 1


def train(algo: str, seed: int, env_steps: int = ENV_STEPS):
    cfg = make_config('cpu', overrides={
        'agent.algo': algo, 'agent.hidden': 64, 'agent.batch_size': 128,
        'agent.alpha_interval': 5, 'agent.actor_lr': 1e-3, 'agent.diffusion_steps': 10,
    }).agent
    torch.manual_seed(seed)
    agent = make_agent(Reach.DIM, Reach.DIM, cfg, torch.device('cpu'),
                       gradient_budget=gradient_steps(env_steps))
    env, replay = Reach(ENVS, seed), ReplayBuffer(env_steps, Reach.DIM, Reach.DIM, seed + 1)
    warmup_actions = np.random.default_rng(seed + 2)
    obs, steps = env.reset(), 0
    while steps < env_steps:
        if steps < WARMUP:
            actions = warmup_actions.uniform(-1, 1, (ENVS, Reach.DIM)).astype(np.float32)
        else:
            actions = agent.act(obs, 'explore')
        next_obs, rewards, over = env.step(actions)
        # The time limit is a truncation, not a terminal state: the target still bootstraps.
        replay.add(obs, actions, rewards.astype(np.float32), next_obs, np.zeros(ENVS))
        obs = env.reset() if over else next_obs
        steps += ENVS
        if steps >= WARMUP:
            agent.update(replay.sample(cfg.batch_size, torch.device('cpu')))
    return agent


pytestmark = pytest.mark.usefixtures('one_thread_torch')


@pytest.mark.parametrize('algo', ALGORITHMS)
def test_learns_reach_in_deploy_mode(algo):
    agent = train(algo, seed=0)
    assert agent.gradient_steps == gradient_steps(ENV_STEPS)
    score = deploy_return(agent)
    assert score >= THRESHOLD, (
        f"{algo}: deploy-mode return {score:.2f} after {ENV_STEPS} env steps; expected >= "
        f"{THRESHOLD} (holding still scores -6.6)")


@pytest.mark.parametrize('algo', ALGORITHMS)
def test_a_learning_run_is_deterministic(algo):
    """Acting, replay sampling and updates together: the same seed gives the same networks and
    the same return; another seed does not (so the comparison can fail)."""
    short = WARMUP + 100 * ENVS
    first, again, other = (train(algo, seed, short) for seed in (3, 3, 4))
    state, again_state = first.state_dict(), again.state_dict()
    assert all(torch.equal(state[k], again_state[k]) for k in state)
    assert deploy_return(again) == deploy_return(first)
    assert deploy_return(other) != deploy_return(first)
