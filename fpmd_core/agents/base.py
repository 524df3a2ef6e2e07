"""What every agent shares: the critic, the schedule counters, numpy in / numpy out acting."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .critic import Critic


class Agent(nn.Module):
    """Subclasses define `update(batch)`, `explore(obs)`, `evaluate(obs)` (best-of-N, no
    exploration noise) and `deploy_policy()` (the module that is exported)."""

    algo: str = ""

    def __init__(self, obs_dim: int, act_dim: int, cfg, device: torch.device):
        super().__init__()
        self.cfg, self.obs_dim, self.act_dim, self.device = cfg, obs_dim, act_dim, device
        self.critic = Critic(obs_dim, act_dim, cfg)
        self.gradient_steps = 0
        self.actor_updates = 0

    def _tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)

    def act(self, obs: np.ndarray, mode: str = "explore") -> np.ndarray:
        """Actions in [-1, 1] for a batch of observations. mode: explore | best_of_n | deploy."""
        obs_t = self._tensor(obs)
        with torch.no_grad():
            if mode == "explore":
                actions = self.explore(obs_t)
            elif mode == "best_of_n":
                actions = self.evaluate(obs_t)
            elif mode == "deploy":
                actions = self.deploy_policy()(obs_t)
            else:
                raise ValueError(f"mode: expected explore, best_of_n or deploy, got {mode!r}")
        return actions.cpu().numpy()

    @property
    def alpha(self) -> torch.Tensor:
        """The temperature (every agent has `log_alpha`): FPMD's lambda, SAC's entropy weight."""
        return self.log_alpha.detach().exp()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every agent has a critic, a policy and a temperature, each with its optimiser."""
        return {"critic": self.critic.optimizer, "policy": self.policy_optimizer,
                "alpha": self.alpha_optimizer}

    def full_state(self) -> dict:
        """Everything needed to resume exactly: parameters, buffers, optimisers, counters."""
        return {
            "modules": self.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "counters": {"gradient_steps": self.gradient_steps,
                         "actor_updates": self.actor_updates},
        }

    def load_full_state(self, state: dict) -> None:
        self.load_state_dict(state["modules"])
        for name, optimizer in self.optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.gradient_steps = int(state["counters"]["gradient_steps"])
        self.actor_updates = int(state["counters"]["actor_updates"])
