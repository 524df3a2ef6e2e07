"""Network building blocks shared by critics and policies."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .activations import Mish, mish_and_slope
from .linear import Linear, linear


def mlp(in_dim: int, out_dim: int, hidden: int, layers: int,
        activation: Callable[[], nn.Module] | None = None) -> nn.Sequential:
    """`layers` hidden layers of width `hidden`, linear output. `activation` builds each hidden
    activation; None is mish (`fpmd_core.activations.Mish`: exact, faster on CPU), the FPMD
    networks'; the SAC baseline passes nn.ReLU."""
    activation = activation or Mish
    dims = [in_dim] + [hidden] * layers
    blocks: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        blocks += [Linear(a, b), activation()]
    blocks.append(Linear(dims[-1], out_dim))
    return nn.Sequential(*blocks)


def mlp_with_tangent(net: nn.Sequential, x: torch.Tensor, dx: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(net(x), the forward-mode derivative of net at x along dx) for an `mlp` of Linear and
    mish layers, the tangent carried through the same pass by hand: Linear W x + b moves it to
    W dx, mish to mish'(x) dx (its slope comes out of the same fused evaluation). The value
    keeps its autograd graph; the tangent is computed without one, as MeanFlow's stop-gradient
    target needs. torch's forward-mode AD (dual tensors) computes the same numbers at a higher
    cost: MeanFlow's policy at 2x128 over 256 rows on one CPU thread took 0.48 ms for the
    plain forward pass, 2.2 ms with forward_ad, 0.70 ms this way."""
    for layer in net:
        if isinstance(layer, nn.Linear):
            x = layer(x)
            with torch.no_grad():
                dx = linear(dx, layer.weight)
        elif isinstance(layer, (Mish, nn.Mish)):
            x, slope = mish_and_slope(x)
            dx = dx * slope  # neither has a gradient
        else:
            raise TypeError(f"mlp_with_tangent: expected Linear and Mish layers, got "
                            f"{type(layer).__name__}")
    return x, dx


class TimeEmbedding(nn.Module):
    """sinusoidal(16) / sqrt(16) -> Linear(32) -> mish -> Linear(16), as released.

    Frequencies 10000^(-j/8), j = 0..7: the fastest is 1 rad per unit of input, so for t in
    [0, 1] every feature is smooth and du/dt stays small at initialisation (MeanFlow's JVP
    target v - (t - r) du/dt then carries little of the network's own noise). DPMD feeds its
    integer step index 0..K-1, as released.
    """

    def __init__(self, dim: int = 16):
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10_000.0) * torch.arange(half) / half),
                             persistent=False)
        self.amplitude = 1.0 / math.sqrt(dim)
        self.net = nn.Sequential(Linear(dim, 2 * dim), Mish(), Linear(2 * dim, dim))
        self.out_dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.reshape(-1, 1) * self.freqs
        return self.net(self.amplitude * torch.cat([angles.sin(), angles.cos()], dim=-1))

    def forward_with_tangent(self, t: torch.Tensor, dt: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding of t, its derivative along dt), the derivative without gradient
        (`mlp_with_tangent`)."""
        angles = t.reshape(-1, 1) * self.freqs
        sin, cos = angles.sin(), angles.cos()
        with torch.no_grad():
            d_angles = dt.reshape(-1, 1) * self.freqs
            d_features = self.amplitude * torch.cat([cos * d_angles, -sin * d_angles], dim=-1)
        return mlp_with_tangent(self.net, self.amplitude * torch.cat([sin, cos], dim=-1),
                                d_features)


def bound(x: torch.Tensor, limit: float) -> torch.Tensor:
    """Soft bound |x| < limit (identity near 0); limit 0 leaves x unbounded."""
    return limit * torch.tanh(x / limit) if limit > 0 else x


def bound_with_tangent(x: torch.Tensor, dx: torch.Tensor, limit: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(bound(x, limit), its derivative along dx = (1 - tanh(x / limit)^2) dx), the
    derivative without gradient (`mlp_with_tangent`)."""
    if limit <= 0:
        return x, dx
    squashed = torch.tanh(x / limit)
    with torch.no_grad():
        slope = torch.rsub(squashed.square(), 1.0)
    return limit * squashed, dx * slope


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


class StateEncoder(nn.Module):
    """State observations are their own features."""

    def __init__(self, obs_dim: int):
        super().__init__()
        self.out_dim = obs_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs


class PixelEncoder(nn.Module):
    """DrQ-v2: uint8 frames (B, H, W, C) -> /255 - 0.5 -> 4 conv 3x3 (32 channels, the first
    with stride 2, ReLU) -> Linear(feature_dim) -> LayerNorm -> tanh.

    Preprocessing is part of the module, so the exported graph takes camera frames as they are.
    """

    def __init__(self, obs_shape: tuple[int, int, int], feature_dim: int = 50):
        super().__init__()
        height, width, channels = obs_shape
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, channels, height, width)).numel()
        self.trunk = nn.Sequential(nn.Linear(flat, feature_dim), nn.LayerNorm(feature_dim),
                                   nn.Tanh())
        self.out_dim = feature_dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return self.trunk(self.convs(x).flatten(1))


def make_encoder(obs_shape: tuple[int, ...], feature_dim: int) -> nn.Module:
    """StateEncoder for vectors, PixelEncoder for (H, W, C) frames."""
    if len(obs_shape) == 1:
        return StateEncoder(obs_shape[0])
    if len(obs_shape) == 3:
        return PixelEncoder(obs_shape, feature_dim)
    raise ValueError(f"observation shape: expected (dim,) or (H, W, C), got {obs_shape}")


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """DrQ's augmentation: shift each (H, W, C) image by up to `pad` pixels in x and y, edges
    replicated. Clamped indices are replicate padding without the padded copy; uint8 stays
    uint8."""
    if pad == 0:
        return frames
    batch, height, width, _ = frames.shape
    device = frames.device
    shifts = torch.randint(-pad, pad + 1, (2, batch, 1), device=device, generator=generator)
    rows = (torch.arange(height, device=device) + shifts[0]).clamp(0, height - 1)
    cols = (torch.arange(width, device=device) + shifts[1]).clamp(0, width - 1)
    index = torch.arange(batch, device=device)[:, None, None]
    return frames[index, rows[:, :, None], cols[:, None, :]]
