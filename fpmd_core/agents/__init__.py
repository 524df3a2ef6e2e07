"""Agents: FPMD-R, FPMD-M and DPMD share `MirrorDescentAgent`; SAC is the Gaussian baseline."""

from __future__ import annotations

import torch

from .base import Agent
from .critic import NonFiniteLossError
from .fpmd import MirrorDescentAgent
from .sac import SACAgent


def make_agent(obs_shape: int | tuple[int, ...], act_dim: int, cfg,
               device: torch.device, gradient_budget: int = 0) -> Agent:
    """`obs_shape`: the state size, or (H, W, C) for stacked uint8 camera frames.
    `gradient_budget`: the run's gradient steps, for a training agent (`budget` alpha)."""
    if cfg.algo == "sac":
        return SACAgent(obs_shape, act_dim, cfg, device)
    return MirrorDescentAgent(obs_shape, act_dim, cfg, device, gradient_budget)


__all__ = ["Agent", "MirrorDescentAgent", "NonFiniteLossError", "SACAgent", "make_agent"]
