"""Preallocated replay buffer (numpy), sampled with its own seeded generator."""

from __future__ import annotations

import numpy as np
import torch


class ReplayBuffer:
    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def __init__(self, capacity: int, obs_shape: int | tuple[int, ...], act_dim: int, seed: int):
        """Observations of shape (H, W, C) are camera frames and are stored as uint8."""
        self.capacity = capacity
        obs_shape = (obs_shape,) if isinstance(obs_shape, int) else tuple(obs_shape)
        shapes = {"obs": obs_shape, "actions": (act_dim,), "rewards": (),
                  "next_obs": obs_shape, "terminated": ()}
        obs_dtype = np.uint8 if len(obs_shape) == 3 else np.float32
        self.data = {k: np.zeros((capacity, *shapes[k]),
                                 dtype=obs_dtype if k.endswith("obs") else np.float32)
                     for k in self.FIELDS}
        self.size = 0
        self.pos = 0
        self.rng = np.random.default_rng(seed)

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        """Add a batch of transitions (one per env)."""
        values = dict(zip(self.FIELDS, (obs, actions, rewards, next_obs, terminated), strict=True))
        n = len(np.asarray(rewards))
        idx = (self.pos + np.arange(n)) % self.capacity
        for key, value in values.items():
            self.data[key][idx] = value
        self.pos = int((self.pos + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def sample(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        idx = self.rng.integers(0, self.size, size=batch_size)
        return {k: torch.as_tensor(v[idx], device=device) for k, v in self.data.items()}

    def state_dict(self) -> dict:
        """Filled part only, as tensors (loadable with weights_only=True)."""
        return {
            "data": {k: torch.from_numpy(v[: self.size].copy()) for k, v in self.data.items()},
            "pos": self.pos, "size": self.size, "capacity": self.capacity,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"replay capacity: checkpoint has {state['capacity']}, config has {self.capacity}")
        for key, value in state["data"].items():
            if tuple(value.shape[1:]) != self.data[key].shape[1:]:
                raise ValueError(f"replay {key}: checkpoint shape {tuple(value.shape)} does not "
                                 f"match {self.data[key].shape[1:]}")
            self.data[key][: len(value)] = value.numpy()
        self.pos, self.size = int(state["pos"]), int(state["size"])
        self.rng.bit_generator.state = state["rng"]
