"""The one sampling function (docs/algorithm.md, "Sampling: best-of-N"): particles batched as
B*N rows, best-of-N by min(Q1, Q2) over clipped candidates, exploration noise clipped again,
deterministic deploy mode; and which policy (EMA or online) each use samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fpmd_core.agents import MirrorDescentAgent
from fpmd_core.agents.critic import DoubleQ
from fpmd_core.agents.sampling import sample_actions
from fpmd_core.config import make_config
from fpmd_core.policies import FlowPolicy

OBS_DIM, ACT_DIM = 4, 2


pytestmark = pytest.mark.usefixtures('seeded_one_thread_torch')


class CountingFlow(FlowPolicy):
    """A real FlowPolicy that records every generate() and velocity() call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generate_rows: list[int] = []
        self.velocity_rows: list[int] = []
        self.x_inits: list[torch.Tensor] = []

    def generate(self, obs, x_init, steps, noise_scale=0.0):
        self.generate_rows.append(obs.shape[0])
        self.x_inits.append(x_init.clone())
        return super().generate(obs, x_init, steps, noise_scale)

    def velocity(self, obs, x, t):
        self.velocity_rows.append(obs.shape[0])
        return super().velocity(obs, x, t)


class Passthrough(torch.nn.Module):
    """A 'generator' whose candidates are exactly the initial points it is given."""

    act_dim = ACT_DIM

    def generate(self, obs, x_init, steps, noise_scale=0.0):
        return x_init


class QuadraticQ(DoubleQ):
    """Q_i(s, a) = -||a - c_i(s)||^2 with c_1 = s[:, :2] and c_2 = s[:, 2:4]; records inputs."""

    def __init__(self):
        super().__init__(OBS_DIM, ACT_DIM, hidden=4, layers=1)
        self.seen_actions: list[torch.Tensor] = []

    def forward(self, obs, act):
        self.seen_actions.append(act.clone())
        return -(act - obs[:, :2]).pow(2).sum(-1), -(act - obs[:, 2:4]).pow(2).sum(-1)


def test_particles_go_through_policy_and_critic_as_one_batch():
    policy = CountingFlow(OBS_DIM, ACT_DIM, hidden=16, layers=1)
    critic = QuadraticQ()
    obs = torch.randn(5, OBS_DIM)
    actions = sample_actions(policy, critic, obs, steps=3, particles=7, noise_scale=0.5)
    assert actions.shape == (5, ACT_DIM)
    assert policy.generate_rows == [35]
    assert policy.velocity_rows == [35, 35, 35]  # K Euler steps, each over all B*N rows
    assert len(critic.seen_actions) == 1 and critic.seen_actions[0].shape == (35, ACT_DIM)
    # x0 = noise_scale * eps: std about 0.5 over the 70 numbers
    assert 0.3 < policy.x_inits[0].std().item() < 0.7


def test_best_of_n_keeps_the_argmax_of_min_q1_q2():
    torch.manual_seed(3)
    batch, particles = 64, 6
    obs = torch.rand(batch, OBS_DIM) * 1.6 - 0.8
    x_init = torch.rand(batch * particles, ACT_DIM) * 1.8 - 0.9  # candidates, already in bounds
    actions = sample_actions(Passthrough(), QuadraticQ(), obs, steps=1, particles=particles,
                             noise_scale=0.5, x_init=x_init)
    cand = x_init.view(batch, particles, ACT_DIM)
    q1 = -(cand - obs[:, None, :2]).pow(2).sum(-1)
    q2 = -(cand - obs[:, None, 2:4]).pow(2).sum(-1)
    best = torch.minimum(q1, q2).argmax(1)
    torch.testing.assert_close(actions, cand[torch.arange(batch), best], rtol=0, atol=0)
    # the choice is the clipped double-Q one, not Q1's alone or Q2's alone
    assert (best != q1.argmax(1)).any() and (best != q2.argmax(1)).any()


