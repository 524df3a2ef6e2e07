"""The critic update (docs/algorithm.md, "One gradient step"): the TD target reads the target
critic, the released code's two Adam steps per critic gradient, and Polyak averaging of the target
critics and of the EMA policy (every `actor_interval` gradient steps; SAC: every step)."""

from __future__ import annotations

import copy

import pytest
import torch

from fpmd_core.agents import make_agent
from fpmd_core.agents.critic import polyak, td_target, update_critic
from fpmd_core.config import make_config

OBS_DIM, ACT_DIM, ROWS = 4, 2, 16


pytestmark = pytest.mark.usefixtures('seeded_one_thread_torch')


def build(algo: str = 'fpmd_r', **agent):
    overrides = {'agent.algo': algo, 'agent.hidden': 32, 'agent.layers': 2,
                 'agent.particles': 3, 'agent.flow_steps': 2, 'agent.diffusion_steps': 3,
                 'agent.batch_size': ROWS}
    overrides.update({f'agent.{k}': v for k, v in agent.items()})
    cfg = make_config('cpu', overrides=overrides).agent
    return make_agent(OBS_DIM, ACT_DIM, cfg, torch.device('cpu'))


def make_batch() -> dict:
    return {'obs': torch.randn(ROWS, OBS_DIM), 'actions': torch.rand(ROWS, ACT_DIM) * 2 - 1,
            'rewards': torch.randn(ROWS), 'next_obs': torch.randn(ROWS, OBS_DIM),
            'terminated': (torch.rand(ROWS) < 0.3).float()}


def shift_output_bias(double_q, value: float) -> None:
    with torch.no_grad():
        double_q.q1[-1].bias.add_(value)
        double_q.q2[-1].bias.add_(value)


# --- TD target -----------------------------------------------------------------------------

def test_td_target_bootstraps_from_the_target_critic_not_the_online_one():
    agent = build(reward_scale=0.2, gamma=0.9)
    critic, batch, cfg = agent.critic, make_batch(), agent.cfg
    next_actions = torch.rand(ROWS, ACT_DIM) * 2 - 1
    bonus = torch.full((ROWS,), 0.5)
    shift_output_bias(critic.target, 7.0)  # target and online now disagree by 7
    q1, q2 = critic.target(batch['next_obs'], next_actions)
    expected = 0.2 * batch['rewards'] + 0.9 * (1 - batch['terminated']) * (
        torch.minimum(q1, q2) + bonus)
    got = td_target(critic, batch, bonus, next_actions, cfg)
    torch.testing.assert_close(got, expected)
    # moving the online critic changes nothing; moving the target critic moves y by gamma * dq
    shift_output_bias(critic.online, -100.0)
    torch.testing.assert_close(td_target(critic, batch, bonus, next_actions, cfg), expected)
    shift_output_bias(critic.target, 1.0)
    torch.testing.assert_close(td_target(critic, batch, bonus, next_actions, cfg),
                               expected + 0.9 * (1 - batch['terminated']))
    # terminal transitions do not bootstrap at all
    done = batch['terminated'] == 1
    assert done.any()
    torch.testing.assert_close(got[done], 0.2 * batch['rewards'][done])


@pytest.mark.parametrize('algo', ['fpmd_r', 'sac'])
def test_the_critic_regresses_toward_the_target_critics_values(algo):
    """Through agent.update: with the target critic's output raised by 50, the online critic's
    Q values rise after a few updates (toward gamma * 50 above the rewards); with the online
    critic raised instead, its values fall back (the target did not follow it)."""
    lifted = build(algo, critic_lr=1e-2, tau=0.0)
    shift_output_bias(lifted.critic.target, 50.0)
    plain = copy.deepcopy(lifted)
    shift_output_bias(plain.critic.target, -50.0)
    batch = make_batch()
    for _ in range(5):
        lifted.update(batch)
        plain.update(batch)
    q_lifted = lifted.critic.online.min_q(batch['obs'], batch['actions']).mean()
    q_plain = plain.critic.online.min_q(batch['obs'], batch['actions']).mean()
    assert q_lifted > q_plain + 0.1


# --- two Adam steps per critic gradient ----------------------------------------------------

