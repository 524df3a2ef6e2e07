"""Mirror-descent weights, their running Q normalisation, the temperature rule and the actor
learning-rate schedule (docs/algorithm.md, "One gradient step")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fpmd_core.agents import MirrorDescentAgent
from fpmd_core.agents.fpmd import (
    actor_learning_rate,
    advantage_scores,
    budget_alpha,
    effective_sample_fraction,
    exp_weights,
    exploration_entropy,
    normalised_q,
    target_entropy_alpha,
)
from fpmd_core.agents.sampling import sample_actions
from fpmd_core.config import make_config

OBS_DIM = 4


pytestmark = pytest.mark.usefixtures('seeded_one_thread_torch')


def make_agent(act_dim: int = 2, gradient_budget: int = 0, **agent):
    overrides = {'agent.algo': 'fpmd_r', 'agent.hidden': 32, 'agent.layers': 2,
                 'agent.particles': 4, 'agent.flow_steps': 2, 'agent.batch_size': 16}
    overrides.update({f'agent.{k}': v for k, v in agent.items()})
    cfg = make_config('cpu', overrides=overrides)
    return MirrorDescentAgent(OBS_DIM, act_dim, cfg.agent, torch.device('cpu'), gradient_budget)


def make_batch(n: int = 16, act_dim: int = 2) -> dict:
    return {'obs': torch.randn(n, OBS_DIM), 'actions': torch.rand(n, act_dim) * 2 - 1,
            'rewards': torch.randn(n), 'next_obs': torch.randn(n, OBS_DIM),
            'terminated': torch.zeros(n)}


# --- weights -------------------------------------------------------------------------------

def mirror_descent_weights(q, q_mean, q_std, alpha, clip, form):
    """The weights of `weight_form` normalized or released, as the agent composes them."""
    return exp_weights(normalised_q(q, q_mean, q_std, form), alpha, clip)


def advantage_weights(q, q_baseline, advantage_std, alpha, clip):
    """The weights of `weight_form: advantage`, as the agent composes them."""
    return exp_weights(advantage_scores(q, q_baseline, advantage_std), alpha, clip)


def test_normalized_weights_equal_the_formula_by_hand():
    q = np.array([-50.0, -3.0, 0.0, 1.5, 2.0, 7.0, 40.0])
    mu, sigma, alpha = 1.0, 2.0, 0.7
    expected = np.exp(np.clip((q - mu) / sigma, -3, 3) / alpha)
    f64 = dict(dtype=torch.float64)
    got = mirror_descent_weights(torch.tensor(q), torch.tensor(mu, **f64),
                                 torch.tensor(sigma, **f64), torch.tensor(alpha, **f64), 3.0,
                                 'normalized')
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_released_weights_use_q_minus_mu_over_sigma():
    """The released code's operator precedence: q - mu / sigma, not (q - mu) / sigma."""
    q = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    mu, sigma, alpha = (torch.tensor(x, dtype=torch.float64) for x in (2.0, 4.0, 2.0))
    released = mirror_descent_weights(q, mu, sigma, alpha, 3.0, 'released')
    expected = np.exp(np.clip(q.numpy() - 2.0 / 4.0, -3, 3) / 2.0)
    np.testing.assert_allclose(released.numpy(), expected, rtol=1e-12)
    normalized = mirror_descent_weights(q, mu, sigma, alpha, 3.0, 'normalized')
    assert not torch.allclose(released, normalized)


def test_normalised_q_refuses_a_form_it_does_not_compute():
    """`advantage` needs a baseline: falling through to another form's formula would be wrong."""
    one = torch.tensor(1.0)
    with pytest.raises(ValueError, match="form 'advantage'; expected normalized or released"):
        normalised_q(one, one, one, 'advantage')