def test_candidates_are_clipped_before_the_critic_scores_them():
    critic = QuadraticQ()
    obs = torch.tensor([[3.0, 3.0, 3.0, 3.0]])  # Q prefers large actions
    x_init = torch.tensor([[5.0, 5.0], [0.9, 0.9], [-4.0, 2.0]])
    actions = sample_actions(Passthrough(), critic, obs, steps=1, particles=3, noise_scale=0.5,
                             x_init=x_init)
    seen = critic.seen_actions[0]
    assert seen.abs().max() <= 1.0
    torch.testing.assert_close(seen, torch.tensor([[1.0, 1.0], [0.9, 0.9], [-1.0, 1.0]]))
    torch.testing.assert_close(actions, torch.tensor([[1.0, 1.0]]))


@pytest.mark.parametrize('std', [5.0, 1e6])
def test_actions_stay_in_bounds_after_huge_exploration_noise(std):
    policy = FlowPolicy(OBS_DIM, ACT_DIM, hidden=16, layers=1)
    obs = torch.randn(500, OBS_DIM)
    actions = sample_actions(policy, QuadraticQ(), obs, steps=2, particles=4, noise_scale=0.5,
                             explore_std=torch.tensor(std))
    assert actions.abs().max() <= 1.0
    assert torch.isfinite(actions).all()
    assert (actions.abs() == 1.0).float().mean() > 0.5  # the noise really was applied


def test_exploration_noise_has_the_requested_std():
    obs = torch.zeros(20_000, OBS_DIM)
    x_init = torch.zeros(20_000, ACT_DIM)
    actions = sample_actions(Passthrough(), None, obs, steps=1, particles=1, noise_scale=0.0,
                             explore_std=0.05, x_init=x_init)
    assert actions.std().item() == pytest.approx(0.05, rel=0.03)
    assert actions.mean().abs().item() < 0.002
    same = sample_actions(Passthrough(), None, obs[:5], steps=1, particles=1, noise_scale=0.0,
                          explore_std=0.0, x_init=x_init[:5])
    assert torch.equal(same, x_init[:5])  # no noise at std 0


def make_agent(algo: str = 'fpmd_r', **agent) -> MirrorDescentAgent:
    overrides = {'agent.algo': algo, 'agent.hidden': 32, 'agent.layers': 2,
                 'agent.particles': 5, 'agent.flow_steps': 3, 'agent.diffusion_steps': 4}
    overrides.update({f'agent.{k}': v for k, v in agent.items()})
    cfg = make_config('cpu', overrides=overrides)
    return MirrorDescentAgent(OBS_DIM, ACT_DIM, cfg.agent, torch.device('cpu'))


def spy(module) -> list[int]:
    """Record the rows of every generate() call of `module` (an instance-level wrapper)."""
    rows: list[int] = []
    original = module.generate

    def generate(obs, x_init, steps, noise_scale=0.0):
        rows.append(obs.shape[0])
        return original(obs, x_init, steps, noise_scale)

    module.generate = generate
    return rows


def test_acting_uses_the_ema_policy_and_td_targets_the_online_policy():
    agent = make_agent()
    ema_rows, online_rows = spy(agent.ema_policy), spy(agent.policy)
    obs = np.random.default_rng(0).normal(size=(3, OBS_DIM)).astype(np.float32)
    actions = agent.act(obs, 'explore')
    assert actions.shape == (3, ACT_DIM) and np.abs(actions).max() <= 1.0
    assert ema_rows == [15] and online_rows == []
    batch = {'obs': torch.randn(8, OBS_DIM), 'actions': torch.rand(8, ACT_DIM) * 2 - 1,
             'rewards': torch.randn(8), 'next_obs': torch.randn(8, OBS_DIM),
             'terminated': torch.zeros(8)}
    agent.update(batch)
    assert online_rows == [40] and ema_rows == [15]  # one batched best-of-N per update


