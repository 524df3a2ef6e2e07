"""Clipped double-Q critic shared by every agent."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..nets import mlp
from .optim import adam


class DoubleQ(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int, activation=None):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, 1, hidden, layers, activation)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden, layers, activation)

    def forward(self, obs, act) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def min_q(self, obs, act) -> torch.Tensor:
        q1, q2 = self(obs, act)
        return torch.minimum(q1, q2)


class Critic(nn.Module):
    """Online and target double-Q on the encoder's features, with one optimiser for both: the
    critic loss is the only loss that trains the encoder (DrQ-v2). The target critic reads the
    online encoder's features (no target encoder), as in DrQ-v2."""

    def __init__(self, encoder: nn.Module, act_dim: int, cfg, activation=None):
        super().__init__()
        self.encoder = encoder
        self.online = DoubleQ(encoder.out_dim, act_dim, cfg.hidden, cfg.layers, activation)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = adam(
            [*self.online.parameters(), *self.encoder.parameters()], lr=cfg.critic_lr)


def td_target(critic: Critic, batch: dict, next_value_bonus: torch.Tensor | float,
              next_actions: torch.Tensor, cfg) -> torch.Tensor:
    """y = reward_scale * r + gamma * (1 - terminated) * (min Q_target(s', a') + bonus)."""
    with torch.no_grad():
        next_q = critic.target.min_q(batch["next_obs"], next_actions) + next_value_bonus
        return cfg.reward_scale * batch["rewards"] + cfg.gamma * (1 - batch["terminated"]) * next_q


def update_critic(critic: Critic, batch: dict, target: torch.Tensor,
                  adam_steps: int = 1) -> dict[str, float]:
    """One gradient of the double-Q loss, applied by `adam_steps` Adam steps (the released
    FPMD and DPMD code applies each critic gradient twice)."""
    q1, q2 = critic.online(batch["obs"], batch["actions"])
    loss = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()
    check_finite("critic_loss", loss)
    critic.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for _ in range(adam_steps):
        critic.optimizer.step()
    return {"loss/critic": loss.item(), "q/mean": q1.mean().item()}


@torch.no_grad()
def polyak(target: nn.Module, online: nn.Module, tau: float) -> None:
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o, tau)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or Inf; training stops and the last good checkpoint is kept."""


def check_finite(name: str, value: torch.Tensor) -> None:
    if not torch.isfinite(value).all():
        raise NonFiniteLossError(f"{name} is {value.item()}: training diverged")
