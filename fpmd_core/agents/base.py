"""What every agent shares: the critic, the schedule counters, numpy in / numpy out acting."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..nets import make_encoder, random_shift
from .critic import Critic
from .optim import load_optimizer_state


class Agent(nn.Module):
    """Subclasses define `update(batch)`, `explore(obs)`, `evaluate(obs)` (best-of-N, no
    exploration noise) and `deploy_policy()` (the module that is exported); all of them take
    features (`self.encoder(obs)`): the state itself, or the pixel encoder's output."""

    algo: str = ""
    activation = None
    """Builds the hidden activations of the critic (and the policy); None: nets.mlp's mish."""

    def __init__(self, obs_shape: int | tuple[int, ...], act_dim: int, cfg,
                 device: torch.device):
        super().__init__()
        self.obs_shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)
        self.pixels = len(self.obs_shape) == 3
        encoder = make_encoder(self.obs_shape, cfg.feature_dim)
        self.cfg, self.act_dim, self.device = cfg, act_dim, device
        self.obs_dim = encoder.out_dim
        """Size of the features the critic and the policy see."""
        self.critic = Critic(encoder, act_dim, cfg, self.activation)
        self.gradient_steps = 0
        self.actor_updates = 0

    @property
    def encoder(self) -> torch.nn.Module:
        return self.critic.encoder

    def _tensor(self, obs: np.ndarray) -> torch.Tensor:
        dtype = np.uint8 if self.pixels else np.float32
        return torch.as_tensor(np.asarray(obs, dtype=dtype), device=self.device)

    @torch.no_grad()
    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs)

    def encode_batch(self, batch: dict) -> dict:
        """Replay observations -> features. Pixels: random-shift augmented; `obs` keeps its
        gradient for the critic loss, `next_obs` (and everything the actor sees) has none."""
        if not self.pixels:
            return batch
        obs = self.encoder(random_shift(batch["obs"], self.cfg.shift_pad))
        with torch.no_grad():
            next_obs = self.encoder(random_shift(batch["next_obs"], self.cfg.shift_pad))
        return batch | {"obs": obs, "next_obs": next_obs}

    def act(self, obs: np.ndarray, mode: str = "explore") -> np.ndarray:
        """Actions in [-1, 1] for a batch of observations. mode: explore | best_of_n | deploy."""
        with torch.no_grad():
            obs_t = self.features(self._tensor(obs))
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

    def learning_rates(self) -> dict[str, float]:
        """Each optimiser's learning rate as the configuration sets it at the current counters;
        `load_full_state` applies them, so a run resumed with another learning rate follows its
        configuration (a checkpoint's optimiser state carries the old one)."""
        cfg = self.cfg
        return {"critic": cfg.critic_lr, "policy": cfg.actor_lr, "alpha": cfg.alpha_lr}

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
            load_optimizer_state(optimizer, state["optimizers"][name])
        self.gradient_steps = int(state["counters"]["gradient_steps"])
        self.actor_updates = int(state["counters"]["actor_updates"])
        optimizers = self.optimizers()
        for name, lr in self.learning_rates().items():
            for group in optimizers[name].param_groups:
                group["lr"] = lr
