"""Frame stacking, the one definition shared by the pixel env, the ROS vector env and the
controller. No mujoco import: a deployed controller needs only numpy for it."""

from __future__ import annotations

from collections import deque

import numpy as np


class FrameStack:
    """The last `k` frames (H, W, 3) as one (H, W, 3k) array, oldest first.

    One definition for the pixel env, the ROS vector env and the controller, so training and
    deployment stack frames the same way. `reset(frame)` fills all k slots with the frame.
    """

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"frame_stack: expected an integer >= 1, got {k}")
        self.k = k
        self._frames: deque[np.ndarray] = deque(maxlen=k)

    def reset(self, frame: np.ndarray) -> np.ndarray:
        self._frames.clear()
        for _ in range(self.k):
            self._frames.append(frame)
        return self.observation()

    def push(self, frame: np.ndarray) -> np.ndarray:
        if not self._frames:
            return self.reset(frame)
        self._frames.append(frame)
        return self.observation()

    def observation(self) -> np.ndarray:
        return np.concatenate(list(self._frames), axis=-1)

    @property
    def ready(self) -> bool:
        return len(self._frames) == self.k
