"""Issue 16 benchmark: our runs paired with stable-baselines3 SAC at a robot's budget.

    nice -n 5 python -m bench.bench_paired_sb3 --jobs 4 [--tasks Hopper-v5 ...] [--seeds 3] \
        [--total-steps 25000 50000] [--algos fpmd_m fpmd_r sac] [--profile cpu] \
        [--aggregate-only | --from-summary]

Every (task, budget, seed) is a group: one run of each of `--algos` (our trainer, as
bench/bench_learning.py runs it) and one of SB3 SAC with its defaults (bench/sb3_run.py), all
evaluated with our protocol (the profile's eval interval and episodes, the same per-episode
seeds, the deploy action). The runs of a group start together, so a pair shares the machine's
load; `--jobs` runs at a time, a group waiting until it fits (one larger than --jobs, until a
slot is free).
Each budget is its own set of runs (a schedule may depend on the run's length), under
``<out-dir>/steps_<budget>/<task>/<algo>/seed_<s>/``.

Resumable over sittings: run the same command again. A finished run is skipped (one whose dir
is gone too, where summary.json records it with the same overrides and configuration: the run
dirs are not committed, so a sitting on a fresh machine has only the summary), an unfinished
run of ours resumes from its newest checkpoint (every ``--checkpoint-interval`` env steps, 5000
here; the trainer's resume is exact), an unfinished SB3 run starts over (SB3 cannot resume
exactly, see bench/sb3_run.py).

Score: per task, 0 is the return of a random policy (uniform actions in [-1, 1], on the same
evaluation episodes and seeds as the runs, for every seed of the benchmark; measured here once
and kept in summary.json) and 1 the best final deploy return of any run of the task (any
algorithm, seed and budget). Per budget and algorithm: the normalised final deploy return per
task (mean and sample std over seeds) and its mean over the tasks it shares with SB3 SAC (a row
per such set of tasks, with every algorithm that ran them all). Seed
noise: a run of ours is within seed noise of SB3 SAC on a task when the difference of their
seed means is at most the pooled std, sqrt((s_ours^2 + s_sb3^2) / 2); beyond it, ahead or behind.

Writes ``<out-dir>/summary.json`` (every budget's aggregate as bench_learning makes it: curves,
evaluations, training logs, commands; the random returns; the scores), ``summary.md`` (the
normalised table with the verdicts and the goal's checks, then each budget's raw table) and one
PNG per task and budget, ``<task>_<budget>.png``: deploy return, alpha and the one-step error
(||a(NFE=1) - a(NFE=20)||, FPMD only) against env steps, from train.csv as the trainer logs it.
These cover every finished run under <out-dir> and every run the summary already records
(a run dir wins over its record), whichever sitting's --tasks, --algos and --total-steps
started it (those only choose the runs to start); ``--aggregate-only`` re-makes
them without running anything. ``--from-summary`` re-makes summary.md and the plots from
summary.json alone.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from bench import bench_learning as learning
from bench.bench_learning import LABELS, SB3_SAC, Run
from bench.common import REPO, command_line, json_text
from fpmd_core.config import ConfigError, make_config

TASKS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Reacher-v5",
         "InvertedDoublePendulum-v5")
OURS = ("fpmd_m", "fpmd_r", "sac")
BUDGETS = (25_000, 50_000)
CHECKPOINT_INTERVAL = 5_000  # a sitting that ends loses at most this many env steps of a run
NOISE_RULE = ("within seed noise: |mean_ours - mean_sb3| <= pooled std "
              "sqrt((s_ours^2 + s_sb3^2) / 2) (sample std over seeds); beyond it ahead or behind")
NORMALISATION = ("per task, (return - random policy's) / (best run's final deploy return - "
                 "random policy's), the best over every algorithm, seed and budget")


def budget_dir(out_dir: Path, budget: int) -> Path:
    return out_dir / f"steps_{budget}"


def paired_groups(tasks: list[str], algos: list[str], seeds: int, budgets: list[int],
                  out_dir: Path) -> list[list[Run]]:
    """One group per (budget, seed, task): each of our `algos` and SB3 SAC, started together;
    the longer budget first, so that its runs do not end up alone at the end."""
    return [[Run(task, algo, seed, budget, budget_dir(out_dir, budget))
             for algo in [*algos, SB3_SAC]]
            for budget in sorted(budgets, reverse=True) for seed in range(seeds)
            for task in tasks]


# --- the random policy ---------------------------------------------------------------------------

class UniformPolicy:
    """Uniform random actions in [-1, 1] behind the agent interface `run_episodes` calls."""

    def __init__(self, act_dim: int, seed: int):
        self.act_dim = act_dim
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, mode: str) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, (len(obs), self.act_dim))


def random_return(task: str, seeds: int, episodes: int) -> dict:
    """The random policy's return on the evaluation episodes of every benchmark seed."""
    from fpmd_core.tasks import make_env
    from fpmd_core.trainer import evaluation_seeds, run_episodes

    returns, eval_seeds = [], []
    for seed in range(seeds):
        envs = [make_env(task) for _ in range(episodes)]
        episode_seeds = evaluation_seeds(seed, episodes)
        policy = UniformPolicy(envs[0].action_space.shape[0], seed)
        returns += run_episodes(policy, envs, "random", episode_seeds).returns.tolist()
        eval_seeds += episode_seeds
        for env in envs:
            env.close()
    return {"mean": float(np.mean(returns)), "std": float(np.std(returns)),
            "episodes": len(returns), "eval_seeds": eval_seeds}


