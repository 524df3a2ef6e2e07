"""SAC baseline, the standard recipe (stable-baselines3, CleanRL): tanh-Gaussian actor,
automatic entropy tuning, ReLU networks, and every gradient step one critic step, one actor
step, one temperature step and the Polyak update of the target critics."""

from __future__ import annotations

import math

import torch

from ..policies import GaussianPolicy
from .base import Agent
from .critic import check_finite, polyak, td_target, update_critic
from .optim import adam


class SACAgent(Agent):
    algo = "sac"
    activation = torch.nn.ReLU

    def __init__(self, obs_shape, act_dim: int, cfg, device: torch.device):
        super().__init__(obs_shape, act_dim, cfg, device)
        self.policy = GaussianPolicy(self.obs_dim, act_dim, cfg.hidden, cfg.layers,
                                     self.activation)
        rates = self.learning_rates()
        self.policy_optimizer = adam(self.policy.parameters(), lr=rates["policy"])
        self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(cfg.sac_alpha_init)))
        self.alpha_optimizer = adam([self.log_alpha], lr=rates["alpha"])
        self.target_entropy = -cfg.sac_target_entropy_scale * act_dim
        self.to(device)

    def learning_rates(self) -> dict[str, float]:
        """The temperature learns at the actor's rate, as in stable-baselines3."""
        return super().learning_rates() | {"alpha": self.cfg.actor_lr}

    def explore(self, obs):
        return self.policy.sample(obs)[0]

    def evaluate(self, obs):
        return self.policy.mean_action(obs)

    def deploy_policy(self) -> torch.nn.Module:
        return MeanAction(self.policy)

    def update(self, batch: dict) -> dict[str, float]:
        cfg = self.cfg
        batch = self.encode_batch(batch)
        with torch.no_grad():
            next_actions, next_log_prob = self.policy.sample(batch["next_obs"])
        target = td_target(self.critic, batch, -self.alpha * next_log_prob, next_actions, cfg)
        metrics = update_critic(self.critic, batch, target)
        self.gradient_steps += 1
        # Detached: only the critic loss trains the pixel encoder.
        metrics |= self.update_actor_and_temperature(batch["obs"].detach())
        polyak(self.critic.target, self.critic.online, cfg.tau)
        return metrics

    def update_actor_and_temperature(self, obs) -> dict[str, float]:
        actions, log_prob = self.policy.sample(obs)
        loss = (self.alpha * log_prob - self.critic.online.min_q(obs, actions)).mean()
        check_finite("actor_loss", loss)
        self.policy_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.policy_optimizer.step()
        self.actor_updates += 1
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optimizer.step()
        return {"loss/actor": loss.item(), "alpha": self.alpha.item(),
                "entropy": -log_prob.mean().item()}

    def one_step_error(self, obs) -> None:
        return None


class MeanAction(torch.nn.Module):
    def __init__(self, policy: GaussianPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.policy.mean_action(obs)
