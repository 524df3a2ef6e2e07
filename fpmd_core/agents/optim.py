"""The one optimiser every agent uses."""

from __future__ import annotations

from collections.abc import Iterable

import torch

IMPLEMENTATION_KEYS = ("fused", "foreach")
"""Adam's param_group entries that choose how the step is computed, not what it computes."""


def adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """torch's Adam with its fused kernel: the same update (to float rounding), one kernel per
    parameter tensor where the default runs about ten operations per tensor. On one CPU
    thread a critic step at 2x128 took 62 us instead of 217."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)`, keeping this optimizer's own choice of kernel: a
    state_dict's param_groups also carry `fused` and `foreach`, and a checkpoint written with
    the default Adam would otherwise turn the fused kernel off on resume."""
    kept = [{k: group[k] for k in IMPLEMENTATION_KEYS if k in group}
            for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, implementation in zip(optimizer.param_groups, kept, strict=True):
        group.update(implementation)