def random_returns(tasks: list[str], seeds: int, episodes: int, cached: dict) -> dict:
    """`random_return` per task, taken from `cached` (an earlier summary's) where it was
    measured on the same episodes."""
    from fpmd_core.trainer import evaluation_seeds

    result = {}
    for task in tasks:
        wanted = [s for seed in range(seeds) for s in evaluation_seeds(seed, episodes)]
        if cached.get(task, {}).get("eval_seeds") == wanted:
            result[task] = cached[task]
        else:
            result[task] = random_return(task, seeds, episodes)
            print(f"random policy on {task}: {result[task]['mean']:.1f} over "
                  f"{result[task]['episodes']} episodes", flush=True)
    return result


# --- scores --------------------------------------------------------------------------------------

def normalised(value: float, random: float, best: float) -> float | None:
    """0 at the random policy's return, 1 at the best run's; None where no run beat random."""
    span = best - random
    return (value - random) / span if span > 0 else None


def seed_noise(ours: list[float], peer: list[float]) -> dict:
    """Our seeds against the peer's by NOISE_RULE: the difference of means, the pooled sample
    std and the verdict ('n/a' with fewer than two seeds on either side)."""
    difference = float(np.mean(ours) - np.mean(peer))
    if len(ours) < 2 or len(peer) < 2:
        return {"difference": difference, "pooled_std": None, "verdict": "n/a"}
    pooled = math.sqrt((np.var(ours, ddof=1) + np.var(peer, ddof=1)) / 2)
    verdict = ("ahead" if difference > pooled else "behind" if difference < -pooled
               else "within noise")
    return {"difference": difference, "pooled_std": pooled, "verdict": verdict}


def final_returns(row: dict) -> list[float]:
    return list((row.get("deploy") or {}).get("final_per_seed") or [])


