"""Issue 15 benchmark: the 3-joint arm (sim/arm_reach.yaml) reaches within 2 cm of its goal in 30
minutes of training on a 2-core CPU.

    nice python -m bench.bench_arm_reach [--algo fpmd_m] [--total-steps 50000] [--seeds 0 1 2] \
        [--over-ros] [--eval-episodes 20] [--label NAME] [--from-json]

Each seed is one training run started as its own process, with ``./fpmd train``'s configuration
(config/train_sim.yaml: the ``cpu`` profile, reward scale 1.0, critic lr 1e-3, a 5k-step random
warm-up, 5 evaluation episodes; FPMD-M unless ``--algo``) and the arm task:

- in-process (default): ``python -m fpmd_core.cli --config config/train_sim.yaml --set
  task.id=sim/arm_reach.yaml --set agent.algo=A --set trainer.total_steps=N ...``
  (what ``fpmd-train`` runs);
- ``--over-ros``: ``python -m fpmd_ros.runner train_sim task:=sim/arm_reach.yaml algo:=A
  total_steps:=N output_dir:=...`` (what ``./fpmd train`` runs after its setup: the trainer
  stepping a ``mujoco_sim`` node over ROS 2), in a DDS domain of its own (``--ros-domain-id``).

Recorded per run: the command, wall time and CPU time (user + system of the run and every process
it started: on a shared machine the wall time is pessimistic, the CPU time is not), the trainer's
evaluations (its eval.csv: mean, median and worst final goal distance over the evaluation
episodes, at each evaluation), the evaluation from which on the mean stays within 2 cm, and the
exported policy (policy.onnx, run by onnxruntime as deployed) evaluated again over
``--eval-episodes`` episodes of other seeds than the trainer's. Written to
``bench/results/arm_reach/<label>.json`` and a curve ``<label>.png`` (final goal distance against
env steps and against wall time, per seed: mean solid, worst dashed, the 2 cm target dotted).
The run folders (``bench/results/arm_reach/<label>/seed_<s>/``: the trainer's outputs and its log,
train.log) are not committed; ``--from-json`` re-makes the summary and the PNG from the JSON's runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import REPO, RESULTS, child_env, command_line, json_text
from bench.machine import machine

TASK = "sim/arm_reach.yaml"
CONFIG = "config/train_sim.yaml"
TARGET_M = 0.02
TARGET_WALL_S = 30 * 60
OUT_DIR = RESULTS / "arm_reach"
# Seeds of the final policy's evaluation: apart from the trainer's (10000 + 1000 * seed + i).
POLICY_EVAL_SEED = 50_000


def train_command(algo: str, total_steps: int, seed: int, out: Path, over_ros: bool,
                  eval_interval: int) -> list[str]:
    if over_ros:
        return [sys.executable, "-m", "fpmd_ros.runner", "train_sim", f"task:={TASK}",
                f"algo:={algo}", f"total_steps:={total_steps}", f"seed:={seed}",
                f"eval_interval:={eval_interval}", f"output_dir:={out}"]
    settings = {"task.id": TASK, "agent.algo": algo, "trainer.total_steps": total_steps,
                "trainer.seed": seed, "trainer.eval_interval": eval_interval,
                "trainer.output_dir": out, "trainer.progress": "false"}
    command = [sys.executable, "-m", "fpmd_core.cli", "--config", CONFIG]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    return command


def children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes this process waited for, and
    of theirs (the runner waits for its sim and trainer processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_evaluations(eval_csv: Path) -> list[dict]:
    """The trainer's evaluations: env steps, its wall time, deploy-mode return and final goal
    distance (m: mean, median, worst and std over its evaluation episodes)."""
    with eval_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    columns = {"mean_m": "final_goal_distance_deploy", "median_m":
               "final_goal_distance_deploy_median", "worst_m": "final_goal_distance_deploy_max",
               "std_m": "final_goal_distance_deploy_std"}
    return [{"env_steps": int(row["env_steps"]), "wall_time_s": float(row["wall_time_s"]),
             "return_deploy": round(float(row["return_deploy"]), 3),
             **{key: round(float(row[name]), 5) for key, name in columns.items()}}
            for row in rows]


class _PolicyAgent:
    """An exported policy behind the trainer's `act(obs, mode)`, so that
    fpmd_core.trainer.run_episodes scores it as it scores the agent."""

    def __init__(self, policy):
        self.policy = policy
        self.low = np.asarray(policy.metadata["action_low"])
        self.high = np.asarray(policy.metadata["action_high"])

    def act(self, obs, mode):
        return np.clip(self.policy(np.asarray(obs, dtype=np.float32)), self.low, self.high)


def evaluate_policy(path: Path, episodes: int) -> dict:
    """policy.onnx, as deployed (onnxruntime, env units), over `episodes` seeded episodes."""
    from fpmd_core.runtime import OnnxPolicy
    from fpmd_core.tasks import env_from_metadata
    from fpmd_core.trainer import run_episodes

    policy = OnnxPolicy(path)
    envs = [env_from_metadata(policy.metadata) for _ in range(episodes)]
    seeds = [POLICY_EVAL_SEED + i for i in range(episodes)]
    results = run_episodes(_PolicyAgent(policy), envs, "deploy", seeds)
    distances = results.final_goal_distances
    return {"episodes": episodes, "seeds": f"{seeds[0]}..{seeds[-1]}",
            "mean_m": round(float(distances.mean()), 5),
            "median_m": round(float(np.median(distances)), 5),
            "worst_m": round(float(distances.max()), 5),
            "within_target": int(np.sum(distances <= TARGET_M)),
            "return_mean": round(float(results.returns.mean()), 3)}


def run_seed(args, seed: int, folder: Path) -> dict:
    out = folder / f"seed_{seed}"
    command = train_command(args.algo, args.total_steps, seed, out, args.over_ros,
                            args.eval_interval)
    env = child_env()
    if args.over_ros:
        env |= {"ROS_DOMAIN_ID": str(args.ros_domain_id),
                "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    log = out / "train.log"
    out.mkdir(parents=True, exist_ok=True)
    print(f"arm_reach: seed {seed}: {' '.join(map(str, command))}", flush=True)
    cpu_before, start = children_cpu_s(), time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=handle,
                              stderr=subprocess.STDOUT).returncode
    wall, cpu = time.perf_counter() - start, children_cpu_s() - cpu_before
    if code != 0:
        raise SystemExit(f"arm_reach: seed {seed} failed with exit code {code}; see {log}")
    evaluations = read_evaluations(out / "eval.csv")
    final_policy = evaluate_policy(out / "policy.onnx", args.eval_episodes)
    print(f"arm_reach: seed {seed}: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU, final "
          f"goal distance {100 * evaluations[-1]['mean_m']:.2f} cm (trainer), "
          f"{100 * final_policy['mean_m']:.2f} cm (policy.onnx, {args.eval_episodes} "
          "episodes)", flush=True)
    return {"seed": seed, "command": " ".join(_relative(part) for part in command),
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "evaluations": evaluations,
            "final_policy": final_policy}


def _relative(part) -> str:
    """A command-line part with the repository's paths relative and the interpreter as
    `python`, so the recorded command runs from the repository root anywhere."""
    text = str(part)
    if text == sys.executable:
        return "python"
    return text.replace(f"{REPO}{os.sep}", "")


def within_target_from(evaluations: list[dict]) -> dict | None:
    """The first evaluation from which on every evaluation's mean is within the target (one that
    dips below it and rises again does not count), None if the last one is not."""
    reached = None
    for evaluation in evaluations:
        if evaluation["mean_m"] > TARGET_M:
            reached = None
        elif reached is None:
            reached = evaluation
    return reached


def summarize(runs: list[dict]) -> dict:
    final = [run["evaluations"][-1]["mean_m"] for run in runs]
    policy = [run["final_policy"]["mean_m"] for run in runs]
    reached = [within_target_from(run["evaluations"]) for run in runs]
    return {
        "seeds": len(runs),
        "final_mean_m_per_seed": final,
        "final_policy_mean_m_per_seed": policy,
        "final_policy_worst_m_per_seed": [run["final_policy"]["worst_m"] for run in runs],
        "max_wall_s": max(run["wall_s"] for run in runs),
        "max_cpu_s": max(run["cpu_s"] for run in runs),
        "all_within_target_at_end": all(d <= TARGET_M for d in final + policy),
        "all_within_wall_budget": all(run["wall_s"] <= TARGET_WALL_S for run in runs),
        # The trainer's wall time counts from its first step (not the process or sim start).
        "within_target_from_env_steps": [r and r["env_steps"] for r in reached],
        "within_target_from_trainer_wall_s": [r and r["wall_time_s"] for r in reached],
    }


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for index, run in enumerate(result["runs"]):
        color = f"C{index}"
        evals = run["evaluations"]
        mean = [100 * e["mean_m"] for e in evals]
        worst = [100 * e["worst_m"] for e in evals]
        for axis, x in ((axes[0], [e["env_steps"] for e in evals]),
                        (axes[1], [e["wall_time_s"] / 60 for e in evals])):
            axis.plot(x, mean, color=color, marker="o", label=f"seed {run['seed']} mean")
            axis.plot(x, worst, color=color, linestyle="--", label=f"seed {run['seed']} worst")
    for axis, label in ((axes[0], "environment steps"), (axes[1], "training wall time (min)")):
        axis.axhline(100 * TARGET_M, color="black", linestyle=":", label="target 2 cm")
        axis.set_xlabel(label)
        axis.set_yscale("log")
        axis.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("final goal distance (cm), deploy mode")
    axes[1].legend(fontsize=7)
    where = "over ROS 2" if result["over_ros"] else "in-process"
    fig.suptitle(f"{result['algo']} on {TASK} ({where}, {result['trainer_eval_episodes']} "
                 "evaluation episodes)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="fpmd_m", choices=("fpmd_r", "fpmd_m", "sac", "dpmd"))
    parser.add_argument("--total-steps", type=int, default=50_000)
    parser.add_argument("--eval-interval", type=int, default=5_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--over-ros", action="store_true",
                        help="train through mujoco_sim over ROS 2 (./fpmd train's graph)")
    parser.add_argument("--ros-domain-id", type=int, default=177)
    parser.add_argument("--eval-episodes", type=int, default=20,
                        help="episodes of the final policy.onnx evaluation")
    parser.add_argument("--label", help="file names under bench/results/arm_reach/ (default: "
                        "<algo>_<total_steps>[_ros])")
    parser.add_argument("--from-json", action="store_true",
                        help="re-make the summary and the PNG from the JSON's runs")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    label = args.label or (f"{args.algo}_{args.total_steps // 1000}k"
                           f"{'_ros' if args.over_ros else ''}")
    summary_path, png = OUT_DIR / f"{label}.json", OUT_DIR / f"{label}.png"
    if args.from_json:
        result = json.loads(summary_path.read_text())
        result["summary"] = summarize(result["runs"])
        summary_path.write_text(json_text(result) + "\n")
        plot(result, png)
        return 0
    runs = [run_seed(args, seed, OUT_DIR / label) for seed in args.seeds]
    from fpmd_core.config import make_config

    trainer_eval_episodes = make_config(file=REPO / CONFIG).trainer.eval_episodes
    result = {
        "bench_command": command_line(),
        "task": TASK, "config": CONFIG, "algo": args.algo, "total_steps": args.total_steps,
        "over_ros": args.over_ros, "trainer_eval_episodes": trainer_eval_episodes,
        "target": {"final_goal_distance_mean_m": TARGET_M, "wall_s": TARGET_WALL_S},
        "machine": machine(), "load_average_at_end": list(os.getloadavg()),
        "summary": summarize(runs), "runs": runs,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json_text(result) + "\n")
    plot(result, png)
    print(f"arm_reach: wrote {summary_path.relative_to(REPO)} and {png.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