@pytest.mark.parametrize('adam_steps', [1, 2])
def test_update_critic_applies_one_gradient_adam_steps_times(adam_steps):
    agent = build()
    critic, batch = agent.critic, make_batch()
    target = torch.randn(ROWS)
    reference = copy.deepcopy(critic.online)
    reference_adam = torch.optim.Adam(reference.parameters(), lr=agent.cfg.critic_lr)
    q1, q2 = reference(batch['obs'], batch['actions'])
    ((q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()).backward()
    for _ in range(adam_steps):
        reference_adam.step()  # the same .grad each time
    update_critic(critic, batch, target, adam_steps=adam_steps)
    for ours, theirs in zip(critic.online.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)
    steps = {int(s['step']) for s in critic.optimizer.state_dict()['state'].values()}
    assert steps == {adam_steps}


@pytest.mark.parametrize(('algo', 'profile', 'adam_steps'), [
    ('fpmd_r', 'paper', 2), ('fpmd_m', 'paper', 2), ('dpmd', 'paper', 2), ('sac', 'paper', 1),
    ('fpmd_r', 'cpu', 1), ('dpmd', 'cpu', 1),
])
def test_critic_adam_steps_per_gradient_step_by_algorithm_and_profile(algo, profile,
                                                                      adam_steps):
    """The released FPMD and DPMD code takes two Adam steps per critic gradient (paper profile),
    SAC one; the CPU profile takes one."""
    cfg = make_config(profile, overrides={
        'agent.algo': algo, 'agent.hidden': 16, 'agent.layers': 1, 'agent.particles': 2,
        'agent.flow_steps': 2, 'agent.diffusion_steps': 2, 'agent.batch_size': ROWS}).agent
    agent = make_agent(OBS_DIM, ACT_DIM, cfg, torch.device('cpu'))
    for _ in range(3):
        agent.update(make_batch())
    steps = {int(s['step']) for s in agent.critic.optimizer.state_dict()['state'].values()}
    assert steps == {3 * adam_steps}


# --- Polyak averaging ----------------------------------------------------------------------

def test_polyak_moves_each_target_parameter_tau_of_the_way():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    polyak(target, online, 0.25)
    for t, b, o in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * o.detach())


def state_of(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize('algo', ['fpmd_r', 'dpmd'])
def test_mirror_descent_targets_follow_every_actor_interval(algo):
    """Target critics and the EMA policy move (1 - tau) old + tau online, on actor steps only."""
    tau = 0.3
    agent = build(algo, tau=tau, actor_interval=2)
    target, ema = state_of(agent.critic.target), state_of(agent.ema_policy)
    agent.update(make_batch())  # gradient step 1: no actor step, no Polyak
    assert all(torch.equal(a, b) for a, b in zip(target, state_of(agent.critic.target),
                                                 strict=True))
    assert all(torch.equal(a, b) for a, b in zip(ema, state_of(agent.ema_policy), strict=True))
    agent.update(make_batch())  # gradient step 2: actor step, then Polyak on the new weights
    for new, old, online in zip(state_of(agent.critic.target), target,
                                state_of(agent.critic.online), strict=True):
        torch.testing.assert_close(new, (1 - tau) * old + tau * online)
    for new, old, online in zip(state_of(agent.ema_policy), ema, state_of(agent.policy),
                                strict=True):
        torch.testing.assert_close(new, (1 - tau) * old + tau * online)
    assert not all(torch.equal(a, b) for a, b in zip(ema, state_of(agent.ema_policy),
                                                     strict=True))


def test_sac_updates_actor_temperature_and_target_every_gradient_step():
    tau = 0.3
    agent = build('sac', tau=tau, actor_interval=2)
    for step in range(1, 3):
        target, policy, alpha = state_of(agent.critic.target), state_of(agent.policy), \
            agent.alpha.item()
        agent.update(make_batch())
        assert agent.actor_updates == step
        assert agent.alpha.item() != alpha
        assert not all(torch.equal(a, b) for a, b in zip(policy, state_of(agent.policy),
                                                         strict=True))
        for new, old, online in zip(state_of(agent.critic.target), target,
                                    state_of(agent.critic.online), strict=True):
            torch.testing.assert_close(new, (1 - tau) * old + tau * online)


def test_sac_networks_use_relu_and_fpmd_networks_mish():
    sac, fpmd = build('sac'), build('fpmd_r')
    for module in (sac.policy.net, sac.critic.online.q1):
        kinds = {type(m) for m in module if not isinstance(m, torch.nn.Linear)}
        assert kinds == {torch.nn.ReLU}
    for module in (fpmd.policy.net, fpmd.critic.online.q1):
        kinds = {type(m) for m in module if not isinstance(m, torch.nn.Linear)}
        assert torch.nn.ReLU not in kinds and len(kinds) == 1


# --- the fused Adam --------------------------------------------------------------------------

def test_fused_adam_matches_the_default_and_stays_fused_after_loading_a_default_state():
    """Every agent optimiser is fused Adam; loading an optimizer state written by the default
    Adam (whose param_groups say fused=None) keeps the fused kernel and the moments."""
    from fpmd_core.agents.optim import adam, load_optimizer_state
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    reference = copy.deepcopy(net)
    fused, default = adam(net.parameters(), lr=1e-2), torch.optim.Adam(reference.parameters(),
                                                                         lr=1e-2)
    for _ in range(5):
        x = torch.randn(8, 5)
        for module, optimizer in ((net, fused), (reference, default)):
            optimizer.zero_grad()
            module(x).square().sum().backward()
            optimizer.step()
    for ours, theirs in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    agent = build()
    assert all(group['fused'] for o in agent.optimizers().values() for group in o.param_groups)
    load_optimizer_state(fused, default.state_dict())
    assert fused.param_groups[0]['fused'] is True
    torch.testing.assert_close(fused.state_dict()['state'][0]['exp_avg'],
                               default.state_dict()['state'][0]['exp_avg'])
