"""Closed-loop benchmark of policy_controller across two processes through Fast DDS (issue 5).

    python -m bench.bench_control_loop [--duration 6] [--out bench/results/control_loop.json]

This process is the "robot": a thread publishes observations (std_msgs/Float32MultiArray) at
100, 500 and 1000 Hz while the main thread receives the commands. The node under test runs in
another process:

- ``controller``: ``policy_controller`` (console script module) with an FPMD-M export (cpu
  profile) for HalfCheetah-v5, ``control_rate_hz`` = the publishing rate, timer driven as
  deployed (``trigger:=timer``);
- ``controller_obs``: the same with ``trigger:=observation`` (one control step per observation,
  the timer only a staleness watchdog): compared with ``echo_event``;
- ``echo_timer``: a bare node with the controller's structure and QoS (cache the newest
  observation, publish it back as the command from a steady timer at the same rate), no
  inference: the transport plus tick-phase floor the controller is compared with;
- ``echo_event``: republishes each observation as a command from its subscription callback:
  the pure transport round trip.

Latency is observation publish -> command receipt (CLOCK_MONOTONIC is shared by processes). The
publisher cycles through a bank of distinct observations; each command is matched to the
observation it was computed from by its value (policy(obs) for the controller, obs itself for
the echoes) and counted once, at its first arrival. A timer-driven node adds the wait until its
next tick (up to one period) to that latency by design. Also recorded: the achieved command
rate, the fraction of observations answered, and the controller's own diagnostics (inference
latency p50/p99 as it measures it). At the end, the controller (observation trigger) runs SAC
and DPMD (NFE 20) exports at 500 Hz so its inference latency can be compared across algorithms
in the same run.
Numbers are noisy on a shared machine; the JSON records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Own DDS domain (the tests use 1..100), localhost only.
os.environ.setdefault('ROS_DOMAIN_ID', str(101 + os.getpid() % 100))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

import numpy as np  # noqa: E402

from bench.common import RESULTS, child_env, command_line  # noqa: E402

TASK = 'HalfCheetah-v5'
RATES = (100.0, 500.0, 1000.0)
BANK = 128  # distinct observations cycled by the publisher
MATCH_TOL = 1e-5
WARMUP_S = 1.0
ALGO_RATE = 500.0


# --- the echo node (run as a separate process) ----------------------------------------------------

def run_echo(mode: str, rate_hz: float) -> int:
    import rclpy
    from rclpy.clock import Clock, ClockType
    from rclpy.executors import ExternalShutdownException
    from std_msgs.msg import Float32MultiArray, Float64MultiArray

    from fpmd_ros import messages
    from fpmd_ros.qos import COMMAND_QOS, INPUT_QOS

    rclpy.init()
    node = rclpy.create_node(f'echo_{mode}')
    pub = node.create_publisher(Float64MultiArray, 'commands', COMMAND_QOS)
    latest = []

    if mode == 'event':
        def on_obs(msg):
            pub.publish(messages.encode_command(np.asarray(msg.data, np.float64)))
    else:
        def on_obs(msg):
            latest[:] = [msg]

        def on_tick():
            if latest:
                pub.publish(messages.encode_command(np.asarray(latest[0].data, np.float64)))

        node.create_timer(1.0 / rate_hz, on_tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
    node.create_subscription(Float32MultiArray, 'observation', on_obs, INPUT_QOS)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# --- the robot side (this process) --------------------------------------------------------------

def export_policies(directory: Path) -> dict[str, Path]:
    import torch

    from fpmd_core.agents import make_agent
    from fpmd_core.config import make_config
    from fpmd_core.export import export_onnx
    from fpmd_core.tasks import make_env, task_spec

    paths = {}
    for algo in ('fpmd_m', 'sac', 'dpmd'):
        cfg = make_config('cpu', overrides={'task.id': TASK, 'agent.algo': algo})
        env = make_env(cfg.task.id)
        spec = task_spec(env, cfg.task.id)
        env.close()
        torch.manual_seed(0)
        agent = make_agent(spec.obs_dim, spec.act_dim, cfg.agent, torch.device('cpu'))
        paths[algo] = export_onnx(agent, spec, cfg, directory / f'{algo}.onnx')
    return paths


class Robot:
    """Publishes the observation bank at a rate; matches commands to observations."""

    def __init__(self, node, bank: np.ndarray, expected: np.ndarray):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Float32MultiArray, Float64MultiArray

        from fpmd_ros import messages

        # Offered like mujoco_sim's observation (RELIABLE); received like a ros2_control reader.
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        receive_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.node = node
        self.msgs = [messages.to_float32_multiarray(o, [('observation', o.size)]) for o in bank]
        self.expected = expected  # (BANK, act) the command each observation should produce
        # Observations whose command another one also produces (an untrained DPMD saturates at
        # the bounds) cannot be told apart: their commands are not timed.
        gaps = np.max(np.abs(expected[:, None] - expected[None]), axis=2)
        gaps[np.diag_indices(len(expected))] = np.inf
        self.distinct = gaps.min(axis=1) > 10 * MATCH_TOL
        self.pub = node.create_publisher(Float32MultiArray, 'observation', reliable)
        self.sub = node.create_subscription(Float64MultiArray, 'commands', self._on_command,
                                            receive_qos)
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.last_send = np.full(len(self.msgs), np.nan)  # monotonic s of the latest send
            self.answered = np.ones(len(self.msgs), bool)  # latest send already answered
            self.latencies: list[float] = []
            self.commands = 0
            self.unmatched = 0
            self.ambiguous = 0
            self.sent = 0
            self.sent_distinct = 0

    def _on_command(self, msg) -> None:
        now = time.monotonic()
        command = np.asarray(msg.data, np.float64)
        with self.lock:
            self.commands += 1
            if command.shape != self.expected.shape[1:]:
                self.unmatched += 1
                return
            error = np.max(np.abs(self.expected - command), axis=1)
            j = int(np.argmin(error))
            if error[j] > MATCH_TOL:
                self.unmatched += 1
                return
            if not self.distinct[j]:
                self.ambiguous += 1
            elif not self.answered[j]:
                self.answered[j] = True
                self.latencies.append(now - self.last_send[j])

    def publish_loop(self, rate_hz: float, stop: threading.Event) -> None:
        period = 1.0 / rate_hz
        next_t = time.monotonic()
        i = 0
        while not stop.is_set():
            now = time.monotonic()
            if now < next_t:
                time.sleep(next_t - now)
            j = i % len(self.msgs)
            with self.lock:
                self.last_send[j] = time.monotonic()
                self.answered[j] = False
                self.sent += 1
                self.sent_distinct += int(self.distinct[j])
            self.pub.publish(self.msgs[j])
            i += 1
            next_t += period
            if time.monotonic() - next_t > 0.1:  # fell far behind: do not burst to catch up
                next_t = time.monotonic()


def start_target(target: str, rate_hz: float, policy: Path | None) -> subprocess.Popen:
    env = child_env()
    if target.startswith('controller'):
        trigger = 'observation' if target == 'controller_obs' else 'timer'
        cmd = [sys.executable, '-m', 'fpmd_ros.controller_node', '--ros-args',
               '-p', f'policy:={policy}', '-p', f'control_rate_hz:={rate_hz}',
               '-p', f'trigger:={trigger}',
               '-p', 'autostart:=true', '-p', 'state_timeout_s:=0.5',
               '--log-level', 'warn']
    else:
        cmd = [sys.executable, '-m', 'bench.bench_control_loop', '--echo', target.split('_')[1],
               '--rate', str(rate_hz)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def stop_target(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spin_for(executor, seconds: float, until=None) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if until is not None and until():
            return True
        executor.spin_once(timeout_sec=0.05)
    return until() if until is not None else True


def measure(executor, robot: Robot, diagnostics: dict, target: str, rate_hz: float,
            duration_s: float, policy: Path | None, algo: str) -> dict:
    proc = start_target(target, rate_hz, policy)
    stop = threading.Event()
    thread = threading.Thread(target=robot.publish_loop, args=(rate_hz, stop), daemon=True)
    row = {'target': target,
           'algorithm': algo if target.startswith('controller') else None,
           'rate_hz': rate_hz, 'duration_s': duration_s}
    try:
        robot.reset()
        diagnostics.clear()
        if not spin_for(executor, 30.0, lambda: robot.sub.get_publisher_count() > 0
                        and robot.pub.get_subscription_count() > 0):
            raise RuntimeError(f'{target} did not appear within 30 s')
        thread.start()
        if not spin_for(executor, 15.0, lambda: len(robot.latencies) > 0):
            raise RuntimeError(f'{target}: no matching command within 15 s')
        spin_for(executor, WARMUP_S)
        robot.reset()
        diagnostics.clear()
        t0 = time.monotonic()
        spin_for(executor, duration_s)
        elapsed = time.monotonic() - t0
        with robot.lock:
            latencies = np.asarray(robot.latencies) * 1e3
            sent, commands, unmatched = robot.sent, robot.commands, robot.unmatched
            sent_distinct = robot.sent_distinct
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=2)
        stop_target(proc)
    row.update({
        'sent': sent, 'send_rate_hz': sent / elapsed,
        'commands': commands, 'command_rate_hz': commands / elapsed,
        'answered_fraction': latencies.size / max(sent_distinct, 1),
        'timed_observations': sent_distinct,
        'unmatched_commands': unmatched,
        'latency_ms': ({'p50': float(np.percentile(latencies, 50)),
                        'p90': float(np.percentile(latencies, 90)),
                        'p99': float(np.percentile(latencies, 99)),
                        'max': float(latencies.max())} if latencies.size else None),
    })
    if target.startswith('controller') and diagnostics:
        row['controller_diagnostics'] = {k: diagnostics[k] for k in (
            'achieved_rate_hz', 'inference_latency_p50_ms', 'inference_latency_p99_ms',
            'safety_state', 'trouble_episodes') if k in diagnostics}
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--duration', type=float, default=6.0, help='seconds measured per run')
    parser.add_argument('--out', default=str(RESULTS / 'control_loop.json'))
    parser.add_argument('--rates', default=','.join(f'{r:g}' for r in RATES))
    parser.add_argument('--no-algos', action='store_true',
                        help='skip the SAC / DPMD inference comparison')
    parser.add_argument('--echo', choices=('event', 'timer'), help=argparse.SUPPRESS)
    parser.add_argument('--rate', type=float, default=100.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo:
        return run_echo(args.echo, args.rate)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    from fpmd_core.runtime import OnnxPolicy
    from fpmd_ros import messages

    rates = [float(r) for r in args.rates.split(',')]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix='bench_control_loop_') as tmp:
        policies = export_policies(Path(tmp))
        rng = np.random.default_rng(0)
        reference = OnnxPolicy(policies['fpmd_m'])
        obs_dim = reference.metadata['obs_dim']
        bank = rng.normal(0.0, 0.5, size=(BANK, obs_dim)).astype(np.float32)
        expected = {algo: np.clip(np.asarray(OnnxPolicy(path)(bank), np.float64),
                                  reference.metadata['action_low'],
                                  reference.metadata['action_high'])
                    for algo, path in policies.items()}

        rclpy.init()
        node = rclpy.create_node('bench_robot')
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        diagnostics: dict = {}

        def on_diagnostics(msg):
            for status in msg.status:
                if 'policy_controller' in status.name:
                    diagnostics.update(messages.diagnostic_values(status))

        node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
        rows = []
        plan = [(target, rate, 'fpmd_m') for rate in rates
                for target in ('echo_event', 'echo_timer', 'controller', 'controller_obs')]
        if not args.no_algos:
            plan += [('controller_obs', ALGO_RATE, algo) for algo in ('sac', 'dpmd')]
        try:
            for target, rate, algo in plan:
                identity = bank.astype(np.float64)
                robot_expected = expected[algo] if target.startswith('controller') else identity
                robot = Robot(node, bank, robot_expected)
                try:
                    row = measure(executor, robot, diagnostics, target, rate, args.duration,
                                  policies[algo], algo)
                except RuntimeError as error:
                    row = {'target': target, 'algorithm': algo, 'rate_hz': rate,
                           'error': str(error)}
                finally:
                    node.destroy_subscription(robot.sub)
                    node.destroy_publisher(robot.pub)
                rows.append(row)
                print(format_row(row), flush=True)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()

    import onnxruntime

    result = {
        'command': command_line(),
        'benchmark': 'control_loop',
        'task': TASK,
        'obs_dim': int(obs_dim),
        'act_dim': int(reference.metadata['act_dim']),
        'policy': 'fpmd_m (cpu profile), untrained; one-step ONNX export',
        'transport': 'Fast DDS (rmw_fastrtps_cpp), ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST',
        'qos': 'observation RELIABLE writer -> BEST_EFFORT depth-1 reader; commands RELIABLE '
               'depth 1 -> RELIABLE depth 100 reader',
        'latency_definition': 'observation publish -> first receipt of the command computed '
                              'from it (timer-driven nodes include the wait for their tick)',
        'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                    'python': platform.python_version(),
                    'onnxruntime': onnxruntime.__version__,
                    'loadavg_before': load_before, 'loadavg_after': os.getloadavg()},
        'rows': rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + '\n')
    print(f'\nwrote {out}')
    print(table(rows))
    return 0


def format_row(row: dict) -> str:
    if 'error' in row:
        return f"{row['target']:<11} {row.get('algorithm') or '':<7} {row['rate_hz']:>6g} Hz  " \
               f"ERROR {row['error']}"
    lat = row['latency_ms'] or {}
    diag = row.get('controller_diagnostics', {})
    inference = (f"{float(diag['inference_latency_p50_ms']):.3f}/"
                 f"{float(diag['inference_latency_p99_ms']):.3f}"
                 if 'inference_latency_p50_ms' in diag else '-')
    return (f"{row['target']:<11} {row.get('algorithm') or '-':<7} {row['rate_hz']:>6g} "
            f"{row['send_rate_hz']:>8.1f} {row['command_rate_hz']:>8.1f} "
            f"{row['answered_fraction']:>6.2f} {lat.get('p50', float('nan')):>7.3f} "
            f"{lat.get('p99', float('nan')):>7.3f} {lat.get('max', float('nan')):>7.2f} "
            f"{inference:>13}")


def table(rows: list[dict]) -> str:
    header = (f"{'target':<11} {'algo':<7} {'rate':>6} {'sent/s':>8} {'cmds/s':>8} "
              f"{'answd':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'infer p50/p99':>13}")
    return '\n'.join([header, *(format_row(r) for r in rows)])


if __name__ == '__main__':
    sys.exit(main())
