"""Issue 14 benchmark: gradient updates per second of stable-baselines3 SAC and of ours, one run.

    pip install -c constraints.txt -r bench/requirements.txt   # once: the peer, bench only
    python -m bench.bench_updates_vs_sb3 --out bench/results/updates_vs_sb3.json

One process, one torch thread, the same replay (transitions of Hopper-v5 under uniform random
actions, identical in both buffers), batch 256, and the same network sizes on both sides (2x128
and 2x256: hidden layers x width of every actor and critic MLP). Timed per gradient step,
replay sampling included on both sides:
- sb3_sac: stable-baselines3 SAC, its defaults (actor, temperature and target every step, ReLU),
  `model.train(gradient_steps=10)` per call (its per-call bookkeeping shared by 10 steps);
- sac, fpmd_m, fpmd_r: our agents with the `cpu` profile (FPMD's best-of-N with 4 particles,
  FPMD-R with 4 Euler steps), `agent.update(replay.sample(...))`.
Rounds alternate over every (size, variant), in reverse order every other round, so drift in
the machine's load hits all alike; the result is the median over rounds. Each variant reports
updates per second of wall time and of the thread's CPU time (on a shared machine the CPU-time
rate moves less), each with its ratio against sb3_sac of the same size in the same run.
The process keeps freed memory as our trainer does (`fpmd_core.memory`), for every variant.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from fpmd_core.agents import make_agent
from fpmd_core.config import gradient_steps_of_run, make_config
from fpmd_core.memory import retain_freed_memory
from fpmd_core.replay import ReplayBuffer

PEER = "sb3_sac"
OURS = {"sac": "sac", "fpmd_m": "fpmd_m", "fpmd_r": "fpmd_r"}
SB3_STEPS_PER_CALL = 10


def random_transitions(task: str, count: int, seed: int) -> dict[str, np.ndarray]:
    """`count` transitions of `task` under uniform random actions (reset at episode ends)."""
    env = gym.make(task)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    data: dict[str, list] = {k: [] for k in
                             ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")}
    for _ in range(count):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(data, (obs, action, reward, next_obs, terminated, truncated),
                              strict=True):
            data[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return {k: np.asarray(v, dtype=np.float32) for k, v in data.items()}


class Sb3Runner:
    """stable-baselines3 SAC training on a filled buffer, `SB3_STEPS_PER_CALL` steps a call."""

    steps_per_call = SB3_STEPS_PER_CALL

    def __init__(self, task: str, hidden: int, layers: int, batch_size: int,
                 transitions: dict[str, np.ndarray], seed: int):
        from stable_baselines3 import SAC
        from stable_baselines3.common.logger import configure

        count = len(transitions["rewards"])
        self.model = SAC("MlpPolicy", gym.make(task), buffer_size=count, learning_starts=0,
                         batch_size=batch_size, policy_kwargs={"net_arch": [hidden] * layers},
                         device="cpu", seed=seed, verbose=0)
        self.model.set_logger(configure(None, []))
        buffer = self.model.replay_buffer
        for i in range(count):
            done = bool(transitions["terminated"][i] or transitions["truncated"][i])
            buffer.add(transitions["obs"][i][None], transitions["next_obs"][i][None],
                       transitions["actions"][i][None], transitions["rewards"][i][None],
                       np.array([done]),
                       [{"TimeLimit.truncated": bool(transitions["truncated"][i])}])
        self.batch_size = batch_size
        actor = self.model.policy.actor.latent_pi
        self.config = {"net_arch": [hidden] * layers, "batch_size": batch_size,
                       "activations": activations(actor),
                       "target_update_interval": self.model.target_update_interval}

    def run(self) -> None:
        self.model.train(gradient_steps=self.steps_per_call, batch_size=self.batch_size)


def agent_on_replay(cfg, transitions: dict[str, np.ndarray], seed: int
                    ) -> tuple[torch.nn.Module, ReplayBuffer]:
    """The config's agent (CPU, seeded with `seed`) and a replay holding `transitions`."""
    obs_dim, act_dim = transitions["obs"].shape[1], transitions["actions"].shape[1]
    torch.manual_seed(seed)
    agent = make_agent(obs_dim, act_dim, cfg.agent, torch.device("cpu"),
                       gradient_steps_of_run(cfg))
    replay = ReplayBuffer(len(transitions["rewards"]), obs_dim, act_dim, seed)
    replay.add(transitions["obs"], transitions["actions"], transitions["rewards"],
               transitions["next_obs"], transitions["terminated"])
    return agent, replay


