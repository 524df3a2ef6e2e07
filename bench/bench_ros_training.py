"""Issue 4 benchmark: collection and training throughput through ROS 2 versus in-process, one run.

    python -m bench.bench_ros_training [--rounds 2] [--out bench/results/ros_training.json]

Collection: the same policy steps the same task for ``--collect-steps`` vector steps, either in
this process (``fpmd_core.tasks.make_vector_env``: SyncVectorEnv, SAME_STEP autoreset) or through
ROS (``fpmd_ros.ros_env.RosVectorEnv`` over N lockstep ``mujoco_sim`` processes, real Fast DDS),
N = 1 and 4. Policies: a fresh FPMD-M agent of the CPU profile acting as the trainer does
(``act(obs, 'explore')``), and uniform random actions (the env cost alone). Reported: env steps/s
(vector steps x N per second), the ratio ROS / in-process and the time ROS adds per vector step.

Training: ``fpmd_core.trainer.Trainer`` with the CPU profile (FPMD-M, one env, one torch thread,
one update per env step) after a short warm-up of random actions, in-process versus over ROS with
one sim. Throughput is measured from the end of the warm-up for ``--train-seconds`` (the run then
ends itself: final evaluation, checkpoint and export are not timed): env steps/s and updates/s,
and the ratio ROS / in-process (issue 4 target: >= 0.8).

Everything is interleaved (in-process and ROS alternate, the order flips every round) so machine
noise hits both alike; each number is the median over ``--rounds``. The sims are started like the
runner starts them (``python -m fpmd_ros.sim_node --ros-args -r __ns:=/... -p mode:=lockstep``),
in namespaces unique to this process, and stopped with SIGINT (then SIGKILL) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A private DDS domain (the tests use 1..100 by pid), localhost only; set before rclpy loads and
# inherited by the sim processes. The sims' namespaces are unique to this process as well.
os.environ.setdefault('ROS_DOMAIN_ID', '77')
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import torch  # noqa: E402
from rclpy.context import Context  # noqa: E402

from bench.common import command_line  # noqa: E402
from fpmd_core.agents import make_agent  # noqa: E402
from fpmd_core.config import make_config  # noqa: E402
from fpmd_core.tasks import make_env, make_vector_env, task_spec  # noqa: E402
from fpmd_core.trainer import Trainer  # noqa: E402
from fpmd_ros.graph import SEED_STRIDE, SIM_EXECUTABLE, SIM_NODE_NAME, NodeSpec  # noqa: E402
from fpmd_ros.ros_env import RosVectorEnv  # noqa: E402
from fpmd_ros.runner import _child_setup, child_environment, node_command  # noqa: E402

ALGO = 'fpmd_m'
POLICIES = ('fpmd_m', 'random')
SIM_COUNTS = (1, 4)
WARMUP_VECTOR_STEPS = 20  # untimed steps after every reset (first-call costs, DDS queues)
STOP_TIMEOUT_S = 10.0


# --- sim processes -------------------------------------------------------------------------------

class Sims:
    """``count`` lockstep mujoco_sim processes of one task; stopped by ``stop()``."""

    def __init__(self, task: str, count: int, prefix: str, log_dir: Path):
        self.namespaces = [f'{prefix}env_{i}' for i in range(count)]
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        env = child_environment()
        for i, namespace in enumerate(self.namespaces):
            spec = NodeSpec(SIM_EXECUTABLE, SIM_NODE_NAME, namespace, {
                'task': task, 'mode': 'lockstep', 'seed': i * SEED_STRIDE})
            log = log_dir / f'{namespace}_{Path(task).name}.log'  # a task file path has slashes
            with open(log, 'w') as out:
                self.procs.append(subprocess.Popen(
                    node_command(spec), env=env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_child_setup))
            self.logs.append(log)

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f'sim process {proc.pid} exited with code {proc.returncode}; '
                                   f'its log ({log}):\n{log.read_text()[-3000:]}')

    def stop(self) -> list[int]:
        """SIGINT, then SIGKILL after STOP_TIMEOUT_S; the exit codes."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return [proc.returncode for proc in self.procs]


