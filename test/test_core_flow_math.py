"""Loss mathematics of the generative policies (docs/algorithm.md, "Why one step works").

A flow trained by (weighted) flow matching on a fixed Gaussian target lands on the target's
(weighted) mean in ONE Euler step from x0 = 0; the MeanFlow JVP target equals a finite
difference; the DDPM sampler inverts the forward process exactly given a perfect noise predictor.
"""

from __future__ import annotations

import math

import pytest
import torch

from fpmd_core.config import make_config
from fpmd_core.policies import DiffusionPolicy, FlowPolicy, MeanFlowPolicy
from fpmd_core.policies.diffusion import cosine_alpha_bars

OBS_DIM, ACT_DIM = 3, 2
MU = torch.tensor([0.5, -0.3])
SIGMA = 0.1


def loss_cfg(**overrides):
    """The agent section of a config, with the MeanFlow extras switched off by default."""
    values = {'agent.adaptive_loss': False, 'agent.p_equal': 0.0}
    values.update({f'agent.{k}': v for k, v in overrides.items()})
    return make_config('cpu', overrides=values).agent


def train_on_gaussian(policy, steps: int, lr: float, batch: int = 256, weights_of=None,
                      sample=None) -> None:
    """Adam on policy.weighted_loss for a constant observation and a fixed target."""
    cfg = loss_cfg()
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    obs = torch.full((batch, OBS_DIM), 0.2)
    for step in range(steps):
        if step == steps * 3 // 4:  # a smaller last quarter lr: less Adam noise in the result
            for group in optimizer.param_groups:
                group['lr'] = lr / 10
        actions = sample(batch) if sample else MU + SIGMA * torch.randn(batch, ACT_DIM)
        weights = weights_of(actions) if weights_of else torch.ones(batch)
        loss = policy.weighted_loss(obs, actions, weights, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def one_step_action(policy) -> torch.Tensor:
    with torch.no_grad():
        return policy.generate(torch.full((1, OBS_DIM), 0.2), torch.zeros(1, ACT_DIM), 1)[0]


pytestmark = pytest.mark.usefixtures('seeded_one_thread_torch')


# --- rectified flow (FPMD-R) ---------------------------------------------------------------

def test_flow_one_euler_step_returns_target_mean():
    policy = FlowPolicy(OBS_DIM, ACT_DIM, hidden=64, layers=2)
    before = one_step_action(policy)
    assert (before - MU).abs().max() > 0.1  # untrained: not already at the answer
    train_on_gaussian(policy, steps=300, lr=3e-3)
    after = one_step_action(policy)
    assert torch.allclose(after, MU, atol=0.05), after


def test_flow_exponential_weights_tilt_the_one_step_mean():
    """The mirror-descent target pi_old(a) exp(Q(a) / lambda) with a linear Q = c . a and
    pi_old = N(m, s^2 I) is N(m + s^2 c, s^2 I): trained with w = exp(c . (a - m)) on samples of
    pi_old, one step lands on the tilted mean m + s^2 c, not on m."""
    m, s, c = torch.tensor([0.1, -0.1]), 0.3, torch.tensor([2.0, -2.0])
    policy = FlowPolicy(OBS_DIM, ACT_DIM, hidden=64, layers=2)
    train_on_gaussian(policy, steps=400, lr=3e-3,
                      sample=lambda n: m + s * torch.randn(n, ACT_DIM),
                      weights_of=lambda a: torch.exp((a - m) @ c))
    tilted = m + s * s * c
    action = one_step_action(policy)
    assert torch.allclose(action, tilted, atol=0.06), (action, tilted)
    assert (action - m).norm() > 0.2


def test_flow_generate_is_k_euler_steps():
    """generate(K) = K steps x <- x + v(x, k/K) / K from t = 0 (checked against a hand loop)."""
    policy = FlowPolicy(OBS_DIM, ACT_DIM, hidden=16, layers=1)
    obs, x0 = torch.randn(5, OBS_DIM), torch.randn(5, ACT_DIM)
    with torch.no_grad():
        x = x0.clone()
        for k in range(4):
            x = x + 0.25 * policy.velocity(obs, x, torch.full((5,), k / 4))
        torch.testing.assert_close(policy.generate(obs, x0, 4), x)


# --- MeanFlow (FPMD-M) -------------------------------------------------------------------

def test_meanflow_jvp_target_matches_central_difference():
    """du/dt along (dz, dr, dt) = (v, 0, 1) vs (u(z + h v, r, t + h) - u(z - h v, r, t - h)) / 2h,
    in float64; target = v - (t - r) du/dt."""
    policy = MeanFlowPolicy(OBS_DIM, ACT_DIM, hidden=32, layers=2).double()
    n = 16
    obs = torch.randn(n, OBS_DIM, dtype=torch.float64)
    z = torch.randn(n, ACT_DIM, dtype=torch.float64)
    r, t = torch.rand(n, 2, dtype=torch.float64).sort(dim=1).values.unbind(1)
    v = torch.randn(n, ACT_DIM, dtype=torch.float64)
    u, target = policy.jvp_target(obs, z, r, t, v)
    h = 1e-7
    with torch.no_grad():
        u_plus = policy.average_velocity(obs, z + h * v, r, t + h)
        u_minus = policy.average_velocity(obs, z - h * v, r, t - h)
        du_dt = (u_plus - u_minus) / (2 * h)
        torch.testing.assert_close(u, policy.average_velocity(obs, z, r, t), rtol=0, atol=1e-12)
    expected = v - (t - r)[:, None] * du_dt
    torch.testing.assert_close(target, expected, rtol=1e-6, atol=1e-6)
    assert not target.requires_grad  # stop-gradient on the target
    assert (target - v).abs().max() > 1e-3  # the JVP term is not trivially zero


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('output_bound', [0.0, 5.0])
def test_meanflow_hand_written_tangent_equals_torch_func_jvp(dtype, output_bound):
    """jvp_target's tangent, carried through the MLP by hand, against torch.func.jvp of
    average_velocity along (dz, dr, dt) = (v, 0, 1); u keeps the gradient of a plain forward."""
    torch.manual_seed(0)
    policy = MeanFlowPolicy(11, 3, hidden=64, layers=2, output_bound=output_bound).to(dtype)
    with torch.no_grad():
        policy.net[-1].weight.mul_(20)  # outputs reach the bound's bend
    n = 256  # above the fast mish's size threshold, as in training
    obs, z, v = (torch.randn(n, d, dtype=dtype) for d in (11, 3, 3))
    r, t = torch.rand(n, 2, dtype=dtype).sort(dim=1).values.unbind(1)
    u, target = policy.jvp_target(obs, z, r, t, v)
    u_ref, du_dt = torch.func.jvp(lambda z_, t_: policy.average_velocity(obs, z_, r, t_),
                                  (z, t), (v, torch.ones_like(t)))
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(u, u_ref, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(target, v - (t - r)[:, None] * du_dt, rtol=tolerance,
                               atol=tolerance)
    assert (du_dt.abs().max() > 1.0) and not target.requires_grad
    if output_bound:
        assert u.abs().max() > 0.5 * output_bound
    (grad,) = torch.autograd.grad(u.square().sum(), policy.net[0].weight)
    (grad_ref,) = torch.autograd.grad(policy.average_velocity(obs, z, r, t).square().sum(),
                                      policy.net[0].weight)
    torch.testing.assert_close(grad, grad_ref, rtol=tolerance, atol=tolerance)


def test_mlp_with_tangent_refuses_layers_it_cannot_differentiate():
    from fpmd_core.nets import mlp, mlp_with_tangent
    net = mlp(4, 2, 8, 1, torch.nn.ReLU)
    with pytest.raises(TypeError, match='expected Linear and Mish layers, got ReLU'):
        mlp_with_tangent(net, torch.randn(3, 4), torch.randn(3, 4))


def test_meanflow_time_sampling_orders_r_le_t():
    policy = MeanFlowPolicy(OBS_DIM, ACT_DIM, hidden=8, layers=1)
    r, t = policy.sample_times(4096, 0.0, 'cpu')
    assert (r <= t).all() and (r >= 0).all() and (t <= 1).all()
    assert (r < t).float().mean() > 0.99
    r, t = policy.sample_times(4096, 0.25, 'cpu')
    assert abs((r == t).float().mean().item() - 0.25) < 0.04


def test_meanflow_one_step_is_z1_minus_u():
    policy = MeanFlowPolicy(OBS_DIM, ACT_DIM, hidden=16, layers=1)
    obs, z1 = torch.randn(5, OBS_DIM), torch.randn(5, ACT_DIM)
    with torch.no_grad():
        expected = z1 - policy.average_velocity(obs, z1, torch.zeros(5), torch.ones(5))
        torch.testing.assert_close(policy.generate(obs, z1, 1), expected)


def test_meanflow_learns_gaussian_mean_in_one_step():
    """Trained by the MeanFlow loss (JVP target), one step a = z1 - u(z1, 0, 1) from z1 = 0
    lands on the target mean."""
    policy = MeanFlowPolicy(OBS_DIM, ACT_DIM, hidden=64, layers=2)
    before = one_step_action(policy)
    assert (before - MU).abs().max() > 0.1
    train_on_gaussian(policy, steps=300, lr=2e-3, batch=128)
    assert torch.allclose(one_step_action(policy), MU, atol=0.05), one_step_action(policy)


# --- DDPM (DPMD) ----------------------------------------------------------------------------

@pytest.mark.parametrize('steps', [5, 20])
def test_cosine_alpha_bars_decrease_inside_unit_interval(steps):
    ab = cosine_alpha_bars(steps)
    assert ab.shape == (steps,)
    assert (ab > 0).all() and (ab <= 1).all()
    assert (ab[1:] < ab[:-1]).all()
    assert ab[0] > 0.85 and ab[-1] < 0.01  # nearly clean at k = 1, nearly pure noise at k = K
    # Nichol & Dhariwal: alpha_bar(k) = f(k) / f(0), f(k) = cos((k / K + s) / (1 + s) * pi / 2)^2
    s, k = 0.008, torch.arange(1, steps, dtype=torch.float64)
    f = torch.cos((k / steps + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    torch.testing.assert_close(ab[:-1].double(), f / f0, rtol=1e-5, atol=1e-7)


class OracleDiffusion(DiffusionPolicy):
    """A perfect noise predictor for a known clean action x0."""

    x0: torch.Tensor

    def predict_noise(self, obs, x, k):
        ab = self.alpha_bars[k.long() - 1][:, None]
        return (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()


@pytest.mark.parametrize('noise_scale', [0.0, 1.0])
def test_ddpm_with_perfect_noise_predictor_recovers_x0(noise_scale):
    """Every posterior-mean step keeps x on the line through x0, and the last step (alpha_bar_prev
    = 1) returns x0 exactly, from any x_T, with or without the per-step noise."""
    policy = OracleDiffusion(OBS_DIM, ACT_DIM, hidden=8, layers=1, steps=20)
    policy.x0 = torch.rand(6, ACT_DIM) * 1.8 - 0.9
    x_T = torch.randn(6, ACT_DIM)
    with torch.no_grad():
        out = policy.generate(torch.zeros(6, OBS_DIM), x_T, noise_scale=noise_scale)
    torch.testing.assert_close(out, policy.x0, rtol=0, atol=1e-5)


def test_ddpm_posterior_mean_single_step():
    """The step from k = 2 is the DDPM posterior mean of q(x_1 | x_2, x0): the input the
    sampler feeds to the k = 1 prediction equals it."""
    seen = []

    class Recording(OracleDiffusion):
        def predict_noise(self, obs, x, k):
            seen.append((int(k[0]), x.clone()))
            return super().predict_noise(obs, x, k)

    policy = Recording(OBS_DIM, ACT_DIM, hidden=8, layers=1, steps=2)
    policy.x0 = torch.tensor([[0.3, -0.4]])
    x2 = torch.tensor([[0.7, 0.1]])
    with torch.no_grad():
        policy.generate(torch.zeros(1, OBS_DIM), x2)
    assert [k for k, _ in seen] == [2, 1]
    ab1, ab2 = policy.alpha_bars.double()
    beta2 = 1 - ab2 / ab1
    mean = (ab1.sqrt() * beta2 / (1 - ab2)) * policy.x0.double() \
        + ((1 - beta2).sqrt() * (1 - ab1) / (1 - ab2)) * x2.double()
    torch.testing.assert_close(seen[1][1].double(), mean, rtol=0, atol=1e-6)


def test_ddpm_rejects_a_different_step_count():
    policy = DiffusionPolicy(OBS_DIM, ACT_DIM, hidden=8, layers=1, steps=20)
    with pytest.raises(ValueError, match='20 steps'):
        policy.generate(torch.zeros(1, OBS_DIM), torch.zeros(1, ACT_DIM), steps=1)


class GaussianOracleDiffusion(DiffusionPolicy):
    """The exact noise predictor for actions ~ N(0, s^2): x_k ~ N(0, ab s^2 + 1 - ab), so
    E[eps | x_k] = sqrt(1 - ab) x_k / (ab s^2 + 1 - ab). Every sampler step is then linear in x
    (x0_hat stays far inside the clip), and the sample variance has a closed form."""

    data_std = 0.1

    def predict_noise(self, obs, x, k):
        ab = self.alpha_bars[k.long() - 1][:, None]
        return (1 - ab).sqrt() * x / (ab * self.data_std ** 2 + 1 - ab)


def ddpm_sample_variance(alpha_bars: torch.Tensor, data_std: float, x_T_var: float,
                         noise_scale_per_step: float) -> float:
    """Var[x_0] of the ancestral sampler with the Gaussian oracle, by the recursion
    Var_{k-1} = c_k^2 Var_k + (scale * sigma_k)^2 (no noise at the last step), where
    x_{k-1} = c_k x_k + scale * sigma_k z is the posterior mean at x0_hat = g_k x_k plus noise."""
    ab = alpha_bars.double().tolist()
    var = x_T_var
    for k in range(len(ab), 0, -1):
        a, a_prev = ab[k - 1], (ab[k - 2] if k > 1 else 1.0)
        beta = 1 - a / a_prev
        g = math.sqrt(a) * data_std ** 2 / (a * data_std ** 2 + 1 - a)
        c = (math.sqrt(a_prev) * beta * g + math.sqrt(1 - beta) * (1 - a_prev)) / (1 - a)
        posterior_var = beta * (1 - a_prev) / (1 - a)
        var = c * c * var + (noise_scale_per_step ** 2 * posterior_var if k > 1 else 0.0)
    return var


def test_ddpm_training_samples_use_the_full_posterior_sigma_at_each_step():
    """As released: x_T = 0.5 eps, then x_{k-1} = posterior mean + sigma_k z with the full
    sigma_k (not 0.5 sigma_k). The sample std matches the closed form of that sampler, and is
    clearly not the one of a sampler that also scales the per-step noise by 0.5."""
    policy = GaussianOracleDiffusion(OBS_DIM, 1, hidden=8, layers=1, steps=20)
    rows = 40_000
    with torch.no_grad():
        x = policy.generate(torch.zeros(rows, OBS_DIM), 0.5 * torch.randn(rows, 1),
                            noise_scale=0.5)
    full = math.sqrt(ddpm_sample_variance(policy.alpha_bars, 0.1, 0.25, 1.0))
    halved = math.sqrt(ddpm_sample_variance(policy.alpha_bars, 0.1, 0.25, 0.5))
    assert full > 1.3 * halved  # the two samplers are far apart: the check below can tell
    assert x.std().item() == pytest.approx(full, rel=0.02)
    assert x.mean().abs().item() < 0.01


def test_time_embedding_features_are_the_released_scaled_sinusoids():
    """Before its MLP: [sin(t f_j), cos(t f_j)] / sqrt(16) with f_j = 10000^(-j/8), j = 0..7,
    so the fastest feature turns 1 rad per unit of t (the released scaled_sinusoidal_encoding)."""
    from fpmd_core.nets import TimeEmbedding

    embedding = TimeEmbedding()
    embedding.net = torch.nn.Identity()
    t = torch.tensor([0.0, 0.3, 1.0, 7.0], dtype=torch.float64)
    freqs = torch.tensor([10_000.0 ** (-j / 8) for j in range(8)], dtype=torch.float64)
    angles = t[:, None] * freqs
    expected = torch.cat([angles.sin(), angles.cos()], dim=-1) / 4.0
    torch.testing.assert_close(embedding(t.float()).double(), expected, rtol=0, atol=1e-6)
