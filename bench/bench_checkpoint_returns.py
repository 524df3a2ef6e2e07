"""Issue 16 diagnostic: trainer checkpoints' returns over many episodes.

    python -m bench.bench_checkpoint_returns CHECKPOINT [CHECKPOINT ...] [--episodes 100]
        [--mode deploy] [--first-seed 10000] [--out FILE.json]

The trainer evaluates on `trainer.eval_episodes` episodes (5 in `cpu`): enough for a learning
curve, too few to compare two runs whose final returns differ by less than a few standard
deviations of one episode's return (on Reacher 1.5 to 5, with the target's place). This runs each
checkpoint's policy on --episodes episodes side by side (`trainer.run_episodes`, the
trainer's own evaluation), seeds --first-seed onwards (not the trainer's evaluation seeds), in
deploy mode (NFE = 1 from x0 = 0) or best-of-N, and reports the mean return, its standard error
and, in goal tasks, the final goal distance.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from bench.bench_straightness import load_agent
from bench.common import require_checkpoints, write_results
from fpmd_core.config import ALGORITHMS
from fpmd_core.tasks import env_from_config
from fpmd_core.trainer import run_episodes

MODES = ("deploy", "best_of_n")


def checkpoint_returns(path: Path, episodes: int, mode: str, first_seed: int) -> dict:
    agent, cfg, env_steps, _ = load_agent(path, torch.device("cpu"), ALGORITHMS)
    if mode == "best_of_n" and cfg.agent.algo == "sac":
        raise ValueError(f"{path}: SAC has no best-of-N mode; use --mode deploy")
    envs = [env_from_config(cfg.task) for _ in range(episodes)]
    try:
        results = run_episodes(agent, envs, mode, list(range(first_seed, first_seed + episodes)))
    finally:
        for env in envs:
            env.close()
    returns = results.returns
    distances = results.final_goal_distances
    return {
        "checkpoint": str(path), "task": cfg.task.id, "algo": cfg.agent.algo,
        "env_steps": env_steps, "mode": mode, "episodes": episodes, "first_seed": first_seed,
        "return_mean": float(returns.mean()),
        "return_standard_error": float(returns.std(ddof=1) / math.sqrt(episodes)),
        "final_goal_distance_mean": None if distances is None else float(np.mean(distances)),
        "returns": [float(r) for r in returns],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--mode", choices=MODES, default="deploy")
    parser.add_argument("--first-seed", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.episodes < 2:
        parser.error(f"--episodes: expected at least 2 (for a standard error), got "
                     f"{args.episodes}")
    if args.first_seed < 0:
        parser.error(f"--first-seed: expected at least 0, got {args.first_seed}")
    require_checkpoints(parser, args.checkpoints)
    results = []
    for path in args.checkpoints:
        try:
            results.append(row := checkpoint_returns(path, args.episodes, args.mode,
                                                     args.first_seed))
        except ValueError as err:
            parser.error(str(err))
        distance = row["final_goal_distance_mean"]
        print(f"{path}: {row['algo']} {row['task']} at {row['env_steps']} env steps, "
              f"{args.mode}: {row['return_mean']:.2f} ± {row['return_standard_error']:.2f} "
              f"(standard error, {args.episodes} episodes)"
              + ("" if distance is None else f", final goal distance {distance:.4f} m"),
              flush=True)
    if args.out:
        write_results(args.out, results)


if __name__ == "__main__":
    main()
