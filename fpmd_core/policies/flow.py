"""Rectified-flow policy (FPMD-R): velocity net v(s, x, t), noise at t = 0, action at t = 1."""

from __future__ import annotations

import torch
from torch import nn

from ..nets import OneStepFromZero, TimeEmbedding, bound, mlp


class FlowPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int,
                 output_bound: float = 0.0):
        super().__init__()
        self.act_dim = act_dim
        self.output_bound = output_bound
        self.time = TimeEmbedding()
        self.net = mlp(obs_dim + act_dim + self.time.out_dim, act_dim, hidden, layers)

    def velocity(self, obs: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        time = self.time(t).expand(x.shape[0], -1)
        out = self.net(torch.cat([obs, x, time], dim=-1))
        return bound(out, self.output_bound)

    def generate(self, obs: torch.Tensor, x_init: torch.Tensor, steps: int,
                 noise_scale: float = 0.0) -> torch.Tensor:
        """K Euler steps of dx/dt = v from t = 0 to 1 (an ODE: noise_scale is unused)."""
        x, dt = x_init, 1.0 / steps
        for k in range(steps):
            # One shared time per step: the embedding is computed once (and is a constant the
            # ONNX exporter folds away), not once per row.
            t = torch.full((1,), k * dt, dtype=x.dtype, device=x.device)
            x = x + dt * self.velocity(obs, x, t)
        return x

    @torch.no_grad()
    def one_step_from_zero(self) -> nn.Module:
        """The deploy action generate(obs, 0, 1) = v(s, 0, 0) as one MLP call on obs."""
        device = self.net[0].weight.device
        constant = torch.cat([torch.zeros(self.act_dim, device=device),
                              self.time(torch.zeros(1, device=device))[0]])
        return OneStepFromZero(self.net, constant, self.output_bound, sign=1.0)

    def weighted_loss(self, obs: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor,
                      cfg) -> torch.Tensor:
        """L_R = mean[w * ||v(s, a_t, t) - (a - eps)||^2], a_t = (1 - t) eps + t a."""
        eps = torch.randn_like(actions)
        t = torch.rand(actions.shape[0], device=actions.device)
        x_t = (1 - t[:, None]) * eps + t[:, None] * actions
        error = (self.velocity(obs, x_t, t) - (actions - eps)).pow(2)
        return (weights[:, None] * error).mean()