def by_hand_deploy_action(agent, obs: torch.Tensor) -> torch.Tensor:
    """The deploy action written out from the EMA policy's layers, without generate():
    FPMD-R one Euler step from 0 at t = 0: a = v(s, 0, 0); FPMD-M one MeanFlow jump from z_1 = 0:
    a = -u(s, 0, 0, 1); DPMD: from x_K = 0 the posterior mean at every step (coefficients as in
    the released code), no noise. Each then clipped to [-1, 1]. (`make_agent` uses the CPU
    profile, whose output bound is on.)"""
    policy, rows = agent.ema_policy, obs.shape[0]
    zeros = torch.zeros(rows, ACT_DIM)

    def net(*inputs):  # the profile's soft output bound, limit * tanh(out / limit)
        limit = agent.cfg.output_bound
        return limit * torch.tanh(policy.net(torch.cat(inputs, dim=-1)) / limit)

    def times(embedding, value):
        return embedding(torch.full((1,), value)).expand(rows, -1)

    if agent.algo == 'fpmd_r':
        action = net(obs, zeros, times(policy.time, 0.0))
    elif agent.algo == 'fpmd_m':
        action = -net(obs, zeros, times(policy.r_time, 0.0), times(policy.t_time, 1.0))
    else:
        alpha_bars = policy.alpha_bars.double()
        x = zeros.double()
        for index in range(policy.steps - 1, -1, -1):  # the released code's t = K-1 .. 0
            ab = alpha_bars[index]
            ab_prev = alpha_bars[index - 1] if index > 0 else torch.tensor(1.0).double()
            beta = 1 - ab / ab_prev
            eps = net(obs, x.float(), times(policy.time, float(index))).double()
            x0 = (x * (1 / ab).sqrt() - eps * (1 / ab - 1).sqrt()).clamp(-1, 1)
            x = x0 * beta * ab_prev.sqrt() / (1 - ab) + x * (1 - ab_prev) * (1 - beta).sqrt() / (
                1 - ab)
        action = x.float()
    return action.clamp(-1, 1)


@pytest.mark.parametrize('algo', ['fpmd_r', 'fpmd_m', 'dpmd'])
def test_deploy_mode_is_deterministic_and_the_one_step_mean(algo):
    """Deploy mode (NFE = 1 for the flows, DPMD's K posterior-mean steps) is the EMA policy's
    action from zero noise: equal to the action written out by hand from its layers, the same
    whatever the random state, and not the online policy's."""
    agent = make_agent(algo)
    with torch.no_grad():  # trained-looking nets (x and t matter), EMA and online different
        for p in [*agent.policy.parameters(), *agent.ema_policy.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
        if algo == 'dpmd':  # x0_hat = (x - sqrt(1 - ab) eps) / sqrt(ab) with ab_K ~ 0: a small
            agent.ema_policy.net[-1].weight.mul_(0.02)  # eps keeps the chain off the clip
            agent.ema_policy.net[-1].bias.mul_(0.02)
    obs = np.random.default_rng(1).normal(size=(6, OBS_DIM)).astype(np.float32)
    torch.manual_seed(1)
    first = agent.act(obs, 'deploy')
    torch.manual_seed(2)
    np.random.seed(2)
    np.testing.assert_array_equal(agent.act(obs, 'deploy'), first)
    with torch.no_grad():
        expected = by_hand_deploy_action(agent, torch.as_tensor(obs))
    np.testing.assert_allclose(first, expected.numpy(), rtol=0, atol=1e-5)
    assert (np.abs(first) < 1.0).mean() > 0.5  # mostly unclipped: the comparison says much
    with torch.no_grad():
        online = sample_actions(agent.policy, None, torch.as_tensor(obs),
                                4 if algo == 'dpmd' else 1, 1, 0.0)
    assert not np.allclose(first, online.numpy(), atol=1e-3)
    if algo == 'fpmd_r':  # one Euler step, not the training-time K steps
        with torch.no_grad():
            k_steps = agent.ema_policy.generate(torch.as_tensor(obs), torch.zeros(6, ACT_DIM),
                                                agent.steps).clamp(-1, 1)
        assert not np.allclose(first, k_steps.numpy(), atol=1e-3)
    # exploring is not deterministic
    assert not np.array_equal(agent.act(obs, 'explore'), agent.act(obs, 'explore'))


def test_unknown_act_mode_is_rejected():
    with pytest.raises(ValueError, match='mode'):
        make_agent().act(np.zeros((1, OBS_DIM), np.float32), 'greedy')