def scores(budgets: dict[str, dict], randoms: dict[str, dict]) -> dict:
    """Normalised final deploy returns, their means over tasks and the seed-noise verdicts
    against SB3 SAC, from each budget's aggregate (bench_learning.aggregate) and the random
    returns."""
    tasks = sorted({task for agg in budgets.values() for task in agg["tasks"]})
    scale = {}
    for task in tasks:
        finals = [(value, algo, budget)
                  for budget, agg in budgets.items()
                  for algo, row in agg["tasks"].get(task, {}).items()
                  for value in final_returns(row)]
        if finals and task in randoms:
            best, algo, budget = max(finals)
            scale[task] = {"random": randoms[task]["mean"], "best": best,
                           "best_run": f"{LABELS.get(algo, algo)} at {budget} steps"}
    result = {"normalisation": NORMALISATION, "noise_rule": NOISE_RULE, "scale": scale,
              "budgets": {}}
    for budget, agg in budgets.items():
        per_task, versus = {}, {}
        for task, entry in agg["tasks"].items():
            if task not in scale:
                continue
            values = {}
            for algo, row in entry.items():
                seeds = [normalised(v, scale[task]["random"], scale[task]["best"])
                         for v in final_returns(row)]
                if seeds and None not in seeds:
                    values[algo] = {"per_seed": seeds, "mean": float(np.mean(seeds)),
                                    "std": float(np.std(seeds, ddof=1)) if len(seeds) > 1
                                    else 0.0}
            per_task[task] = values
            if SB3_SAC in values:
                versus[task] = {algo: seed_noise(v["per_seed"], values[SB3_SAC]["per_seed"])
                                for algo, v in values.items() if algo != SB3_SAC}
        result["budgets"][budget] = {"tasks": per_task, "versus_sb3": versus,
                                     "means": mean_rows(per_task)}
    return result


def mean_rows(per_task: dict[str, dict]) -> list[dict]:
    """Means over tasks (`per_task`: task -> algo -> its normalised scores), one row per set of
    tasks that one of ours shares with SB3 SAC, the largest first, each with every algorithm
    that has all of its tasks. Each of ours then compares with SB3 SAC over the same tasks, and
    one of ours run on fewer tasks so far does not shrink the others' means. Without SB3 SAC,
    one row over the tasks every algorithm has."""
    algos = sorted({algo for values in per_task.values() for algo in values})
    if SB3_SAC in algos:
        task_sets = {tuple(t for t, values in per_task.items() if {algo, SB3_SAC} <= set(values))
                     for algo in algos if algo != SB3_SAC}
    else:
        task_sets = {tuple(t for t, values in per_task.items() if set(algos) <= set(values))}
    rows = []
    for tasks in sorted((s for s in task_sets if s), key=lambda s: (-len(s), s)):
        members = [a for a in algos if all(a in per_task[t] for t in tasks)]
        rows.append({"tasks": list(tasks),
                     "mean": {a: float(np.mean([per_task[t][a]["mean"] for t in tasks]))
                              for a in members}})
    return rows


def which_tasks(tasks: list[str], table: dict) -> str:
    """'6 tasks', or '2 tasks (A-v5, B-v5)' where they are not all of the `table`'s tasks."""
    named = "" if len(tasks) == len(table) else f" ({', '.join(tasks)})"
    return f"{len(tasks)} tasks{named}"


def goal_checks(budget_scores: dict) -> list[str]:
    """Issue 16's conditions for each of ours: its mean over tasks at least SB3 SAC's, and (as
    asked of FPMD-M) no task behind beyond seed noise."""
    rows = budget_scores["means"]
    ours = sorted({a for row in rows for a in row["mean"] if a != SB3_SAC})
    lines = []
    for algo in ours:
        # The largest row with both is the one over every task it shares with SB3 SAC.
        row = next((row for row in rows if {algo, SB3_SAC} <= set(row["mean"])), None)
        if row is None:
            continue
        mean, peer = row["mean"][algo], row["mean"][SB3_SAC]
        over = f" over {which_tasks(row['tasks'], budget_scores['tasks'])}"
        verdicts = {task: v[algo]["verdict"] for task, v in budget_scores["versus_sb3"].items()
                    if algo in v}
        behind = [task for task, verdict in verdicts.items() if verdict == "behind"]
        unknown = [task for task, verdict in verdicts.items() if verdict == "n/a"]
        at_least = "yes" if mean >= peer else "no"
        lines.append(f"- {LABELS.get(algo, algo)}: mean {mean:.3f} against SB3 SAC's "
                     f"{peer:.3f}{over}, at least as high: {at_least}; tasks behind beyond "
                     f"seed noise: {', '.join(behind) or 'none'}"
                     + (f" (no seed noise with fewer than 2 seeds: {', '.join(unknown)})"
                        if unknown else ""))
    return lines


