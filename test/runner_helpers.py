"""Helpers for tests that run a graph through ``python -m fpmd_ros.runner`` (real processes,
real DDS) and watch it from this process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from ros_helpers import fresh_name, reliable_qos, spin_until

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The runner's nodes have fixed names (env_0, /trainer, ...). Their own domain, apart from the
# 1..100 that conftest gives test runs, keeps a concurrent run of another suite from answering.
DOMAIN_ID = 101 + os.getpid() % 100


def runner_environment() -> dict:
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(DOMAIN_ID)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['PYTHONUNBUFFERED'] = '1'
    return env


class RunnerProcess:
    """``python -m fpmd_ros.runner <graph> <args>`` with its output collected line by line
    (``module``: another command of the package, e.g. ``fpmd_ros.rehearsal``, given ``args``
    only when ``graph`` is None)."""

    def __init__(self, graph: str | None, *args: str, module: str = 'fpmd_ros.runner'):
        self.started = time.monotonic()
        command = [graph, *args] if graph is not None else list(args)
        self.proc = subprocess.Popen(
            [sys.executable, '-m', module, *command], cwd=REPO_ROOT,
            env=runner_environment(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return ''.join(self.lines)

    def wait_for_line(self, pattern: str, timeout_s: float) -> re.Match | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                return None
            time.sleep(0.1)
        return None

    def pid_of(self, node_name: str) -> int:
        """The pid of the latest process started for ``node_name`` (e.g. /env_1/mujoco_sim)."""
        pids = re.findall(rf'started {re.escape(node_name)} \(pid (\d+)\)', self.output)
        assert pids, f'{node_name} was not started:\n{self.output}'
        return int(pids[-1])

    def wait(self, timeout_s: float) -> int:
        """The exit code; on timeout the runner is stopped and the test fails (never hangs)."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f'runner still running after {timeout_s} s:\n'
                                 f'{self.output[-5000:]}') from None
        finally:
            self._reader.join(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Listener:
    """Subscriptions on the runner's domain, spun on demand (a separate DDS participant)."""

    def __init__(self):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = rclpy.create_node(fresh_name('test_listener'), context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.messages: dict[str, list] = {}

    def subscribe(self, msg_type, topic: str, qos=None) -> list:
        received = self.messages.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, received.append, qos or reliable_qos(50))
        return received

    def spin_until(self, predicate, timeout_s: float) -> bool:
        return spin_until(self.executor, predicate, timeout_s, step_s=0.05)

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.executor.shutdown(timeout_sec=1.0)
        rclpy.shutdown(context=self.context)


def trainer_statuses(arrays) -> list[tuple[int, str, dict]]:
    """(level, message, values) of every ``trainer: training`` status in DiagnosticArrays."""
    found = []
    for array in arrays:
        for status in array.status:
            if status.name == 'trainer: training':
                level = status.level[0] if isinstance(status.level, bytes) else int(status.level)
                found.append((level, status.message, {kv.key: kv.value for kv in status.values}))
    return found


# A task with several actuators, so that command sizes are checked for more than one value.
POLICY_TASK = 'Hopper-v5'


def export_untrained_policy(path: Path, task: str = POLICY_TASK, pixels: bool = False,
                            image_size: int = 32, hidden: int = 16,
                            seed: int | None = None) -> Path:
    """A real exported policy (untrained: its metadata is what matters here); `pixels`: one that
    acts from stacked camera frames (profile cpu_pixels, 3 frames); `seed`: the same weights
    every time (tests that compare actions with expected values)."""
    import torch

    from fpmd_core.agents import make_agent
    from fpmd_core.config import make_config
    from fpmd_core.export import export_onnx
    from fpmd_core.tasks import env_from_config, task_spec

    overrides = {'task.id': task, 'agent.hidden': hidden}
    if pixels:
        overrides['task.image_size'] = image_size
    cfg = make_config('cpu_pixels' if pixels else 'cpu', overrides=overrides)
    env = env_from_config(cfg.task)
    spec = task_spec(env, task)
    env.close()
    if seed is not None:
        torch.manual_seed(seed)
    agent = make_agent(spec.obs_shape, spec.act_dim, cfg.agent, torch.device('cpu'))
    return export_onnx(agent, spec, cfg, path)
