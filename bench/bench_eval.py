"""Evaluation cost: the trainer's episodes side by side (one batched policy call per step)
against the same episodes one by one (a batch-1 call per episode and step), in one run.

    python -m bench.bench_eval --out bench/results/eval.json

Untrained agents of the four algorithms (the `paper` profile by default), the profile's
evaluation episodes, each cut at --episode-steps so that every episode has the same length; both
modes the trainer evaluates (deploy, NFE = 1, and best-of-N; SAC: deploy only). Rounds alternate
the two ways so that machine noise hits both alike. The policy runs on CUDA when present
(``--device auto``), as in training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench.common import command_line
from bench.machine import machine
from fpmd_core.agents import make_agent
from fpmd_core.config import make_config
from fpmd_core.tasks import env_from_config, task_spec
from fpmd_core.trainer import evaluate_episodes, resolve_device

ALGOS = ("sac", "dpmd", "fpmd_r", "fpmd_m")


def timed(agent, envs, mode: str, seeds: list[int], side_by_side: bool) -> tuple[float, float]:
    """Seconds for one evaluation, and its mean return."""
    start = time.perf_counter()
    if side_by_side:
        mean_return, _ = evaluate_episodes(agent, envs, mode, seeds)
    else:
        mean_return = statistics.fmean(evaluate_episodes(agent, [env], mode, [seed])[0]
                                       for env, seed in zip(envs, seeds, strict=True))
    if agent.device.type == "cuda":
        torch.cuda.synchronize(agent.device)
    return time.perf_counter() - start, mean_return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="HalfCheetah-v5")
    parser.add_argument("--profile", default="paper", choices=["paper", "cpu"])
    parser.add_argument("--episodes", type=int, default=None,
                        help="episodes per evaluation (default: the profile's)")
    parser.add_argument("--episode-steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", default="bench/results/eval.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    result: dict = {"command": command_line(), "task": args.task, "profile": args.profile,
                    "machine": machine(),
                    "device": str(device), "episode_steps": args.episode_steps, "algos": {}}
    for algo in ALGOS:
        overrides = {"agent.algo": algo, "task.id": args.task,
                     "task.max_episode_steps": args.episode_steps}
        if args.episodes is not None:
            overrides["trainer.eval_episodes"] = args.episodes
        cfg = make_config(args.profile, overrides=overrides)
        envs = [env_from_config(cfg.task) for _ in range(cfg.trainer.eval_episodes)]
        spec = task_spec(envs[0], args.task)
        agent = make_agent(spec.obs_shape, spec.act_dim, cfg.agent, device)
        seeds = list(range(len(envs)))
        result["episodes"] = len(envs)
        for mode in ("deploy",) if algo == "sac" else ("deploy", "best_of_n"):
            runs = {"side_by_side": [], "one_by_one": []}
            for _ in range(args.rounds):
                for way in runs:
                    runs[way].append(timed(agent, envs, mode, seeds, way == "side_by_side"))
            seconds = {way: statistics.median(t for t, _ in r) for way, r in runs.items()}
            returns = {way: r[-1][1] for way, r in runs.items()}
            result["algos"].setdefault(algo, {})[mode] = {
                "seconds": seconds, "speedup": seconds["one_by_one"] / seconds["side_by_side"],
                "mean_return": returns}
            print(f"{algo:7} {mode:10} one by one {seconds['one_by_one']:7.2f} s  side by side "
                  f"{seconds['side_by_side']:7.2f} s  x{result['algos'][algo][mode]['speedup']:.1f}"
                  f"  returns {returns['one_by_one']:.2f} / {returns['side_by_side']:.2f}",
                  flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