# --- outputs -------------------------------------------------------------------------------------

def steps_text(budget: str | int) -> str:
    return f"{int(budget) / 1000:g}k"


def score_cell(score: dict, full: int) -> str:
    """'0.38 ± 0.18'; with fewer seeds than the table's most (`full`) it says how many, and one
    seed has no std to show."""
    seeds = len(score["per_seed"])
    if seeds == 1:
        return f"{score['mean']:.2f} (1 seed)"
    cell = f"{score['mean']:.2f} ± {score['std']:.2f}"
    return cell if seeds >= full else f"{cell} ({seeds} seeds)"


def markdown(summary: dict) -> str:
    result = summary["scores"]
    lines = ["Normalised final deploy return (NFE = 1), mean ± std over seeds: "
             f"{result['normalisation']}. Seed noise: {result['noise_rule']}.", ""]
    for budget, budget_scores in result["budgets"].items():
        per_task = budget_scores["tasks"]
        algos = sorted({a for values in per_task.values() for a in values},
                       key=lambda a: (a == SB3_SAC, OURS.index(a) if a in OURS else 9, a))
        ours = [a for a in algos if a != SB3_SAC]
        lines += [f"### {steps_text(budget)} env steps", "",
                  "| task | random | best | " + " | ".join(LABELS.get(a, a) for a in algos)
                  + "".join(f" | {LABELS.get(a, a)} − SB3" for a in ours) + " |",
                  "|---" * (3 + len(algos) + len(ours)) + "|"]
        full = max((len(v["per_seed"]) for values in per_task.values() for v in values.values()),
                   default=0)
        for task, values in per_task.items():
            scale = result["scale"][task]
            cells = [score_cell(values[a], full) if a in values else "n/a" for a in algos]
            versus = budget_scores["versus_sb3"].get(task, {})
            for algo in ours:
                v = versus.get(algo)
                cells.append("n/a" if v is None else
                             f"{v['difference']:+.2f} ({v['verdict']})")
            lines.append(f"| {task} | {scale['random']:.1f} | {scale['best']:.1f} | "
                         + " | ".join(cells) + " |")
        for row in budget_scores["means"]:
            means = row["mean"]
            lines.append(f"| mean over {which_tasks(row['tasks'], per_task)} | | | "
                         + " | ".join(f"{means[a]:.2f}" if a in means else "n/a"
                                      for a in algos) + " |" + " |" * len(ours))
        checks = goal_checks(budget_scores)
        if checks:
            lines += ["", *checks]
        lines += ["", f"Final returns at {budget} env steps:", "",
                  learning.markdown(summary["budgets"][budget]).rstrip(), ""]
    return "\n".join(lines) + "\n"


def seed_mean(logs: dict, key: str) -> tuple[list[int], list[float]]:
    """Mean over seeds of a training-log column at the env steps every seed logged it."""
    per_seed = [{s: v for s, v in zip(log["env_steps"], log.get(key) or [], strict=False)
                 if v is not None} for log in logs.values()]
    if not per_seed or not all(per_seed):
        return [], []
    steps = sorted(set.intersection(*(set(s) for s in per_seed)))
    return steps, [float(np.mean([s[step] for s in per_seed])) for step in steps]