class OursRunner:
    """One of our agents (`cpu` profile at the given size) training on a filled buffer."""

    steps_per_call = 1

    def __init__(self, task: str, algo: str, hidden: int, layers: int, batch_size: int,
                 transitions: dict[str, np.ndarray], seed: int):
        cfg = make_config("cpu", overrides={
            "task.id": task, "agent.algo": algo, "agent.hidden": hidden, "agent.layers": layers,
            "agent.batch_size": batch_size, "trainer.seed": seed})
        self.agent, self.replay = agent_on_replay(cfg, transitions, seed)
        self.batch_size = batch_size
        fields = ("hidden", "layers", "batch_size", "actor_interval", "particles", "flow_steps",
                  "meanflow_steps")
        self.config = {k: getattr(cfg.agent, k) for k in fields}
        self.config["activations"] = activations(self.agent.critic.online)

    def run(self) -> None:
        self.agent.update(self.replay.sample(self.batch_size, self.agent.device))


def activations(module: torch.nn.Module) -> list[str]:
    """Class names of the parameter-free layers of an MLP (its activation functions)."""
    return sorted({type(m).__name__ for m in module.modules()
                   if not list(m.children()) and not list(m.parameters())})


def timed_round(runner, seconds: float) -> tuple[float, float]:
    """(updates per wall second, updates per CPU second of this thread) over `seconds`."""
    runner.run()
    steps, wall, cpu = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - wall < seconds:
        runner.run()
        steps += runner.steps_per_call
    return steps / (time.perf_counter() - wall), steps / (time.thread_time() - cpu)


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def parse_size(text: str) -> tuple[int, int]:
    """'2x256' -> (layers 2, width 256)."""
    try:
        layers, hidden = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size: expected LAYERSxWIDTH such as 2x256, got {text!r}") from None
    return layers, hidden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="Hopper-v5")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(2, 128), (2, 256)],
                        help="hidden layers x width, e.g. 2x128 2x256")
    parser.add_argument("--variants", nargs="+", default=[PEER, *OURS],
                        choices=[PEER, *OURS])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--transitions", type=int, default=20_000,
                        help="random-action transitions in the replay")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per variant per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per variant, untimed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="", help="a name for this run in the result")
    parser.add_argument("--out", default="bench/results/updates_vs_sb3.json")
    args = parser.parse_args()
    if PEER not in args.variants:
        parser.error(f"--variants: the ratios need {PEER}")
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as fpmd_core.trainer.Trainer does; SB3 shares the process
    transitions = random_transitions(args.task, args.transitions, args.seed)
    runners, configs = {}, {}
    for layers, hidden in args.sizes:
        size = f"{layers}x{hidden}"
        for variant in args.variants:
            if variant == PEER:
                runner = Sb3Runner(args.task, hidden, layers, args.batch_size, transitions,
                                   args.seed)
            else:
                runner = OursRunner(args.task, OURS[variant], hidden, layers, args.batch_size,
                                    transitions, args.seed)
            runners[(size, variant)] = runner
            configs.setdefault(size, {})[variant] = runner.config
    for runner in runners.values():  # first calls pay one-off costs (torch.func's set-up)
        timed_round(runner, args.warmup)
    rates: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in runners}
    for round_index in range(args.rounds):
        order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for key in order:
            rates[key].append(timed_round(runners[key], args.seconds))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

    import stable_baselines3

    result = {
        "command": shlex.join(["python", "-m", "bench.bench_updates_vs_sb3", *sys.argv[1:]]),
        "label": args.label, "git": git_revision(), "task": args.task,
        "batch_size": args.batch_size, "threads": args.threads, "rounds": args.rounds,
        "seconds": args.seconds, "warmup": args.warmup, "transitions": args.transitions,
        "versions": {"torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
                     "python": platform.python_version()},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "sizes": {},
    }
    for size, variants in configs.items():
        peer_wall = statistics.median(r[0] for r in rates[(size, PEER)])
        peer_cpu = statistics.median(r[1] for r in rates[(size, PEER)])
        table = result["sizes"][size] = {}
        for variant, config in variants.items():
            walls = [r[0] for r in rates[(size, variant)]]
            cpus = [r[1] for r in rates[(size, variant)]]
            table[variant] = {
                "updates_per_s": statistics.median(walls),
                "ratio_vs_sb3": statistics.median(walls) / peer_wall,
                "updates_per_cpu_s": statistics.median(cpus),
                "ratio_vs_sb3_cpu": statistics.median(cpus) / peer_cpu,
                "rounds_updates_per_s": walls, "rounds_updates_per_cpu_s": cpus,
                "config": config}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'size':6} {'variant':8} {'updates/s':>10} {'vs SB3':>7} {'per CPU s':>10} "
          f"{'vs SB3':>7}")
    for size, table in result["sizes"].items():
        for variant, v in table.items():
            print(f"{size:6} {variant:8} {v['updates_per_s']:10.1f} {v['ratio_vs_sb3']:7.2f} "
                  f"{v['updates_per_cpu_s']:10.1f} {v['ratio_vs_sb3_cpu']:7.2f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
