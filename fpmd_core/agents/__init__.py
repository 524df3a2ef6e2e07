"""Agents: FPMD-R, FPMD-M and DPMD share `MirrorDescentAgent`; SAC is the Gaussian baseline."""

from __future__ import annotations

import torch

from .base import Agent
from .critic import NonFiniteLossError
from .fpmd import MirrorDescentAgent
from .sac import SACAgent


def make_agent(obs_shape: int | tuple[int, ...], act_dim: int, cfg,
               device: torch.device) -> Agent:
    """`obs_shape`: the state size, or (H, W, C) for stacked uint8 camera frames."""
    if cfg.algo == "sac":
        return SACAgent(obs_shape, act_dim, cfg, device)
    return MirrorDescentAgent(obs_shape, act_dim, cfg, device)


__all__ = ["Agent", "MirrorDescentAgent", "NonFiniteLossError", "SACAgent", "make_agent"]