def plot_task(task: str, budget: str, entry: dict, png: Path) -> None:
    """Deploy return, alpha and the one-step error of every algorithm on one task and budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (returns, alpha, error) = plt.subplots(3, 1, figsize=(7, 9), sharex=True)
    for algo, row in entry.items():
        color = learning.COLORS.get(algo)
        label = f"{LABELS.get(algo, algo)}, {len(row['seeds'])} seeds"
        deploy = (row.get("curves") or {}).get("deploy")
        if deploy:
            steps, mean, std = (np.array(deploy[k], dtype=float)
                                for k in ("env_steps", "mean", "std"))
            returns.plot(steps, mean, color=color, marker="o", ms=3, label=label)
            returns.fill_between(steps, mean - std, mean + std, color=color, alpha=0.15)
        logs = row.get("training_log") or {}
        for axis, key in ((alpha, "alpha"), (error, "one_step_error")):
            steps, mean = seed_mean(logs, key)
            if steps:
                axis.plot(steps, mean, color=color, marker=".", label=LABELS.get(algo, algo))
    returns.set_ylabel("deploy return (NFE = 1)\nseed mean, ± std shaded")
    returns.set_title(f"{task}: {steps_text(budget)} env steps, paired with SB3 SAC")
    alpha.set_ylabel("alpha (seed mean)")
    alpha.set_yscale("log")
    error.set_ylabel("one-step error\n||a(NFE=1) - a(NFE=20)||")
    error.set_xlabel("environment steps")
    for axis in (returns, alpha, error):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def write_outputs(out_dir: Path, summary: dict) -> None:
    """summary.json, summary.md and the plots, all from `summary` (its scores recomputed)."""
    summary["scores"] = scores(summary["budgets"], summary["random_returns"])
    text = markdown(summary)
    (out_dir / "summary.json").write_text(json_text(summary) + "\n")
    (out_dir / "summary.md").write_text(text)
    pngs = []
    for budget, agg in summary["budgets"].items():
        for task, entry in agg["tasks"].items():
            pngs.append(out_dir / f"{task}_{budget}.png")
            plot_task(task, budget, entry, pngs[-1])
    print(text, end="")
    print(f"written: {out_dir / 'summary.json'}, {out_dir / 'summary.md'}, "
          f"{', '.join(str(p) for p in pngs)}")


KNOWN_ALGOS = (*OURS, *(algo for algo in learning.ALGOS if algo not in OURS), SB3_SAC)


def runs_on_disk(out_dir: Path) -> dict[int, tuple[list[str], list[str]]]:
    """Budget -> (tasks, algorithms) with a run directory under `out_dir`, whichever sitting
    started them: the summary is the folder's, not one invocation's."""
    found = {}
    for directory in out_dir.glob("steps_*"):
        budget = directory.name.removeprefix("steps_")
        if not (directory.is_dir() and budget.isdigit()):
            continue
        tasks = sorted(p.name for p in directory.iterdir() if p.is_dir())
        present = {p.name for task in tasks for p in (directory / task).iterdir() if p.is_dir()}
        found[int(budget)] = (tasks, [algo for algo in KNOWN_ALGOS if algo in present])
    return dict(sorted(found.items()))


def runs_to_aggregate(out_dir: Path, previous: dict) -> dict[int, tuple[list[str], list[str]]]:
    """runs_on_disk and every budget, task and algorithm the summary already holds: the run
    dirs are not committed, so a sitting on a fresh machine has only the summary's records of
    the earlier sittings' runs, and they stay in (learning.with_recorded)."""
    found = {b: (set(tasks), set(algos)) for b, (tasks, algos) in runs_on_disk(out_dir).items()}
    for budget, agg in previous.get("budgets", {}).items():
        tasks, algos = found.setdefault(int(budget), (set(), set()))
        tasks.update(agg["tasks"])
        algos.update(algo for entry in agg["tasks"].values() for algo in entry)
    return {b: (sorted(tasks), [a for a in KNOWN_ALGOS if a in algos])
            for b, (tasks, algos) in sorted(found.items())}


def protocol_configs(args, budget: int):
    """(task, algo) -> the configuration this invocation runs ours with at `budget`: the summary
    holds runs of the profile as it is now, not as it was. None (any) for SB3 SAC, and where no
    run of ours could be made at that budget (one that ends within the warm-up)."""
    def config(task: str, algo: str):
        if algo == SB3_SAC:
            return None
        run = Run(task, algo, 0, budget, budget_dir(args.out_dir, budget))
        try:
            return make_config(args.profile, overrides=learning.run_overrides(args, run))
        except ConfigError:
            return None
    return config


