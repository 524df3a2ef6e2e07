"""Custom autograd Functions without the per-call cost of torch's newer Function form.

torch.func transforms (torch.func.jvp, grad, vmap) accept only Functions whose `forward`
takes no ctx and which define `setup_context`; for exactly those, `Function.apply` binds the
call's arguments with inspect.signature at every call: about 10 us, which summed over an FPMD-M
update's calls was 4-7 % of its time at 2x128 on one CPU thread. `eager_form` derives the older
form (ctx in forward, same backward and jvp), which apply calls directly; `pick` chooses it
except while a torch.func transform runs.
"""

from __future__ import annotations

import torch

_transforms_active = getattr(torch._C, "_are_functorch_transforms_active", None)


def functorch_transforms_active() -> bool:
    """Whether a torch.func transform is running (the test torch's own Function.apply makes);
    True if this torch no longer has it, so the transformable form is always safe."""
    return _transforms_active is None or bool(_transforms_active())


def eager_form(function: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """`function` (setup_context form) in the older form: forward(ctx, *inputs) runs its
    forward, then its setup_context on the same ctx; backward and jvp are its own."""

    def forward(ctx, *inputs):
        output = function.forward(*inputs)
        function.setup_context(ctx, inputs, output)
        return output

    members = {"forward": staticmethod(forward), "backward": staticmethod(function.backward),
               "__doc__": f"{function.__name__} in the ctx-in-forward form (fpmd_core.autograd)."}
    if "jvp" in vars(function):
        members["jvp"] = staticmethod(function.jvp)
    return type(f"Eager{function.__name__}", (torch.autograd.Function,), members)


def pick(function: type[torch.autograd.Function], eager: type[torch.autograd.Function]
         ) -> type[torch.autograd.Function]:
    """`eager` outside torch.func transforms, `function` inside them."""
    return function if functorch_transforms_active() else eager
