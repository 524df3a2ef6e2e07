"""Tanh-Gaussian actor (SAC baseline)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nets import mlp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class GaussianPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int, activation=None):
        super().__init__()
        self.act_dim = act_dim
        self.net = mlp(obs_dim, 2 * act_dim, hidden, layers, activation)

    def _mean_log_std(self, obs):
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised tanh-Gaussian sample and its log-probability."""
        mean, log_std = self._mean_log_std(obs)
        std = log_std.exp()
        pre_tanh = mean + std * torch.randn_like(mean)
        action = torch.tanh(pre_tanh)
        log_prob = (-0.5 * ((pre_tanh - mean) / std).pow(2) - log_std
                    - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log |d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), numerically stable.
        log_det = 2 * (math.log(2) - pre_tanh - nn.functional.softplus(-2 * pre_tanh))
        log_prob = log_prob - log_det.sum(-1)
        return action, log_prob

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self._mean_log_std(obs)[0])
