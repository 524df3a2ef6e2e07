"""The one sampling function: acting, TD targets, actor-loss samples and deploy mode."""

from __future__ import annotations

import torch

from .critic import DoubleQ


@torch.no_grad()
def sample_actions(policy, critic: DoubleQ | None, obs: torch.Tensor, steps: int,
                   particles: int, noise_scale: float, explore_std: float | torch.Tensor = 0.0,
                   x_init: torch.Tensor | None = None) -> torch.Tensor:
    """Best-of-N: N candidates per state from x0 = noise_scale * eps through `steps` generator
    steps, clipped to [-1, 1], the argmax of min(Q1, Q2) kept; then exploration noise
    N(0, explore_std^2) and a second clip (so Q never scores illegal actions, and the env never
    receives them). All B * N candidates go through the nets as one batch.

    Deploy mode is steps=1, particles=1, noise_scale=0, explore_std=0 and needs no critic.
    """
    batch, act_dim = obs.shape[0], policy.act_dim
    rows = obs.repeat_interleave(particles, dim=0)
    if x_init is None:
        x_init = noise_scale * torch.randn(batch * particles, act_dim, device=obs.device)
    actions = policy.generate(rows, x_init, steps, noise_scale=noise_scale).clamp(-1.0, 1.0)
    if particles > 1:
        scores = critic.min_q(rows, actions).view(batch, particles)
        best = scores.argmax(dim=1)
        actions = actions.view(batch, particles, act_dim)[torch.arange(batch), best]
    if isinstance(explore_std, torch.Tensor) or explore_std > 0:
        actions = (actions + explore_std * torch.randn_like(actions)).clamp(-1.0, 1.0)
    return actions
