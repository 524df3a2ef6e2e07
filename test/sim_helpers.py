"""Helpers for tests that need running ``mujoco_sim`` nodes and in-process reference envs."""

from __future__ import annotations

import threading

import gymnasium as gym
import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.parameter import Parameter

from fpmd_ros.sim.node import MujocoSimNode


class RunningSim:
    """A MujocoSimNode on its own context and executor thread: a separate DDS participant,
    as if it were another process. ``stop()`` makes it vanish like a killed process."""

    def __init__(self, namespace: str, **parameters):
        self.namespace = namespace
        self.context = Context()
        rclpy.init(context=self.context)
        try:
            self.node = MujocoSimNode(
                namespace=namespace, context=self.context,
                parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        except BaseException:
            rclpy.shutdown(context=self.context)
            raise
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, name=f'sim {namespace}', daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def stop(self) -> None:
        if not self.context.ok():
            return
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


class SeedPerEpisode(gym.Wrapper):
    """In-process mirror of the sim node's seed rule: the n-th reset after ``reset(seed=s)``
    uses seed ``s + n`` (also when reset is called without a seed, e.g. by autoreset)."""

    def __init__(self, env: gym.Env, seed: int = 0):
        super().__init__(env)
        self._seed, self._count = seed, 0

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._seed, self._count = seed, 0
        seed = self._seed + self._count
        self._count += 1
        return self.env.reset(seed=seed, options=options)
