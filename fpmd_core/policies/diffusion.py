"""DDPM epsilon-prediction policy (DPMD baseline): cosine schedule, x0 clipped at each step."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nets import TimeEmbedding, bound, mlp


def cosine_alpha_bars(steps: int, s: float = 0.008) -> torch.Tensor:
    """alpha_bar at k = 1..steps (Nichol & Dhariwal), betas clipped at 0.999."""
    x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
    f = torch.cos(((x / steps) + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0).float()


class DiffusionPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int, steps: int = 20,
                 output_bound: float = 0.0):
        super().__init__()
        self.act_dim = act_dim
        self.steps = steps
        self.output_bound = output_bound
        self.time = TimeEmbedding()
        self.net = mlp(obs_dim + act_dim + self.time.out_dim, act_dim, hidden, layers)
        alpha_bars = cosine_alpha_bars(steps)
        self.register_buffer("alpha_bars", alpha_bars)
        prev = torch.cat([torch.ones(1), alpha_bars[:-1]])
        self.register_buffer("alpha_bars_prev", prev)

    def predict_noise(self, obs, x, k: torch.Tensor) -> torch.Tensor:
        """k: step index 1..steps (as float), embedded as the released code's index k - 1."""
        time = self.time(k - 1).expand(x.shape[0], -1)
        out = self.net(torch.cat([obs, x, time], dim=-1))
        return bound(out, self.output_bound)

    def generate(self, obs: torch.Tensor, x_init: torch.Tensor, steps: int | None = None,
                 noise_scale: float = 0.0) -> torch.Tensor:
        """Ancestral DDPM from x_T = x_init over the policy's own `self.steps` (`steps` must
        match). noise_scale > 0 (training-time sampling; the caller already drew x_T =
        noise_scale * eps) adds the full posterior noise sigma_k * z at every step but the last,
        as released: scaling it too would shrink the policy's spread below what it fitted.
        noise_scale 0 takes the posterior mean at every step (deterministic: deploy mode)."""
        if steps is not None and steps != self.steps:
            raise ValueError(f"DiffusionPolicy has {self.steps} steps, asked for {steps}")
        x = x_init
        for k in range(self.steps, 0, -1):
            ab, ab_prev = self.alpha_bars[k - 1], self.alpha_bars_prev[k - 1]
            kk = torch.full((1,), float(k), dtype=x.dtype, device=x.device)
            eps = self.predict_noise(obs, x, kk)
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0)
            beta = 1 - ab / ab_prev
            mean = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x) / (1 - ab)
            if noise_scale > 0 and k > 1:
                var = beta * (1 - ab_prev) / (1 - ab)
                mean = mean + var.sqrt() * torch.randn_like(mean)
            x = mean
        return x

    def weighted_loss(self, obs, actions, weights, cfg) -> torch.Tensor:
        """mean[w * ||eps_theta(sqrt(ab) a + sqrt(1 - ab) eps, k) - eps||^2]."""
        n = actions.shape[0]
        k = torch.randint(1, self.steps + 1, (n,), device=actions.device)
        ab = self.alpha_bars[k - 1][:, None]
        eps = torch.randn_like(actions)
        x_k = ab.sqrt() * actions + (1 - ab).sqrt() * eps
        error = (self.predict_noise(obs, x_k, k.float()) - eps).pow(2)
        return (weights[:, None] * error).mean()
