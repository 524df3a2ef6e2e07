"""The one-sigmoid Mish (fpmd_core.activations) against torch's own: values, gradients,
forward-mode derivatives (MeanFlow's JVP), extremes and the exported ONNX graph."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn
from torch.autograd import forward_ad
from torch.func import jvp
from torch.nn import functional

from fpmd_core.activations import TORCH_MISH_MAX_ELEMENTS, Mish, mish
from fpmd_core.config import make_config
from fpmd_core.policies import MeanFlowPolicy

EPS32 = torch.finfo(torch.float32).eps
LARGE = 2 * TORCH_MISH_MAX_ELEMENTS  # above it, the one-sigmoid formula runs
EXTREMES = [0.0, -0.0, 1e-30, -1e-30, 88.7, -88.7, 104.0, -104.0, 1e4, -1e4, 3e38, -3e38]


def inputs() -> torch.Tensor:
    """A dense grid over where mish bends, plus values where exp overflows or underflows."""
    return torch.cat([torch.linspace(-80.0, 80.0, 160_001), torch.tensor(EXTREMES)])


def exact_mish_and_derivative(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x64 = x.double().requires_grad_(True)
    y64 = functional.mish(x64)
    (dy64,) = torch.autograd.grad(y64.sum(), x64)
    return y64.detach(), dy64


@pytest.mark.parametrize('grad_enabled', [False, True])
def test_values_match_torch_to_float32_precision(grad_enabled):
    x = inputs()
    exact, _ = exact_mish_and_derivative(x)
    with torch.set_grad_enabled(grad_enabled):
        got = mish(x.clone().requires_grad_(grad_enabled)).detach().double()
    assert torch.isfinite(got).all()
    error = (got - exact).abs()
    bending = x.abs() <= 80
    # torch's own float32 mish is within 2.1 eps (relative) of the exact value on this grid.
    assert (error[bending] <= 4 * EPS32 * exact[bending].abs() + 1e-38).all()
    # Beyond: the identity for large x; for very negative x the exact value is below 1e-35,
    # where float32 has no relative precision left (torch's own is off by 180 eps there).
    assert (error <= 4 * EPS32 * exact.abs() + 1e-35).all()
    assert got[x == 3e38].item() == pytest.approx(3e38, rel=EPS32)


def test_gradient_matches_the_exact_derivative():
    x = inputs().requires_grad_(True)
    (grad,) = torch.autograd.grad(mish(x).sum(), x)
    _, exact = exact_mish_and_derivative(x.detach())
    assert torch.isfinite(grad).all()
    # torch's own mish_backward is within 1e-6 of the exact derivative on this grid.
    assert (grad.double() - exact).abs().max() <= 1e-6


def test_gradcheck_backward_and_forward_mode_in_float64():
    x = (torch.randn(LARGE, dtype=torch.float64) * 4).requires_grad_(True)
    assert torch.autograd.gradcheck(mish, (x,), check_forward_ad=True, fast_mode=True)


@pytest.mark.parametrize('grad_enabled', [False, True])
def test_jvp_matches_torch(grad_enabled):
    """torch.func.jvp and torch.autograd.forward_ad, with and without gradients recorded."""
    torch.manual_seed(0)
    x, tangent = torch.randn(LARGE) * 6, torch.randn(LARGE)
    _, exact = exact_mish_and_derivative(x)
    expected = (exact * tangent.double()).float()
    with torch.set_grad_enabled(grad_enabled):
        primal, by_func = jvp(mish, (x,), (tangent,))
        with forward_ad.dual_level():
            by_dual = forward_ad.unpack_dual(mish(forward_ad.make_dual(x, tangent))).tangent
    torch.testing.assert_close(primal, functional.mish(x), rtol=4 * EPS32, atol=1e-7)
    torch.testing.assert_close(by_func, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(by_dual, expected, rtol=1e-5, atol=1e-6)


def test_backward_through_the_primal_of_a_jvp():
    """MeanFlow's pattern: (u, du) = jvp(...), the loss backpropagates through u only."""
    x = (torch.randn(LARGE) * 3).requires_grad_(True)
    primal, _ = jvp(mish, (x,), (torch.ones_like(x),))
    (grad,) = torch.autograd.grad(primal.sum(), x)
    _, exact = exact_mish_and_derivative(x.detach())
    assert (grad.double() - exact).abs().max() <= 1e-6


def with_torch_mish(module: nn.Module) -> nn.Module:
    """A copy of `module` with every fast Mish replaced by torch.nn.Mish."""
    module = copy.deepcopy(module)
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, Mish):
                setattr(parent, name, nn.Mish())
    return module


def test_meanflow_jvp_target_matches_torch_mish():
    torch.manual_seed(0)
    policy = MeanFlowPolicy(obs_dim=11, act_dim=3, hidden=64, layers=2)
    reference = with_torch_mish(policy)
    assert not any(isinstance(m, Mish) for m in reference.modules())
    batch = 128
    obs, z, v = torch.randn(batch, 11), torch.randn(batch, 3), torch.randn(batch, 3)
    r, t = policy.sample_times(batch, 0.0, 'cpu')
    u, target = policy.jvp_target(obs, z, r, t, v)
    u_ref, target_ref = reference.jvp_target(obs, z, r, t, v)
    torch.testing.assert_close(u, u_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(target, target_ref, rtol=1e-5, atol=1e-5)
    cfg = make_config('cpu', overrides={'agent.adaptive_loss': False}).agent
    actions, weights = torch.rand(batch, 3) * 2 - 1, torch.rand(batch)
    grads = []
    for net in (policy, reference):
        torch.manual_seed(1)  # the same eps, r and t in both losses
        net.zero_grad()
        net.weighted_loss(obs, actions, weights, cfg).backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_onnx_export_keeps_torch_mish_and_matches(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), Mish(), nn.Linear(32, 4)).eval()
    with torch.no_grad():
        net[0].weight.mul_(20)  # pre-activations far into both tails
    path = tmp_path / 'mish.onnx'
    with torch.no_grad():
        # A traced batch above TORCH_MISH_MAX_ELEMENTS, or the size rule alone would pick
        # torch's mish and the export rule would go untested.
        torch.onnx.export(net, (torch.zeros(256, 8),), str(path), dynamo=False, opset_version=17,
                          input_names=['x'], output_names=['y'], dynamic_axes={'x': {0: 'n'}})
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {'Softplus', 'Tanh'} <= ops and 'Sigmoid' not in ops  # torch's own mish graph
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    (got,) = session.run(None, {'x': x})
    with torch.no_grad():
        expected = net(torch.as_tensor(x)).numpy()
    assert np.abs(expected).max() > 10
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_second_derivative_is_refused_not_wrong():
    """d/dx of mish(x)^2's gradient would silently miss mish'' without the refusal."""
    x = torch.randn(LARGE, requires_grad=True)
    (grad,) = torch.autograd.grad(mish(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):  # without once_differentiable: a wrong number
        torch.autograd.grad(grad.sum(), x)


@pytest.mark.parametrize('grad_enabled', [False, True])
def test_small_tensors_use_torchs_own_kernel(grad_enabled):
    """Acting on a few observations: torch's single call, so results equal it bit for bit."""
    x = (torch.randn(4, 128) * 3).requires_grad_(grad_enabled)
    assert x.numel() <= TORCH_MISH_MAX_ELEMENTS
    with torch.set_grad_enabled(grad_enabled):
        assert torch.equal(mish(x), functional.mish(x))
