"""fpmd_core.linear: large CPU products on oneDNN give torch's linear (values, gradients,
forward-mode derivatives), small ones and ONNX export use torch's own; only AMD processors
choose oneDNN. The tests of the oneDNN path turn it on whatever this machine's processor."""

from __future__ import annotations

import platform
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn
from torch.autograd import forward_ad
from torch.nn import functional

from fpmd_core import linear as linear_module
from fpmd_core.linear import (
    ONEDNN_MIN_MACS,
    Linear,
    cpu_vendor,
    linear,
    onednn_available,
    onednn_chosen,
)

ROWS, IN, OUT = 256, 128, 96  # 3.1M multiply-adds: above ONEDNN_MIN_MACS


@pytest.fixture(autouse=True)
def onednn_on(monkeypatch):
    """oneDNN's products chosen, as on an AMD processor (torch's CPU wheel ships oneDNN)."""
    assert onednn_available()
    monkeypatch.setattr(linear_module, '_use_onednn', True)


def problem(rows=ROWS, inner=IN, out=OUT, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*shape, generator=generator, dtype=dtype)
                 for shape in ((rows, inner), (out, inner), (out,)))


@pytest.mark.parametrize('vendor, chosen', [('AuthenticAMD', True), ('GenuineIntel', False),
                                            ('', False)])
def test_only_amd_processors_choose_onednn(monkeypatch, vendor, chosen):
    """MKL runs its AVX2 code on AMD (oneDNN faster there), its AVX-512 code on Intel (MKL
    faster there); other processors were not measured."""
    monkeypatch.setattr(linear_module, 'cpu_vendor', lambda: vendor)
    monkeypatch.setattr(linear_module, '_use_onednn', None)
    assert onednn_chosen() is chosen
    x, weight, bias = problem()
    with torch.no_grad():
        same = torch.equal(linear(x, weight, bias), functional.linear(x, weight, bias))
    assert same or chosen  # not chosen: torch's linear itself, bit for bit
    monkeypatch.setattr(linear_module, '_onednn_works', False)  # chosen only where it works
    monkeypatch.setattr(linear_module, '_use_onednn', None)
    assert onednn_chosen() is False


def test_cpu_vendor_reads_this_machine():
    if not Path('/proc/cpuinfo').is_file() or platform.machine() != 'x86_64':
        pytest.skip('vendor ids are read from /proc/cpuinfo on x86-64')
    assert cpu_vendor() in {'AuthenticAMD', 'GenuineIntel', 'HygonGenuine'}


def test_onednn_agrees_with_torch():
    assert ROWS * IN * OUT >= ONEDNN_MIN_MACS
    x, weight, bias = problem()
    exact = functional.linear(*(t.double() for t in (x, weight, bias)))
    with torch.no_grad():
        got = linear(x, weight, bias)
    torch.testing.assert_close(got.double(), exact, rtol=1e-5, atol=1e-5)
    assert torch.equal(got, linear(x, weight, bias).detach())  # deterministic
    # Transposed views (what the backward pass passes) are read by their strides; other
    # strides (a column half of a wider matrix) are copied first.
    torch.testing.assert_close(linear(x.t().contiguous().t(), weight, bias).detach(), got)
    wider = torch.cat([x, torch.randn_like(x)], dim=1)
    torch.testing.assert_close(linear(wider[:, :IN], weight, bias).detach(), got)
    torch.testing.assert_close(linear(x, wider.t()[:IN].t()[:OUT], bias).detach(),
                               linear(x, wider[:OUT, :IN].contiguous(), bias).detach())


@pytest.mark.parametrize('needs', [(True, True, True), (False, True, True), (True, False, False)])
def test_gradients_match_torch(needs):
    x, weight, bias = (t.requires_grad_(n) for t, n in zip(problem(), needs, strict=True))
    upstream = torch.randn(ROWS, OUT)
    out = linear(x, weight, bias)
    assert type(out.grad_fn).__name__ == 'Eager_OneDnnLinearBackward'  # not torch's addmm
    leaves = [t for t in (x, weight, bias) if t.requires_grad]
    ours = torch.autograd.grad(out, leaves, upstream)
    theirs = torch.autograd.grad(functional.linear(x, weight, bias), leaves, upstream)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('grad_enabled', [False, True])
def test_forward_mode_derivative_matches_torch(grad_enabled):
    """torch.func.jvp and forward_ad dual tensors, with and without gradients recorded: the
    bare oneDNN operator has no forward derivative (it gave a zero tangent, silently)."""
    x, weight, bias = problem()
    tangents = tuple(torch.randn_like(t) for t in (x, weight, bias))
    with torch.set_grad_enabled(grad_enabled):
        _, theirs = torch.func.jvp(functional.linear, (x, weight, bias), tangents)
        _, ours = torch.func.jvp(linear, (x, weight, bias), tangents)
        with forward_ad.dual_level():
            duals = [forward_ad.make_dual(p, t) for p, t in zip((x, weight, bias), tangents,
                                                                   strict=True)]
            dual_tangent = forward_ad.unpack_dual(linear(*duals)).tangent
    assert theirs.abs().max() > 1.0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(dual_tangent, theirs, rtol=1e-5, atol=1e-4)


def test_second_derivative_is_refused_not_wrong():
    x, weight, bias = problem()
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(linear(x, weight, bias).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad.sum(), x)


def test_small_products_and_other_dtypes_use_torchs_linear_bit_for_bit():
    x, weight, bias = problem(rows=4)
    assert 4 * IN * OUT < ONEDNN_MIN_MACS
    assert torch.equal(linear(x, weight, bias), functional.linear(x, weight, bias))
    x, weight, bias = problem(dtype=torch.float64)
    assert torch.equal(linear(x, weight, bias), functional.linear(x, weight, bias))


def test_without_onednn_every_product_is_torchs(monkeypatch):
    monkeypatch.setattr(linear_module, '_use_onednn', False)
    x, weight, bias = problem()
    assert torch.equal(linear(x, weight, bias), functional.linear(x, weight, bias))


def test_linear_module_keeps_nn_linear_parameters():
    layer = Linear(IN, OUT)
    assert isinstance(layer, nn.Linear)
    assert list(layer.state_dict()) == list(nn.Linear(IN, OUT).state_dict())


def test_onnx_export_uses_torchs_gemm(tmp_path):
    net = nn.Sequential(Linear(IN, 256), nn.ReLU(), Linear(256, 3)).eval()
    path = tmp_path / 'net.onnx'
    with torch.no_grad():  # a traced batch large enough that oneDNN would otherwise run
        torch.onnx.export(net, (torch.zeros(ROWS, IN),), str(path), dynamo=False,
                          opset_version=17, input_names=['x'], output_names=['y'])
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ops == {'Gemm', 'Relu'}