def ros_env(context: Context, task: str, namespaces: list[str], connect_timeout_s: float,
            step_timeout_s: float) -> RosVectorEnv:
    """A RosVectorEnv on the shared context (one DDS participant for the whole benchmark)."""
    return RosVectorEnv(task, namespaces=namespaces, step_timeout_s=step_timeout_s,
                        connect_timeout_s=connect_timeout_s, seed_stride=SEED_STRIDE,
                        context=context, node_name=f'bench_env_{time.monotonic_ns()}')


# --- collection ----------------------------------------------------------------------------------

def collect_rate(envs, policy, act_dim: int, steps: int, seed: int) -> float:
    """Env steps/s of ``steps`` vector steps (after WARMUP_VECTOR_STEPS untimed ones)."""
    rng = np.random.default_rng(seed)
    n = envs.num_envs
    obs, _ = envs.reset(seed=seed)

    def act(obs):
        if policy is None:
            return rng.uniform(-1.0, 1.0, (n, act_dim)).astype(np.float32)
        return policy.act(obs, 'explore').astype(np.float32)

    for _ in range(WARMUP_VECTOR_STEPS):
        obs = envs.step(act(obs))[0]
    start = time.perf_counter()
    for _ in range(steps):
        obs = envs.step(act(obs))[0]
    return steps * n / (time.perf_counter() - start)


def bench_collection(args, context: Context, task: str, log_dir: Path) -> list[dict]:
    env = make_env(task)
    spec = task_spec(env, task)
    env.close()
    cfg = make_config('cpu', overrides={'task.id': task, 'agent.algo': ALGO})
    torch.manual_seed(0)
    agent = make_agent(spec.obs_dim, spec.act_dim, cfg.agent, torch.device('cpu'))
    policies = {'fpmd_m': agent, 'random': None}
    rates = {(n, p, mode): [] for n in SIM_COUNTS for p in POLICIES
             for mode in ('inprocess', 'ros')}
    print(f'[{task}] starting {max(SIM_COUNTS)} sims ...', flush=True)
    sims = Sims(task, max(SIM_COUNTS), args.ns_prefix, log_dir)
    try:
        # Wait for all sims once (their start-up is not timed).
        ready = ros_env(context, task, sims.namespaces, args.connect_timeout_s,
                        args.step_timeout_s)
        ready.reset(seed=0)
        ready.close()
        for r in range(args.rounds):
            for n in SIM_COUNTS:
                for policy in POLICIES:
                    order = ('inprocess', 'ros') if r % 2 == 0 else ('ros', 'inprocess')
                    for mode in order:
                        sims.check_alive()
                        envs = (make_vector_env(task, n) if mode == 'inprocess' else
                                ros_env(context, task, sims.namespaces[:n],
                                        args.connect_timeout_s, args.step_timeout_s))
                        try:
                            rate = collect_rate(envs, policies[policy], spec.act_dim,
                                                args.collect_steps, seed=r)
                        finally:
                            envs.close()
                        rates[(n, policy, mode)].append(rate)
                        print(f'  round {r} {task} N={n} {policy:7} {mode:9} '
                              f'{rate:9.1f} env steps/s', flush=True)
    finally:
        codes = sims.stop()
        print(f'[{task}] sims stopped (exit codes {codes})', flush=True)
    rows = []
    for n in SIM_COUNTS:
        for policy in POLICIES:
            inproc = statistics.median(rates[(n, policy, 'inprocess')])
            ros = statistics.median(rates[(n, policy, 'ros')])
            rows.append({
                'task': task, 'num_envs': n, 'policy': policy,
                'inprocess_env_steps_per_s': inproc, 'ros_env_steps_per_s': ros,
                'ratio_ros_vs_inprocess': ros / inproc,
                # per vector step (all N envs stepped once)
                'ros_added_ms_per_vector_step': 1e3 * n * (1.0 / ros - 1.0 / inproc),
                'rounds': {'inprocess': rates[(n, policy, 'inprocess')],
                           'ros': rates[(n, policy, 'ros')]}})
    return rows


# --- training ------------------------------------------------------------------------------------

