"""Policies. Generative ones share `generate(obs, x_init, steps)`: a deterministic map from
initial noise to an action, so best-of-N sampling, TD targets and the exported deploy graph
all use the same code."""

from .diffusion import DiffusionPolicy
from .flow import FlowPolicy
from .gaussian import GaussianPolicy
from .meanflow import MeanFlowPolicy

__all__ = ["DiffusionPolicy", "FlowPolicy", "GaussianPolicy", "MeanFlowPolicy"]
