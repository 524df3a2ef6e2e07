"""MeanFlow policy (FPMD-M): average-velocity net u(s, z, r, t).

MeanFlow's own convention: action (data) at t = 0, noise at t = 1, z_t = (1 - t) a + t eps,
instantaneous velocity v = eps - a. One step: a = z_1 - u(s, z_1, 0, 1).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nets import OneStepFromZero, TimeEmbedding, bound, bound_with_tangent, mlp, mlp_with_tangent


class MeanFlowPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int,
                 output_bound: float = 0.0):
        super().__init__()
        self.act_dim = act_dim
        self.output_bound = output_bound
        self.r_time = TimeEmbedding()
        self.t_time = TimeEmbedding()
        in_dim = obs_dim + act_dim + self.r_time.out_dim + self.t_time.out_dim
        self.net = mlp(in_dim, act_dim, hidden, layers)

    def average_velocity(self, obs, z, r, t) -> torch.Tensor:
        rows = z.shape[0]
        times = [self.r_time(r).expand(rows, -1), self.t_time(t).expand(rows, -1)]
        out = self.net(torch.cat([obs, z, *times], dim=-1))
        return bound(out, self.output_bound)

    def generate(self, obs: torch.Tensor, x_init: torch.Tensor, steps: int,
                 noise_scale: float = 0.0) -> torch.Tensor:
        """`steps` jumps z_r = z_t - (t - r) u(z_t, r, t) from t = 1 to 0 (noise_scale unused)."""
        z = x_init
        for k in range(steps, 0, -1):
            # One shared (r, t) per step: embeddings computed once, folded as ONNX constants.
            t = torch.full((1,), k / steps, dtype=z.dtype, device=z.device)
            r = t - 1.0 / steps
            z = z - (t - r)[:, None] * self.average_velocity(obs, z, r, t)
        return z

    @torch.no_grad()
    def one_step_from_zero(self) -> nn.Module:
        """The deploy action generate(obs, 0, 1) = -u(s, 0, 0, 1) as one MLP call on obs."""
        device = self.net[0].weight.device
        zero, one = torch.zeros(1, device=device), torch.ones(1, device=device)
        constant = torch.cat([torch.zeros(self.act_dim, device=device),
                              self.r_time(zero)[0], self.t_time(one)[0]])
        return OneStepFromZero(self.net, constant, self.output_bound, sign=-1.0)

    def sample_times(self, n: int, p_equal: float, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Two sorted U(0,1) draws (r <= t); with probability p_equal, r = t."""
        times = torch.rand(n, 2, device=device).sort(dim=1).values
        r, t = times[:, 0], times[:, 1]
        equal = torch.rand(n, device=device) < p_equal
        return torch.where(equal, t, r), t

    def jvp_target(self, obs, z, r, t, v) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, stopgrad(v - (t - r) du/dt)) with du/dt along (dz, dr, dt) = (v, 0, 1): the
        directional derivative of `average_velocity`, its tangent carried through the same
        pass by hand (`nets.mlp_with_tangent`; torch.autograd.forward_ad gives the same numbers
        and made an FPMD-M actor update 2.2 times as costly on one CPU thread)."""
        rows = z.shape[0]
        r_features = self.r_time(r).expand(rows, -1)
        t_features, dt_features = self.t_time.forward_with_tangent(t, torch.ones_like(t))
        inputs = torch.cat([obs, z, r_features, t_features.expand(rows, -1)], dim=-1)
        tangents = torch.cat([torch.zeros_like(obs), v, torch.zeros_like(r_features),
                              dt_features.expand(rows, -1)], dim=-1)
        u, du_dt = bound_with_tangent(*mlp_with_tangent(self.net, inputs, tangents),
                                      self.output_bound)
        target = v - (t - r)[:, None] * du_dt
        return u, target.detach()

    def weighted_loss(self, obs, actions, weights, cfg) -> torch.Tensor:
        """L_M = mean[w * (u - stopgrad(v - (t - r) du/dt))^2], optionally adaptively weighted."""
        eps = torch.randn_like(actions)
        r, t = self.sample_times(actions.shape[0], cfg.p_equal, actions.device)
        z_t = (1 - t[:, None]) * actions + t[:, None] * eps
        u, target = self.jvp_target(obs, z_t, r, t, eps - actions)
        error = (u - target).pow(2).sum(dim=-1)
        if cfg.adaptive_loss:
            # MeanFlow's adaptive weighting keeps the loss scale near 1 as the error grows.
            error = error / (error.detach() + cfg.adaptive_c).pow(cfg.adaptive_p)
        return (weights * error).mean() / actions.shape[1]