class Meter:
    """``Trainer.on_progress``: times the post-warm-up phase, then ends the run (total_steps)."""

    def __init__(self, warmup_steps: int, seconds: float):
        self.warmup_steps, self.seconds = warmup_steps, seconds
        self.first = self.start = self.end = None

    def __call__(self, trainer) -> None:
        now = time.perf_counter()
        point = (now, trainer.env_steps, trainer.agent.gradient_steps)
        if self.first is None:
            self.first = point
        if self.start is None and trainer.env_steps >= self.warmup_steps:
            self.start = point
        if self.start is not None:
            self.end = point
            if now - self.start[0] >= self.seconds:
                trainer.cfg.trainer.total_steps = trainer.env_steps  # the loop ends here

    def result(self) -> dict:
        (t0, s0, u0), (t1, s1, u1), (tf, sf, _) = self.start, self.end, self.first
        return {'env_steps_per_s': (s1 - s0) / (t1 - t0), 'updates_per_s': (u1 - u0) / (t1 - t0),
                'warmup_env_steps_per_s': (s0 - sf) / (t0 - tf),
                'timed_env_steps': s1 - s0, 'timed_updates': u1 - u0, 'timed_s': t1 - t0}


def train_once(args, context: Context, namespaces: list[str] | None, out_dir: Path) -> dict:
    cfg = make_config('cpu', overrides={
        'task.id': args.train_task, 'agent.algo': ALGO, 'task.num_envs': 1,
        'trainer.warmup_steps': args.train_warmup, 'trainer.total_steps': 10**9,
        'trainer.eval_interval': 0, 'trainer.eval_episodes': 1,
        'trainer.eval_best_of_n': False, 'trainer.checkpoint_interval': 0,
        'trainer.progress': False, 'trainer.device': 'cpu', 'trainer.seed': 0,
        'trainer.output_dir': str(out_dir)})
    envs = trainer = None
    if namespaces is not None:
        envs = ros_env(context, args.train_task, namespaces, args.connect_timeout_s,
                       args.step_timeout_s)
    meter = Meter(args.train_warmup, args.train_seconds)
    try:
        trainer = Trainer(cfg, envs=envs, on_progress=meter)
        trainer.run()
    finally:
        if envs is not None:
            envs.close()
        elif trainer is not None:
            trainer.envs.close()
    return meter.result()


def bench_training(args, context: Context, log_dir: Path, tmp: Path) -> dict:
    print(f'[training {args.train_task}] starting 1 sim ...', flush=True)
    sims = Sims(args.train_task, 1, args.ns_prefix + 'train_', log_dir)
    results = {'inprocess': [], 'ros': []}
    try:
        ready = ros_env(context, args.train_task, sims.namespaces, args.connect_timeout_s,
                        args.step_timeout_s)
        ready.reset(seed=0)
        ready.close()
        for r in range(args.rounds):
            for mode in (('inprocess', 'ros') if r % 2 == 0 else ('ros', 'inprocess')):
                sims.check_alive()
                result = train_once(args, context, sims.namespaces if mode == 'ros' else None,
                                    tmp / f'train_{mode}_{r}')
                results[mode].append(result)
                print(f'  round {r} training {mode:9} {result["env_steps_per_s"]:8.1f} env '
                      f'steps/s {result["updates_per_s"]:8.1f} updates/s (warm-up '
                      f'{result["warmup_env_steps_per_s"]:.0f} env steps/s)', flush=True)
    finally:
        codes = sims.stop()
        print(f'[training] sim stopped (exit codes {codes})', flush=True)
    summary = {}
    for mode, runs in results.items():
        summary[mode] = {key: statistics.median(run[key] for run in runs) for key in
                         ('env_steps_per_s', 'updates_per_s', 'warmup_env_steps_per_s')}
        summary[mode]['rounds'] = runs
    ratio = summary['ros']['env_steps_per_s'] / summary['inprocess']['env_steps_per_s']
    return {'task': args.train_task, 'algo': ALGO, 'profile': 'cpu', 'num_envs': 1,
            'updates_per_step': 1, 'warmup_steps': args.train_warmup,
            'timed_seconds': args.train_seconds, **summary,
            'ratio_env_steps_ros_vs_inprocess': ratio,
            'ratio_updates_ros_vs_inprocess':
                summary['ros']['updates_per_s'] / summary['inprocess']['updates_per_s'],
            'target_ratio': 0.8, 'meets_target': ratio >= 0.8}