@pytest.mark.parametrize('alpha', [0.5, 5.0])
def test_weights_saturate_at_exp_of_clip_over_alpha(alpha):
    q = torch.tensor([-1e9, -1e3, 1e3, 1e9])
    w = mirror_descent_weights(q, torch.tensor(0.0), torch.tensor(1.0), torch.tensor(alpha),
                               3.0, 'normalized')
    lo, hi = math.exp(-3 / alpha), math.exp(3 / alpha)
    torch.testing.assert_close(w, torch.tensor([lo, lo, hi, hi]))
    # a different clip moves the saturation level
    w2 = mirror_descent_weights(q, torch.tensor(0.0), torch.tensor(1.0), torch.tensor(alpha),
                                1.0, 'normalized')
    torch.testing.assert_close(w2[-1], torch.tensor(math.exp(1 / alpha)))


def test_weights_use_the_running_q_statistics_before_their_ema_step():
    """As released: the weights of a gradient step use (mu, sigma) as they were (start: 0, 1);
    then mu and sigma move at rate q_stat_rate toward the batch mean and std of min(Q1, Q2)."""
    rate = 0.001
    agent = make_agent(q_stat_rate=rate)
    assert agent.q_mean.item() == 0.0 and agent.q_std.item() == 1.0
    obs, actions = torch.randn(32, OBS_DIM), torch.rand(32, 2) * 2 - 1
    with torch.no_grad():  # make Q clearly non-standard so the EMA has somewhere to go
        agent.critic.online.q1[-1].bias.fill_(10.0)
        agent.critic.online.q2[-1].bias.fill_(10.0)
        q = agent.critic.online.min_q(obs, actions)
    mean, std = q.mean().item(), q.std().item()
    assert mean > 5
    weights = agent.weights_and_q_statistics(obs, actions)
    torch.testing.assert_close(weights, torch.exp(q.clamp(-3, 3) / agent.alpha))  # (0, 1)
    assert agent.q_mean.item() == pytest.approx(rate * mean, rel=1e-5)
    assert agent.q_std.item() == pytest.approx((1 - rate) + rate * std, rel=1e-6)
    # the next call's weights use the moved statistics, and the EMA continues from them
    m1, s1 = agent.q_mean.item(), agent.q_std.item()
    weights = agent.weights_and_q_statistics(obs, actions)
    torch.testing.assert_close(weights, torch.exp(((q - m1) / s1).clamp(-3, 3) / agent.alpha))
    assert agent.q_mean.item() == pytest.approx((1 - rate) * m1 + rate * mean, rel=1e-5)
    assert agent.q_std.item() == pytest.approx((1 - rate) * s1 + rate * std, rel=1e-6)