def write_aggregate(args) -> None:
    previous = learning.read_summary(args.out_dir)
    earlier = previous.get("budgets", {})
    budgets = {str(b): learning.aggregate(budget_dir(args.out_dir, b), tasks, algos,
                                          args.include_unfinished, earlier.get(str(b)),
                                          protocol_configs(args, b))
               for b, (tasks, algos) in runs_to_aggregate(args.out_dir, previous).items()}
    budgets = {b: agg for b, agg in budgets.items() if agg["tasks"]}
    if not budgets:
        raise SystemExit(f"no finished runs under {args.out_dir}/steps_*/<task>/<algo>/seed_*")
    measured = sorted({task for agg in budgets.values() for task in agg["tasks"]})
    episodes = make_config(args.profile, overrides=args.overrides
                           + ([f"trainer.eval_episodes={args.eval_episodes}"]
                              if args.eval_episodes is not None else [])
                           ).trainer.eval_episodes
    randoms = random_returns(measured, args.seeds, episodes, previous.get("random_returns", {}))
    commands = list(previous.get("commands", []))
    if command_line() not in commands:
        commands.append(command_line())
    notes = {"notes": previous["notes"]} if previous.get("notes") else {}
    write_outputs(args.out_dir, {"commands": commands, **notes,
                                 "unfinished_runs_included": args.include_unfinished,
                                 "random_returns": randoms, "budgets": budgets})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # These three choose the runs to start; the summary covers every run under --out-dir.
    parser.add_argument("--tasks", nargs="+", default=None,
                        help=f"default {' '.join(TASKS)}")
    parser.add_argument("--algos", nargs="+", default=None, choices=learning.ALGOS,
                        help=f"ours, each paired with SB3 SAC; default {' '.join(OURS)}")
    parser.add_argument("--total-steps", nargs="+", type=int, default=None,
                        help=f"budgets in env steps, each its own runs; default "
                             f"{' '.join(map(str, BUDGETS))}")
    learning.add_run_arguments(parser)
    parser.set_defaults(checkpoint_interval=CHECKPOINT_INTERVAL)
    parser.add_argument("--jobs", type=int, default=4,
                        help="runs in parallel (a group of paired runs starts whole)")
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results/paired_sb3"))
    parser.add_argument("--aggregate-only", action="store_true",
                        help="only re-make summary and plots from every run dir under --out-dir")
    parser.add_argument("--from-summary", action="store_true",
                        help="only re-make summary.md and the plots from summary.json")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="aggregate runs stopped before their budget too")
    args = parser.parse_args()
    args.out_dir = args.out_dir if args.out_dir.is_absolute() else REPO / args.out_dir
    if args.from_summary:
        summary = learning.read_summary(args.out_dir)
        if not summary.get("budgets"):
            parser.error(f"--from-summary: no paired summary.json in {args.out_dir}")
        write_outputs(args.out_dir, summary)
        return
    if args.aggregate_only:
        chosen = [flag for flag, value in (("--tasks", args.tasks), ("--algos", args.algos),
                                           ("--total-steps", args.total_steps)) if value]
        if chosen:
            parser.error(f"--aggregate-only summarises every run under --out-dir; "
                         f"{', '.join(chosen)} only choose the runs to start")
    else:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        earlier = learning.read_summary(args.out_dir).get("budgets", {})
        learning.run_all(args, paired_groups(args.tasks or list(TASKS), args.algos or list(OURS),
                                             args.seeds, args.total_steps or list(BUDGETS),
                                             args.out_dir),
                         lambda run: earlier.get(str(run.total_steps), {}).get(
                             "tasks", {}).get(run.task, {}).get(run.algo))
        print(f"all runs ended after {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    write_aggregate(args)


if __name__ == "__main__":
    main()