# --- main ----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tasks', nargs='+', default=['InvertedPendulum-v5', 'Hopper-v5'],
                        help='collection tasks')
    parser.add_argument('--collect-steps', type=int, default=500,
                        help='timed vector steps per collection measurement')
    parser.add_argument('--train-task', default='InvertedPendulum-v5')
    parser.add_argument('--train-warmup', type=int, default=200,
                        help='env steps of random actions before updates start (not timed)')
    parser.add_argument('--train-seconds', type=float, default=15.0,
                        help='timed training (with updates) per run')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1, help='torch intra-op threads')
    parser.add_argument('--skip-collection', action='store_true')
    parser.add_argument('--skip-training', action='store_true')
    parser.add_argument('--step-timeout-s', type=float, default=30.0)
    parser.add_argument('--connect-timeout-s', type=float, default=120.0)
    parser.add_argument('--ns-prefix', default=f'bench{os.getpid()}_',
                        help='prefix of the sims\' namespaces (<prefix>env_<i>)')
    parser.add_argument('--out', default='bench/results/ros_training.json')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # SIGTERM unwinds like Ctrl-C, so the sims are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    load_before = os.getloadavg()
    started = time.perf_counter()
    context = Context()
    rclpy.init(args=[], context=context)
    result = {
        'command': command_line(),
        'benchmark': 'ros_training',
        'transport': f'{os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)")}, '
                     f'ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}, ROS_AUTOMATIC_DISCOVERY_RANGE='
                     f'{os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]}; lockstep mujoco_sim '
                     'processes, RosVectorEnv in this process',
        'settings': {k: v for k, v in vars(args).items() if k != 'out'},
        'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                    'python': platform.python_version(), 'torch_threads': args.threads},
    }
    try:
        with tempfile.TemporaryDirectory(prefix='bench_ros_training_') as tmp_name:
            tmp = Path(tmp_name)
            if not args.skip_collection:
                result['collection'] = []
                for task in args.tasks:
                    result['collection'] += bench_collection(args, context, task, tmp)
            if not args.skip_training:
                result['training'] = bench_training(args, context, tmp, tmp)
    finally:
        rclpy.try_shutdown(context=context)
    result['machine']['loadavg_before'] = list(load_before)
    result['machine']['loadavg_after'] = list(os.getloadavg())
    result['wall_s'] = time.perf_counter() - started

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + '\n')
    if 'collection' in result:
        print(f'\ncollection ({args.collect_steps} vector steps, median of {args.rounds} rounds)')
        print(f'{"task":20} {"N":>2} {"policy":7} {"in-process/s":>12} {"ROS/s":>9} '
              f'{"ROS/in":>7} {"ROS adds ms/vstep":>18}')
        for row in result['collection']:
            print(f'{row["task"]:20} {row["num_envs"]:2d} {row["policy"]:7} '
                  f'{row["inprocess_env_steps_per_s"]:12.1f} {row["ros_env_steps_per_s"]:9.1f} '
                  f'{row["ratio_ros_vs_inprocess"]:7.2f} '
                  f'{row["ros_added_ms_per_vector_step"]:18.2f}')
    if 'training' in result:
        t = result['training']
        print(f'\ntraining {t["task"]} {t["algo"]} (cpu profile, 1 env, {t["timed_seconds"]:g} s '
              f'timed after {t["warmup_steps"]} warm-up steps, median of {args.rounds} rounds)')
        print(f'{"":10} {"env steps/s":>11} {"updates/s":>9} {"warm-up steps/s":>15}')
        for mode in ('inprocess', 'ros'):
            print(f'{mode:10} {t[mode]["env_steps_per_s"]:11.1f} {t[mode]["updates_per_s"]:9.1f} '
                  f'{t[mode]["warmup_env_steps_per_s"]:15.1f}')
        print(f'ratio ROS/in-process: env steps {t["ratio_env_steps_ros_vs_inprocess"]:.2f}, '
              f'updates {t["ratio_updates_ros_vs_inprocess"]:.2f} (target >= 0.8: '
              f'{"met" if t["meets_target"] else "NOT met"})')
    print(f'written: {out} ({result["wall_s"]:.0f} s; load average before '
          f'{load_before[0]:.1f}, after {result["machine"]["loadavg_after"][0]:.1f})')


if __name__ == '__main__':
    main()
