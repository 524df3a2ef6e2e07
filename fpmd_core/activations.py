"""Mish, x * tanh(softplus(x)), from one sigmoid.

torch's own CPU kernel (aten::mish) evaluates exp, log1p and tanh per element and costs about
7.5 ns per element on one thread, where a sigmoid costs about 1: with Mish in every hidden layer
it took over a third of an FPMD-M update. With s = sigmoid(x), softplus(x) = -log(1 - s), so

    tanh(softplus(x)) = (1 - (1 - s)^2) / (1 + (1 - s)^2) = n / (2 - n),   n = s (2 - s),

a rational function of s whose numerator and denominator never cancel (n in [0, 1], 2 - n in
[1, 2]); sigmoid saturates to exactly 0 or 1 instead of overflowing, so any finite x is safe.
The derivative is tanh(softplus(x)) + x s (1 - tanh(softplus(x))^2).

`Mish` runs the same maths three ways, all matching torch.nn.functional.mish to float32
rounding:
- with gradients on: a torch.autograd.Function with an explicit backward and an explicit
  forward-mode derivative, so MeanFlow's JVP (torch.func.jvp or torch.autograd.forward_ad) and
  the backward pass both avoid differentiating the formula op by op;
- without gradients (sampling, TD targets, acting): the formula with in-place operations;
- inside torch.onnx.export: torch's own mish, so the exported deploy graph keeps its operators.
`mish_and_slope` returns the derivative as well, for forward tangents written by hand
(`fpmd_core.nets.mlp_with_tangent`, MeanFlow's JVP).
Small tensors (acting on a few observations: the cost is then in the calls, not in the
elements) and tensors on other devices (CUDA: one fused kernel there) use torch's own mish.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional

from .autograd import eager_form, pick

TORCH_MISH_MAX_ELEMENTS = 4096
"""Up to this many elements torch's single call is faster than six (one thread, no gradient:
1 x 128 took 1.3 us with torch's, 9.1 with this formula; 32 x 128 took 13.0 and 11.3 us)."""


def _tanh_softplus(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s, 2 - n, tanh(softplus(x)) = n / (2 - n)) with s = sigmoid(x), n = s (2 - s).

    n = lerp(s, 1, s) and 2 - n = lerp(2, s, s), one operation each where `2 - s`, a product
    and `2 - n` took three (mish on 1024 x 128: 76 us instead of 92). torch's lerp computes
    start + w (end - start) for w < 1/2 and end - (end - start)(1 - w) above: here
    s + s (1 - s), 1 - (1 - s)^2, 2 - s (2 - s) and s + (2 - s)(1 - s), none of which
    cancels (n < 3/4 in the first, 2 - n > 1 in both others)."""
    s = torch.sigmoid(x)
    n = torch.lerp(s, _constant(1.0, s), s)
    denominator = torch.lerp(_constant(2.0, s), s, s)
    return s, denominator, n.div_(denominator)


_CONSTANTS: dict[tuple[float, torch.dtype, torch.device], torch.Tensor] = {}


def _constant(value: float, like: torch.Tensor) -> torch.Tensor:
    """`value` as a 0-dim tensor of like's dtype and device (torch.lerp takes its ends as
    tensors only), made once per kind."""
    key = (value, like.dtype, like.device)
    constant = _CONSTANTS.get(key)
    if constant is None:
        constant = _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return constant


def _derivative(x: torch.Tensor, s: torch.Tensor, denominator: torch.Tensor,
                tanh_sp: torch.Tensor) -> torch.Tensor:
    """d mish / dx = tanh_sp + x s (1 - tanh_sp^2), with 1 - tanh_sp^2 = 4 (1 - s)^2 / (2 - n)^2:
    1 - tanh_sp^2 computed as is loses every digit once tanh_sp rounds to 1, 1 - s does not."""
    w = torch.rsub(s, 1.0).div_(denominator)
    w.mul_(w).mul_(s).mul_(x)
    return torch.add(tanh_sp, w, alpha=4.0)


class _MishFunction(torch.autograd.Function):
    """Returns (mish(x), d mish / dx); the derivative is not differentiable. It is computed in
    the forward pass, once for both the backward pass and a JVP (MeanFlow's loss needs both),
    and it is the only tensor kept. `setup_context` is separate from `forward`, which torch.func
    transforms require.

    First-order only: a second backward pass raises (once_differentiable), and a JVP's tangent
    is exact but carries no gradient through d mish / dx. MeanFlow stops the gradient of its
    JVP target, so it never needs one."""

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, denominator, tanh_sp = _tanh_softplus(x)
        return tanh_sp * x, _derivative(x, s, denominator, tanh_sp)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        derivative = output[1]
        ctx.save_for_backward(derivative)
        ctx.save_for_forward(derivative)
        ctx.mark_non_differentiable(derivative)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_derivative) -> torch.Tensor:
        (derivative,) = ctx.saved_tensors
        return grad * derivative

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> tuple[torch.Tensor, None]:
        (derivative,) = ctx.saved_tensors
        return tangent * derivative, None


_EagerMishFunction = eager_form(_MishFunction)


def mish(x: torch.Tensor) -> torch.Tensor:
    """torch.nn.functional.mish(x), faster on CPU (module docstring)."""
    # The tracing check comes first: under the ONNX exporter's tracer, numel() is a traced
    # value and a comparison with it would warn (and be baked into the graph as a constant).
    # torch.onnx.is_in_onnx_export() costs about 1 us a call, so it is asked last.
    if (torch.jit.is_tracing() or x.device.type != "cpu"
            or x.numel() <= TORCH_MISH_MAX_ELEMENTS or torch.onnx.is_in_onnx_export()):
        # CUDA's mish is one fused kernel: six kernels and a Python Function would be slower.
        return functional.mish(x)
    if not torch.is_grad_enabled():
        # Nothing to save for a backward pass. Every operation here also has a forward-mode
        # derivative, so a JVP taken under no_grad stays exact.
        return _tanh_softplus(x)[2].mul_(x)
    return pick(_MishFunction, _EagerMishFunction).apply(x)[0]


def mish_and_slope(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mish(x), d mish / dx at x) from one pass; mish(x) keeps its gradient (first order, as
    `mish`'s), the slope carries none. Any device, any size: a hand-written forward tangent
    needs the slope wherever the value is computed."""
    return pick(_MishFunction, _EagerMishFunction).apply(x)


class Mish(nn.Module):
    """Drop-in for torch.nn.Mish (no parameters, same state_dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)