def test_advantage_weights_equal_the_formula_by_hand():
    q = np.array([-4.0, 0.0, 0.3, 2.0, 9.0])
    baseline = np.array([-4.5, 1.0, 0.3, 1.0, 1.0])
    sigma, alpha = 0.5, 0.7
    expected = np.exp(np.clip((q - baseline) / sigma, -3, 3) / alpha)
    f64 = dict(dtype=torch.float64)
    got = advantage_weights(torch.tensor(q), torch.tensor(baseline), torch.tensor(sigma, **f64),
                            torch.tensor(alpha, **f64), 3.0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_advantage_weights_ignore_how_valuable_each_state_is():
    """A per-state offset moves Q(s, a) and the baseline Q(s, a_det) alike: the advantage
    weights stay, the normalised ones follow the states' values."""
    q, baseline = torch.tensor([1.0, 1.5, 0.5, 1.2]), torch.tensor([1.2, 1.0, 0.5, 1.0])
    state_value = torch.tensor([0.0, 5.0, -5.0, 20.0])
    one, sigma, alpha = torch.tensor(1.0), torch.tensor(0.4), torch.tensor(0.5)
    torch.testing.assert_close(advantage_weights(q + state_value, baseline + state_value,
                                                 sigma, alpha, 3.0),
                               advantage_weights(q, baseline, sigma, alpha, 3.0))
    normalized = [mirror_descent_weights(x, torch.tensor(0.0), one, alpha, 3.0, 'normalized')
                  for x in (q, q + state_value)]
    assert not torch.allclose(*normalized)


def test_equal_advantages_give_equal_weights_even_with_zero_spread():
    baseline = torch.tensor([3.0, -1.0, 7.0])
    for advantage, sigma in [(0.0, 0.0), (0.0, 1.0), (0.25, 0.5)]:
        w = advantage_weights(baseline + advantage, baseline, torch.tensor(sigma),
                              torch.tensor(0.8), 3.0)
        assert torch.isfinite(w).all()
        torch.testing.assert_close(w, torch.full_like(w, w[0].item()))


def test_advantage_form_compares_with_the_online_policy_action_from_zero_noise():
    """a_det = the online policy's action from x0 = 0 (training flow steps); sigma_A starts at
    the first batch's std of A, then moves at rate q_stat_rate before the weights use it; mu and
    sigma of Q are still tracked."""
    rate = 0.1
    agent = make_agent(weight_form='advantage', q_stat_rate=rate)
    assert agent.advantage_std.item() == 0.0
    obs, actions = torch.randn(32, OBS_DIM), torch.rand(32, 2) * 2 - 1
    with torch.no_grad():
        zeros = torch.zeros(32, 2)
        a_det = agent.policy.generate(obs, zeros, agent.steps).clamp(-1, 1)
        q = agent.critic.online.min_q(obs, actions)
        advantage = q - agent.critic.online.min_q(obs, a_det)
    first = advantage.std()
    weights = agent.weights_and_q_statistics(obs, actions)
    assert agent.advantage_std.item() == pytest.approx(first.item(), rel=1e-6)
    torch.testing.assert_close(weights, torch.exp((advantage / first).clamp(-3, 3) / agent.alpha))
    assert agent.q_mean.item() == pytest.approx(rate * q.mean().item(), rel=1e-5)
    # The next batch: sigma_A moves toward its std first.
    obs2, actions2 = torch.randn(32, OBS_DIM), torch.rand(32, 2) * 2 - 1
    with torch.no_grad():
        a_det2 = agent.policy.generate(obs2, torch.zeros(32, 2), agent.steps).clamp(-1, 1)
        advantage2 = (agent.critic.online.min_q(obs2, actions2)
                      - agent.critic.online.min_q(obs2, a_det2))
    sigma = (1 - rate) * first + rate * advantage2.std()
    weights = agent.weights_and_q_statistics(obs2, actions2)
    assert agent.advantage_std.item() == pytest.approx(sigma.item(), rel=1e-5)
    torch.testing.assert_close(weights,
                               torch.exp((advantage2 / sigma).clamp(-3, 3) / agent.alpha))


def test_only_the_advantage_form_carries_its_running_std():
    """So checkpoints of the other forms keep exactly their tensors."""
    assert 'advantage_std' in make_agent(weight_form='advantage').state_dict()
    assert 'advantage_std' not in make_agent().state_dict()


def test_actor_samples_are_the_td_targets_best_of_n_samples_by_default():
    agent = make_agent()
    target_actions = torch.rand(8, 2) * 2 - 1
    assert agent.actor_samples(torch.randn(8, OBS_DIM), target_actions) is target_actions


def test_policy_actor_samples_are_one_online_policy_sample_with_exploration_noise():
    """pi_old of the mirror-descent step: no best-of-N choice by the critic."""
    agent = make_agent(actor_samples='policy')
    obs = torch.randn(64, OBS_DIM)
    torch.manual_seed(5)
    got = agent.actor_samples(obs, torch.zeros(64, 2))
    torch.manual_seed(5)
    expected = sample_actions(agent.policy, None, obs, agent.steps, 1, agent.cfg.noise_scale_init,
                              agent.cfg.explore_noise * agent.alpha)
    torch.testing.assert_close(got, expected)


class RecordingAgent(MirrorDescentAgent):
    """Records the samples the actor step and the weights receive."""

    def actor_samples(self, next_obs, target_actions):
        self.chosen = super().actor_samples(next_obs, target_actions)
        self.target_actions = target_actions
        return self.chosen

    def weights_and_q_statistics(self, obs, actions):
        self.weighed = actions
        return super().weights_and_q_statistics(obs, actions)

    def update_actor(self, obs, actions, weights):
        self.trained_on = actions
        return super().update_actor(obs, actions, weights)


@pytest.mark.parametrize('actor_samples', ['best_of_n', 'policy'])
def test_update_weighs_and_trains_the_actor_on_its_actor_samples(actor_samples):
    overrides = {'agent.algo': 'fpmd_m', 'agent.hidden': 32, 'agent.layers': 2,
                 'agent.particles': 4, 'agent.batch_size': 16, 'agent.actor_interval': 1,
                 'agent.actor_samples': actor_samples}
    cfg = make_config('cpu', overrides=overrides)
    agent = RecordingAgent(OBS_DIM, 2, cfg.agent, torch.device('cpu'), gradient_budget=10)
    agent.update(make_batch())
    assert agent.weighed is agent.chosen and agent.trained_on is agent.chosen
    assert (agent.chosen is agent.target_actions) == (actor_samples == 'best_of_n')


def test_q_statistics_move_on_every_gradient_step_not_only_actor_steps():
    agent = make_agent(actor_interval=3, q_stat_rate=0.5)
    means = [agent.q_mean.item()]
    for _ in range(3):
        agent.update(make_batch())
        means.append(agent.q_mean.item())
    assert agent.actor_updates == 1
    assert all(a != b for a, b in zip(means, means[1:], strict=False))


def test_q_stat_rate_one_tracks_the_batch_exactly():
    agent = make_agent(q_stat_rate=1.0)
    obs, actions = torch.randn(32, OBS_DIM), torch.rand(32, 2) * 2 - 1
    q = agent.critic.online.min_q(obs, actions).detach()
    agent.weights_and_q_statistics(obs, actions)
    assert agent.q_mean.item() == pytest.approx(q.mean().item(), rel=1e-5, abs=1e-7)
    assert agent.q_std.item() == pytest.approx(q.std().item(), rel=1e-5)


def test_update_actor_reports_the_weights_it_was_given():
    agent = make_agent()
    obs, actions = torch.randn(16, OBS_DIM), torch.rand(16, 2) * 2 - 1
    weights = torch.linspace(0.5, 4.0, 16)
    metrics = agent.update_actor(obs, actions, weights)
    assert metrics['weights/max'] == pytest.approx(4.0)
    assert metrics['weights/min'] == pytest.approx(0.5)
    assert metrics['weights/std'] == pytest.approx(weights.std().item())
    assert metrics['weights/ess'] == pytest.approx(
        weights.sum().item() ** 2 / (16 * (weights ** 2).sum().item()))


def test_effective_sample_fraction_is_one_for_equal_weights_and_one_over_n_for_one():
    assert effective_sample_fraction(torch.full((8,), 3.0)) == pytest.approx(1.0)
    assert effective_sample_fraction(torch.tensor([5.0, 0, 0, 0])) == pytest.approx(0.25)
    # Two of four samples carrying the step: half the batch.
    assert effective_sample_fraction(torch.tensor([2.0, 2.0, 0, 0])) == pytest.approx(0.5)


# --- temperature ---------------------------------------------------------------------------

@pytest.mark.parametrize(('alpha', 'dim'), [(5.0, 1), (0.54, 3), (1.0, 6)])
def test_exploration_entropy_is_gaussian_entropy(alpha, dim):
    expected = 0.5 * dim * math.log(2 * math.pi * math.e * (0.1 * alpha) ** 2)
    got = exploration_entropy(torch.tensor(alpha, dtype=torch.float64), dim, 0.1)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # = the entropy torch computes for N(0, (0.1 alpha)^2 I)
    normal = torch.distributions.Normal(torch.zeros(dim), torch.full((dim,), 0.1 * alpha))
    assert normal.entropy().sum().item() == pytest.approx(expected, rel=1e-5)


def test_alpha_changes_only_every_alpha_interval_gradient_steps():
    agent = make_agent(alpha_interval=3, actor_interval=2)
    alphas = [agent.alpha.item()]
    batch = make_batch()
    for _ in range(7):
        agent.update(batch)
        alphas.append(agent.alpha.item())
    changed = [i for i in range(1, 8) if alphas[i] != alphas[i - 1]]
    assert changed == [3, 6]
    assert agent.gradient_steps == 7 and agent.actor_updates == 3


def test_first_temperature_step_lowers_log_alpha_by_exactly_alpha_lr():
    """At alpha = 5 the entropy of the noise exceeds the target, so the gradient is positive and
    Adam's first step (m/sqrt(v) = sign(g)) moves log alpha down by exactly alpha_lr."""
    agent = make_agent(alpha_init=5.0, alpha_lr=7e-3)
    before = agent.log_alpha.item()
    assert before == pytest.approx(math.log(5.0))
    metrics = agent.update_temperature()
    assert agent.log_alpha.item() - before == pytest.approx(-7e-3, rel=1e-5)
    assert metrics['alpha'] == pytest.approx(5.0 * math.exp(-7e-3), rel=1e-6)


@pytest.mark.parametrize('act_dim', [1, 3])
def test_temperature_converges_to_the_closed_form_fixed_point(act_dim):
    """H(alpha*) = H_target: 0.5 d log(2 pi e (0.1 alpha)^2) = -1.5 d, so
    alpha* = sqrt(exp(-3) / (2 pi e 0.01)) ~= 0.54, whatever d."""
    agent = make_agent(act_dim=act_dim, alpha_init=5.0, alpha_lr=7e-3)
    fixed_point = math.sqrt(math.exp(-2 * 1.5) / (2 * math.pi * math.e * 0.01))
    assert fixed_point == pytest.approx(0.54, abs=0.005)
    alphas = np.array([agent.update_temperature()['alpha'] for _ in range(1500)])
    # an annealing schedule: alpha falls monotonically from 5 ...
    assert (np.diff(alphas) <= 0).all()
    assert alphas[300] < 1.2  # ... about 7e-3 in log alpha per step while far from alpha*
    # ... and settles on alpha* without overshooting it
    assert alphas.min() > fixed_point * (1 - 1e-3)
    assert alphas[-1] == pytest.approx(fixed_point, rel=1e-3)


# --- the budget temperature schedule --------------------------------------------------------

@pytest.mark.parametrize(('scale', 'noise'), [(1.5, 0.1), (1.0, 0.1), (1.5, 0.2)])
@pytest.mark.parametrize('act_dim', [1, 3])
def test_target_entropy_alpha_is_the_entropy_rules_fixed_point(scale, noise, act_dim):
    """The budget schedule ends where the paper's rule settles: H(alpha*) = -scale * d."""
    alpha = target_entropy_alpha(scale, noise)
    entropy = exploration_entropy(torch.tensor(alpha, dtype=torch.float64), act_dim, noise)
    assert entropy.item() == pytest.approx(-scale * act_dim, rel=1e-9)
    if (scale, noise) == (1.5, 0.1):
        assert alpha == pytest.approx(0.54, abs=0.005)


def test_budget_alpha_closed_form():
    """log alpha is linear in the gradient step from log alpha_init to log alpha_final, which it
    keeps after `anneal_steps`."""
    init, final, steps = 5.0, 0.54, 1000
    alphas = np.array([budget_alpha(k, steps, init, final) for k in range(0, 1501)])
    assert alphas[0] == pytest.approx(init, rel=1e-12)
    assert alphas[500] == pytest.approx(math.sqrt(init * final), rel=1e-12)  # geometric mean
    assert alphas[250] == pytest.approx(init ** 0.75 * final ** 0.25, rel=1e-12)
    np.testing.assert_allclose(alphas[1000:], final, rtol=1e-12)
    np.testing.assert_allclose(np.diff(np.log(alphas[:1001])), math.log(final / init) / steps,
                               rtol=1e-6)
    # the other way too: an alpha_init below alpha* rises to it
    assert budget_alpha(steps, steps, 0.1, final) == pytest.approx(final, rel=1e-12)


def test_budget_schedule_sets_alpha_every_gradient_step_from_the_closed_form():
    agent = make_agent(gradient_budget=10, alpha_schedule='budget', alpha_anneal_fraction=0.5,
                       alpha_init=4.0, alpha_interval=3)
    final = target_entropy_alpha(1.5, 0.1)
    assert agent.alpha_anneal_steps == 5
    batch = make_batch()
    for step in range(1, 8):
        metrics = agent.update(batch)
        expected = budget_alpha(step, 5, 4.0, final)
        assert metrics['alpha'] == pytest.approx(expected, rel=1e-12)
        assert agent.alpha.item() == pytest.approx(expected, rel=1e-6)
    assert agent.alpha.item() == pytest.approx(final, rel=1e-6)  # from step 5 on
    assert agent.alpha_optimizer.state_dict()['state'] == {}  # the entropy rule took no step


def test_budget_schedule_without_the_runs_length_is_an_error():
    agent = make_agent(alpha_schedule='budget')  # made to act, not to train
    agent.act(np.zeros((1, OBS_DIM), np.float32), 'deploy')
    with pytest.raises(ValueError, match="alpha_schedule 'budget'.*gradient_budget"):
        agent.update(make_batch())


def test_sac_agent_is_not_affected_by_mirror_descent_temperature():
    """SAC's temperature starts at sac_alpha_init and follows its own rule (one step every
    gradient step); FPMD's alpha_init, alpha_lr and alpha_interval change nothing in it."""
    from fpmd_core.agents import make_agent as make_any

    def sac_after_updates(**mirror_descent):
        overrides = {'agent.algo': 'sac', 'agent.hidden': 16, 'agent.sac_alpha_init': 0.3,
                     'agent.batch_size': 16}
        overrides.update({f'agent.{k}': v for k, v in mirror_descent.items()})
        torch.manual_seed(5)
        agent = make_any(OBS_DIM, 2, make_config('cpu', overrides=overrides).agent,
                         torch.device('cpu'))
        assert agent.alpha.item() == pytest.approx(0.3)
        alphas = []
        for _ in range(3):
            agent.update(make_batch())
            alphas.append(agent.alpha.item())
        return alphas, agent.state_dict()

    alphas, state = sac_after_updates()
    assert len(set(alphas)) == 3 and 0.3 not in alphas  # it moved on every gradient step
    other_alphas, other_state = sac_after_updates(alpha_init=0.01, alpha_lr=0.5,
                                                  alpha_interval=1)
    assert other_alphas == alphas
    assert all(torch.equal(state[k], other_state[k]) for k in state)


# --- actor learning rate -------------------------------------------------------------------

def test_actor_learning_rate_decays_linearly_after_the_start():
    cfg = make_config('paper').agent
    assert actor_learning_rate(0, cfg) == pytest.approx(3e-4)
    assert actor_learning_rate(25_000, cfg) == pytest.approx(3e-4)
    assert actor_learning_rate(50_000, cfg) == pytest.approx(3e-4 + 0.5 * (3e-5 - 3e-4))
    assert actor_learning_rate(75_000, cfg) == pytest.approx(3e-5)
    assert actor_learning_rate(10**7, cfg) == pytest.approx(3e-5)


def test_update_actor_applies_the_scheduled_learning_rate():
    agent = make_agent(lr_decay_start=1, lr_decay_length=2, actor_lr=1e-3,
                       actor_lr_final=1e-4)
    obs, actions = torch.randn(8, OBS_DIM), torch.rand(8, 2) * 2 - 1
    lrs = []
    for _ in range(4):
        agent.update_actor(obs, actions, torch.ones(8))
        lrs.append(agent.policy_optimizer.param_groups[0]['lr'])
    assert lrs == pytest.approx([1e-3, 5.5e-4, 1e-4, 1e-4])
