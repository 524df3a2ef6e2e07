"""Linear layers whose large CPU products run on oneDNN's float32 GEMM instead of MKL's, on AMD.

torch's CPU `addmm`/`mm` call MKL's sgemm, which on AMD processors runs its AVX2 code: about
110 GFLOP/s on one thread of the AMD EPYC this project measured on, at every FPMD size.
oneDNN, also inside torch, picks its kernels from the processor's features (AVX-512 there) and
reached 190-245 GFLOP/s on the same products (256 x 128 x 128: 45 us instead of 80; 1024 x 256
x 256: 0.55 ms instead of 1.2). On an Intel Xeon MKL runs its AVX-512 kernels and was the faster
one (`ONEDNN_VENDORS`), so only AMD processors send their products to oneDNN. The result is the
same product in float32, summed in another order. torch reaches oneDNN's linear on ordinary
tensors only through `torch.ops.mkldnn._linear_pointwise`, the operator its own CPU compiler
backend emits; it is checked once against torch's linear and left alone if it is missing or
disagrees.

oneDNN costs about 10 us more per call, so products under `ONEDNN_MIN_MACS` multiply-adds, a
non-CPU device, another dtype, and ONNX export (the exported graph keeps torch's Gemm) use
torch's own linear. The gradients run through oneDNN too (`_OneDnnLinear`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import forward_ad
from torch.autograd.function import once_differentiable
from torch.nn import functional

from .autograd import eager_form, functorch_transforms_active, pick

ONEDNN_MIN_MACS = 1 << 20
"""Smallest rows x in x out product sent to oneDNN. On one thread 64 x 128 x 128 and
256 x 14 x 256 (about 1M) were ties, 256 x 46 x 128 (1.5M) took 24 us instead of 30,
1024 x 14 x 128 (1.8M) 28 instead of 39; 256 x 14 x 128 (0.5M) 16 instead of 11."""

ONEDNN_VENDORS = ("AuthenticAMD",)
"""CPU vendors whose large products go to oneDNN. An FPMD-M update at 2x256 on one thread took
13.0 ms with MKL and 9.5 with oneDNN on an AMD EPYC (docs/benchmarks.md, the speed work); on an
Intel Xeon torch's linear (MKL) ran it 1.06x as fast as oneDNN on one thread and 1.17x on two
(bench/bench_update_parts.py). Other processors were not measured and keep torch's linear."""

_onednn_works: bool | None = None
_use_onednn: bool | None = None


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias on oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(_plain(x), _plain(weight), bias, "none", [], "")


def _plain(matrix: torch.Tensor) -> torch.Tensor:
    """`matrix`, copied to contiguous unless it is contiguous or the transpose of a contiguous
    one: other strides send oneDNN to its reference kernel (the weight gradient of a column
    half of a wider activation, x.T with strides (1, 2 * width), took 86 ms instead of
    0.06)."""
    if matrix.is_contiguous() or matrix.t().is_contiguous():
        return matrix
    return matrix.contiguous()


def onednn_available() -> bool:
    """Whether oneDNN's linear is there and computes torch's linear (checked once)."""
    global _onednn_works
    if _onednn_works is None:
        _onednn_works = False
        if torch.backends.mkldnn.is_available():
            generator = torch.Generator().manual_seed(0)
            x, weight, bias = (torch.randn(*shape, generator=generator)
                               for shape in ((33, 20), (17, 20), (17,)))
            try:
                with torch.no_grad():
                    got = _onednn(x, weight, bias)
                    got_t = _onednn(x.t().contiguous().t(), weight.t().contiguous().t(), None)
            except (AttributeError, RuntimeError, NotImplementedError):
                return False
            with torch.no_grad():
                expected = functional.linear(x, weight, bias)
                _onednn_works = (torch.allclose(got, expected, rtol=1e-5, atol=1e-5) and
                                 torch.allclose(got_t, expected - bias, rtol=1e-5, atol=1e-5))
    return _onednn_works


def cpu_vendor() -> str:
    """The processor's vendor id ('AuthenticAMD', 'GenuineIntel', ...) from /proc/cpuinfo; ''
    where there is none (other systems, other architectures)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def onednn_chosen() -> bool:
    """Whether large products go to oneDNN on this machine: a processor of `ONEDNN_VENDORS`
    and oneDNN's linear available (decided once)."""
    global _use_onednn
    if _use_onednn is None:
        _use_onednn = cpu_vendor() in ONEDNN_VENDORS and onednn_available()
    return _use_onednn


def _large(rows: int, inner: int, out: int) -> bool:
    return rows * inner * out >= ONEDNN_MIN_MACS


def _product(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T for 2-D x, on oneDNN when large."""
    if _large(x.shape[0], x.shape[1], weight.shape[0]):
        return _onednn(x, weight, None)
    return x @ weight.t()


class _OneDnnLinear(torch.autograd.Function):
    """x @ W.T + b with its backward (dx = g W, dW = g.T x, db = sum g) and forward-mode
    derivative; first order only (its backward is not itself differentiated)."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                ) -> torch.Tensor:
        return _onednn(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.save_for_forward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        grad_x = _product(grad, weight.t()) if needs_x else None
        grad_weight = _product(grad.t(), x.t()) if needs_weight else None
        grad_bias = grad.sum(0) if needs_bias and ctx.has_bias else None
        return grad_x, grad_weight, grad_bias

    @staticmethod
    def jvp(ctx, dx, dweight, dbias) -> torch.Tensor:
        x, weight = ctx.saved_tensors
        tangent = torch.zeros(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device)
        if dx is not None:
            tangent = tangent + functional.linear(dx, weight)
        if dweight is not None:
            tangent = tangent + functional.linear(x, dweight)
        if dbias is not None:
            tangent = tangent + dbias
        return tangent


_EagerOneDnnLinear = eager_form(_OneDnnLinear)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
           ) -> torch.Tensor:
    """torch.nn.functional.linear(x, weight, bias), on oneDNN where that is faster
    (`onednn_chosen`, module docstring)."""
    # The tracing check comes first (under the ONNX exporter's tracer shapes are traced
    # values); torch.onnx.is_in_onnx_export() costs about 1 us, so it is asked last.
    if (torch.jit.is_tracing() or x.device.type != "cpu" or x.dim() != 2
            or x.dtype != torch.float32 or weight.dtype != torch.float32
            or not _large(x.shape[0], x.shape[1], weight.shape[0]) or not onednn_chosen()
            or torch.onnx.is_in_onnx_export()):
        return functional.linear(x, weight, bias)
    if _forward_ad_active() or functorch_transforms_active() or (torch.is_grad_enabled() and (
            x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))):
        return pick(_OneDnnLinear, _EagerOneDnnLinear).apply(x, weight, bias)
    # Plain evaluation: the operator alone (an autograd Function call costs more).
    return _onednn(x, weight, bias)


def _forward_ad_active() -> bool:
    """Whether a forward-mode AD level is open (torch.autograd.forward_ad.dual_level, which
    torch.func.jvp opens too): the bare oneDNN operator has no forward derivative and would
    give a zero tangent without an error. Under any torch.func transform the Function is
    taken as well (the functorch check beside this one). Should torch drop this module
    global, every call takes the autograd Function, which is exact in every mode."""
    return getattr(forward_ad, "_current_level", 0) >= 0


class Linear(nn.Linear):
    """Drop-in for torch.nn.Linear (the same parameters and state_dict) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
