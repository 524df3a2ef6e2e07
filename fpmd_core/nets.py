"""Network building blocks shared by critics and policies."""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(in_dim: int, out_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """`layers` hidden layers of width `hidden` with mish, linear output."""
    dims = [in_dim] + [hidden] * layers
    blocks: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        blocks += [nn.Linear(a, b), nn.Mish()]
    blocks.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*blocks)


class TimeEmbedding(nn.Module):
    """sinusoidal(16) -> Linear(32) -> mish -> Linear(16), for t in [0, 1].

    Frequencies go up to `scale` rad per unit of t. A diffusion-style scale of 1000 makes
    du/dt huge at initialisation, and MeanFlow's target v - (t - r) du/dt then feeds the net
    its own noise (the prototype's divergence); t in [0, 1] needs no more than about 10.
    """

    def __init__(self, dim: int = 16, scale: float = 10.0):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half) / half)
        self.register_buffer("freqs", freqs * scale, persistent=False)
        self.net = nn.Sequential(nn.Linear(dim, 2 * dim), nn.Mish(), nn.Linear(2 * dim, dim))
        self.out_dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.reshape(-1, 1) * self.freqs
        return self.net(torch.cat([angles.sin(), angles.cos()], dim=-1))


def bound(x: torch.Tensor, limit: float) -> torch.Tensor:
    """Soft bound |x| < limit (identity near 0); limit 0 leaves x unbounded."""
    return limit * torch.tanh(x / limit) if limit > 0 else x


class FoldedMLP(nn.Module):
    """`net([x, constant])` computed as `net'(x)`: the constant inputs' share of the first layer
    moves into its bias. Same result, fewer operations at batch 1 (the deploy path)."""

    def __init__(self, net: nn.Sequential, constant: torch.Tensor):
        super().__init__()
        first = net[0]
        keep = first.in_features - constant.numel()
        folded = nn.Linear(keep, first.out_features).to(first.weight.device)
        with torch.no_grad():
            folded.weight.copy_(first.weight[:, :keep])
            folded.bias.copy_(first.bias + first.weight[:, keep:] @ constant)
        self.net = nn.Sequential(folded, *list(net)[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class OneStepFromZero(nn.Module):
    """Deploy mode of a flow policy: x0 = 0 and one step, so every input but the observation is
    constant. `sign * bound(net(obs))`: +v for rectified flow, -u for MeanFlow (a = z1 - u)."""

    def __init__(self, net: nn.Sequential, constant: torch.Tensor, output_bound: float,
                 sign: float):
        super().__init__()
        self.net = FoldedMLP(net, constant)
        self.output_bound = output_bound
        self.sign = sign

    def forward(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return (self.sign * bound(self.net(obs), self.output_bound)).clamp(-1.0, 1.0)
