"""fpmd_core.autograd: the eager form of a custom Function outside torch.func transforms, the
transformable one inside them; both compute the same values and derivatives."""

from __future__ import annotations

import torch
from torch.autograd import forward_ad
from torch.nn import functional

from fpmd_core.activations import _EagerMishFunction, _MishFunction, mish
from fpmd_core.autograd import functorch_transforms_active, pick
from fpmd_core.linear import linear

LARGE = 256 * 128  # above the size where mish and linear leave torch's own kernels


def test_eager_form_outside_transforms_and_transformable_inside():
    assert pick(_MishFunction, _EagerMishFunction) is _EagerMishFunction
    seen = []

    def record(x):
        seen.append((functorch_transforms_active(), pick(_MishFunction, _EagerMishFunction)))
        return x

    torch.func.grad(lambda x: record(x).sum())(torch.randn(3))
    torch.func.jvp(record, (torch.randn(3),), (torch.randn(3),))
    assert seen == [(True, _MishFunction)] * 2


def test_torch_func_grad_through_mish_and_linear():
    """A transform other than jvp (no forward-AD level open) also takes the transformable
    form, and the gradient is torch's."""
    x, weight = torch.randn(256, 128) * 3, torch.randn(128, 128) / 11
    leaf = weight.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(functional.mish(x @ leaf.t()).sum(), leaf)
    got = torch.func.grad(lambda w: mish(linear(x, w)).sum())(weight)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_eager_form_backward_and_dual_tensors_match_torch():
    x = (torch.randn(LARGE) * 4).requires_grad_(True)
    (grad,) = torch.autograd.grad(mish(x).sum(), x)
    (expected,) = torch.autograd.grad(functional.mish(x).sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
    tangent = torch.randn(LARGE)
    with forward_ad.dual_level():
        got = forward_ad.unpack_dual(mish(forward_ad.make_dual(x.detach(), tangent))).tangent
    torch.testing.assert_close(got, expected * tangent, rtol=1e-5, atol=1e-6)
