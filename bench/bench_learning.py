"""Issue 7 benchmark: learning curves of FPMD-R, FPMD-M, SAC and DPMD over tasks x seeds.

    nice -n 5 python -m bench.bench_learning --jobs 2 [--tasks Hopper-v5 ...] [--seeds 3] \
        [--total-steps 100000] [--profile cpu|paper] [--aggregate-only | --from-summary]

Every (task, algorithm, seed) is one training run of ``fpmd_core.trainer.Trainer``, started as its
own process (``python -m fpmd_core.cli --profile P --set ...``, ``--jobs`` at a time) with its
output in ``<out-dir>/<task>/<algo>/seed_<s>/`` (eval.csv, train.csv, train.log, run.json, the
trainer's checkpoints, TensorBoard logs and policy.onnx: none of it is committed, see
bench/results/.gitignore). A run whose eval.csv already reaches ``--total-steps`` is skipped, so
an interrupted benchmark resumes by running the same command again: an unfinished run of ours
started with the same settings resumes from its newest checkpoint
(``checkpoints/step_<env steps>.pt``, every ``--checkpoint-interval`` env steps; the trainer's
resume is exact, and run.json's ``resumed`` lists each resume's command), any other unfinished
run dir is cleared and its run started over. A run of ours whose resolved configuration
(its config.yaml) is not what the profile and overrides give now, because a profile changed
since, runs again, finished or not. A run that finished keeps only its final checkpoint.
``--algos sb3_sac`` adds stable-baselines3 SAC with its defaults (bench/sb3_run.py, evaluated
with the same protocol; an unfinished one always starts over).

Evaluation protocol (the trainer's): every ``trainer.eval_interval`` env steps and at the end,
``trainer.eval_episodes`` episodes (seeds fixed per episode index) in deploy mode (EMA policy, one
network call from x0 = 0, no critic: what is exported) and, for FPMD-R/FPMD-M/DPMD, best-of-N
(the training sampler without exploration noise, N = ``agent.particles`` scored by the critic).

Aggregate (also alone with ``--aggregate-only``), over every task and algorithm of the folder: its
run dirs on disk, and the runs its summary.json already records where their dirs are gone (a fresh
clone has none; a run dir wins over its record, and a recorded run is not run again when it is of
this invocation's experiment: the same resolved configuration where the summary kept it, else the
same overrides). The seeds of a task and algorithm are one experiment: a seed whose resolved
configuration is not the newest run dir's is left out, with a line (study_configuration). Per task
and algorithm over the finished seeds, the final deploy-mode return (mean
± sample std over seeds), the best deploy-mode return (maximum over evaluations of the seed-mean
curve), the same two for best-of-N, the wall time and the env steps/s after the warm-up (updates
and evaluations included, mean over seeds); written to ``<out-dir>/summary.md`` and
``summary.json``, and one learning-curve PNG per task, ``<out-dir>/<task>.png`` (seed mean, shaded
± std, deploy mode solid and best-of-N dashed). summary.json is what is committed of a benchmark,
so it also holds everything read from the run dirs that a reader may need: per algorithm the
plotted curves (``curves``), every seed's evaluations (``evaluations``: eval.csv's columns), its
training log (``training_log``: every column of train.csv, 4 significant digits) and its exact
``python -m fpmd_core.cli`` command (``runs``); and at the top every bench command that made the
runs and the summary (``commands``). ``--from-summary`` re-makes summary.md and the plots from
summary.json alone.

The trainer picks CUDA when present (``trainer.device: auto``): the same command runs on a GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import REPO, child_env, command_line, json_text
from bench.machine import machine
from fpmd_core.config import (
    RESOLVED_CONFIG_NAME,
    Config,
    ConfigError,
    config_from_dict,
    load_file,
    make_config,
)

TASKS = ("InvertedPendulum-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
ALGOS = ("fpmd_r", "fpmd_m", "sac", "dpmd")
# The peer: stable-baselines3 SAC with its defaults, a run of bench/sb3_run.py.
SB3_SAC = "sb3_sac"
LABELS = {"fpmd_r": "FPMD-R", "fpmd_m": "FPMD-M", "sac": "SAC", "dpmd": "DPMD",
          SB3_SAC: "SB3 SAC"}
NFE = {"dpmd": 20}  # network calls of the deploy action (DPMD: its DDPM steps)
COLORS = {"fpmd_r": "tab:blue", "fpmd_m": "tab:orange", "sac": "tab:green", "dpmd": "tab:red",
          SB3_SAC: "tab:gray"}
# Slowest first, so that the long runs do not end up alone at the end of a parallel schedule.
COST_ORDER = {"dpmd": 0, "fpmd_r": 1, "fpmd_m": 2, "sac": 3, SB3_SAC: 4}
EVAL_COLUMNS = ("updates", "wall_time_s", "return_deploy", "return_best_of_n", "length_deploy",
                "length_best_of_n")


# --- runs ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One training run: `algo` is one of ours (ALGOS) or SB3_SAC (bench/sb3_run.py)."""

    task: str
    algo: str
    seed: int
    total_steps: int
    out_dir: Path

    @property
    def directory(self) -> Path:
        return run_dir(self.out_dir, self.task, self.algo, self.seed)

    @property
    def name(self) -> str:
        return f"{self.task}/{self.algo}/seed_{self.seed}/{self.total_steps} steps"


def run_dir(out_dir: Path, task: str, algo: str, seed: int) -> Path:
    return out_dir / task / algo / f"seed_{seed}"


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def finished(directory: Path, total_steps: int) -> bool:
    rows = read_csv(directory / "eval.csv")
    return bool(rows) and int(rows[-1]["env_steps"]) >= total_steps


def newest_checkpoint(directory: Path) -> tuple[int, Path] | None:
    """The trainer's periodic checkpoint (checkpoints/step_<env steps>.pt) of most env steps.
    Checkpoints are written to a temporary name and renamed, so one that exists is whole."""
    found = []
    for path in (directory / "checkpoints").glob("step_*.pt"):
        steps = path.stem.removeprefix("step_")
        if steps.isdigit():
            found.append((int(steps), path))
    return max(found) if found else None


RESULT_NEUTRAL_FIELDS = {("trainer", "output_dir"), ("trainer", "progress"),
                         ("trainer", "progress_interval_s"), ("trainer", "checkpoint_interval")}
"""Fields that do not change what a run computes (checkpoints draw no random numbers: a resumed
run equals an uninterrupted one): a finished run moved to another dir, or made by a benchmark
that checkpoints more often, counts."""


PER_SEED_FIELDS = {("trainer", "seed"), ("trainer", "output_dir")}
"""Fields that differ between the seeds of one experiment: left out where runs are compared."""


def without_per_seed_fields(config: dict) -> dict:
    """A resolved configuration (as a dict) without PER_SEED_FIELDS."""
    return {section: {name: value for name, value in fields.items()
                      if (section, name) not in PER_SEED_FIELDS}
            for section, fields in config.items()}


def changed_fields(directory: Path, config: Config) -> str | None:
    """The fields whose value in the run's resolved configuration (config.yaml) differs from
    `config` (a profile changed since it ran), as text; None when they agree or it has none."""
    path = directory / RESOLVED_CONFIG_NAME
    if not path.is_file():
        return None
    return config_changes(load_file(path), config)


def config_changes(ran: dict, config: Config) -> str | None:
    """changed_fields for a resolved configuration as a dict (`ran`), which may leave out the
    fields that differ between the seeds of one experiment (experiment_config)."""
    try:
        ran = config_from_dict(ran).to_dict()
    except ConfigError as err:
        return f"its {RESOLVED_CONFIG_NAME} no longer reads: {err}"
    wanted = config.to_dict()
    changed = [f"{section}.{name}: {ran[section][name]!r} -> {value!r}"
               for section, fields in wanted.items() for name, value in fields.items()
               if ran[section][name] != value and (section, name) not in RESULT_NEUTRAL_FIELDS
               and (section, name) not in PER_SEED_FIELDS]
    return "; ".join(changed) or None


def experiment_config(directory: Path) -> dict | None:
    """A run's resolved configuration without the fields that differ between its seeds: what
    the summary keeps, so that a later sitting can tell whether the profile changed since."""
    path = directory / RESOLVED_CONFIG_NAME
    if not path.is_file():
        return None
    try:
        return without_per_seed_fields(load_file(path))
    except ConfigError:
        return None


def recorded_finished(args, run: Run, entry: dict | None) -> str | None:
    """Why `run`, which has no run dir, counts as finished because an earlier summary records it
    (`entry`: its algorithm's entry, or None); None when it must run. The record must be of the
    same experiment: where it kept the resolved configuration, the same configuration as this
    invocation's (a profile may have changed since; RESULT_NEUTRAL_FIELDS aside), whichever
    overrides gave it (a study's --set that the profile has adopted since); else the same
    overrides."""
    if not entry or run.seed not in entry.get("seeds", []) or run.directory.exists():
        return None
    if entry.get("total_steps") != run.total_steps:
        return None
    run_sets = run_overrides(args, run)
    if entry.get("config") and run.algo != SB3_SAC:
        changed = config_changes(entry["config"], make_config(args.profile, overrides=run_sets))
        if changed:
            print(f"  {run.name}: the summary's run ran with another configuration "
                  f"({changed}); it runs again", flush=True)
            return None
        return "the summary records it, with this configuration"
    if entry.get("overrides") != overrides({"overrides": run_sets}):
        return None
    return "the summary records it, with these overrides"


def next_action(directory: Path, algo: str, total_steps: int, overrides: list[str],
                config: Config | None = None) -> tuple[str, Path | None, str]:
    """What a run needs, from its dir on disk: ("finished" | "start" | "resume" | "restart",
    the checkpoint to resume from, why). A run of ours resumes from its newest checkpoint
    (the trainer's resume is exact) when it was started with the same settings (`overrides`,
    which include the output dir and total steps); anything else unfinished starts over. A
    run of ours whose resolved configuration is not `config` (its profile changed since) runs
    again, finished or not."""
    changed = changed_fields(directory, config) if config and algo != SB3_SAC else None
    if finished(directory, total_steps):
        if changed:
            return "restart", None, f"it ran with another configuration ({changed})"
        return "finished", None, "its eval.csv reaches the total steps"
    info_path = directory / "run.json"
    if not info_path.is_file():
        return "start", None, "not started yet"
    if algo == SB3_SAC:
        return "restart", None, "an SB3 run cannot resume exactly (bench/sb3_run.py)"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return "restart", None, "its run.json is unreadable"
    if info.get("overrides") != overrides:
        return "restart", None, "it was started with other settings"
    if changed:
        return "restart", None, f"it was started with another configuration ({changed})"
    newest = newest_checkpoint(directory)
    if newest is None:
        return "restart", None, "it has no checkpoint yet"
    steps, path = newest
    if steps >= total_steps:
        return "restart", None, f"its newest checkpoint {path.name} is past the total steps"
    return "resume", path, f"from its checkpoint at {steps} env steps"


def run_overrides(args, run: Run) -> list[str]:
    """Our trainer's --set items for `run` (for SB3 runs: where its protocol comes from)."""
    sets = {"task.id": run.task, "agent.algo": run.algo, "trainer.seed": run.seed,
            "trainer.total_steps": run.total_steps,
            "trainer.output_dir": str(run.directory.resolve()),
            "trainer.progress": "false", "trainer.torch_threads": args.torch_threads}
    if run.algo == SB3_SAC:
        del sets["agent.algo"]
    for name, value in (("eval_interval", args.eval_interval),
                        ("eval_episodes", args.eval_episodes),
                        ("warmup_steps", args.warmup_steps),
                        ("checkpoint_interval", args.checkpoint_interval)):
        if value is not None:
            sets[f"trainer.{name}"] = value
    return [f"{k}={v}" for k, v in sets.items()] + list(args.overrides)


def run_command(args, run: Run, overrides: list[str]) -> tuple[list[str], str]:
    """(the command that makes `run` from scratch, the profile it records). An SB3 run takes
    our evaluation protocol (interval, episodes, log interval, threads) from the profile with
    the same overrides, so both sides of a pair evaluate alike."""
    cfg = make_config(args.profile, overrides=overrides)  # fail here, not in the child
    if run.algo == SB3_SAC:
        tc = cfg.trainer
        return [sys.executable, "-m", "bench.sb3_run", "--task", run.task,
                "--seed", str(run.seed), "--total-steps", str(run.total_steps),
                "--eval-interval", str(tc.eval_interval),
                "--eval-episodes", str(tc.eval_episodes), "--log-interval", str(tc.log_interval),
                "--torch-threads", str(tc.torch_threads),
                "--out-dir", str(run.directory.resolve())], "sb3 defaults"
    command = [sys.executable, "-m", "fpmd_core.cli", "--profile", args.profile]
    for item in overrides:
        command += ["--set", item]
    return command, args.profile


def run_action(args, run: Run) -> tuple[str, Path | None, str]:
    """`next_action` of `run` under this invocation's profile and overrides."""
    overrides = run_overrides(args, run)
    return next_action(run.directory, run.algo, run.total_steps, overrides,
                       make_config(args.profile, overrides=overrides))


def start_run(args, run: Run) -> tuple[subprocess.Popen, float]:
    """Start `run` (resumed from its newest checkpoint where `next_action` says so)."""
    directory = run.directory
    overrides = run_overrides(args, run)
    action, checkpoint, why = run_action(args, run)
    command, profile = run_command(args, run, overrides)
    if action == "resume":
        print(f"  {directory}: unfinished, resumed {why}", flush=True)
        info = json.loads((directory / "run.json").read_text())
        info.setdefault("resumed", []).append({
            "checkpoint": str(checkpoint), "command": command + ["--resume", str(checkpoint)],
            "env_steps": int(checkpoint.stem.removeprefix("step_")),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine()})
        command = info["resumed"][-1]["command"]
        log_mode = "a"
    else:
        if directory.exists():
            print(f"  {directory}: cleared and started over: {why}", flush=True)
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        info = {"task": run.task, "algo": run.algo, "seed": run.seed, "profile": profile,
                "total_steps": run.total_steps, "overrides": overrides, "command": command,
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine()}
        log_mode = "w"
    (directory / "run.json").write_text(json.dumps(info, indent=2))
    env = child_env()
    env.setdefault("OMP_NUM_THREADS", str(args.torch_threads))
    log = (directory / "train.log").open(log_mode)
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, time.perf_counter()


def end_run(run: Run, proc: subprocess.Popen, wall: float) -> None:
    """Record how the run's process ended (its wall time added to earlier sittings'); a run
    that finished keeps only its final checkpoint (the periodic ones only serve a resume)."""
    directory = run.directory
    info = json.loads((directory / "run.json").read_text())
    info |= {"returncode": proc.returncode,
             "process_wall_s": round(info.get("process_wall_s", 0.0) + wall, 1)}
    (directory / "run.json").write_text(json.dumps(info, indent=2))
    if proc.returncode == 0 and (directory / "checkpoints" / "final.pt").is_file():
        for path in (directory / "checkpoints").glob("step_*.pt"):
            path.unlink()


def group_starts(size: int, running: int, jobs: int) -> bool:
    """Whether the next group of `size` runs starts now, `running` runs going: when it fits in
    the free slots; one larger than `jobs` never fits, so it starts once a slot is free, sharing
    the machine with the runs still going for a while rather than leaving slots idle until they
    end."""
    return running + size <= jobs or (size > jobs and running < jobs)


def run_all(args, groups: list[list[Run]], recorded=lambda run: None) -> None:
    """Run every unfinished run, `args.jobs` at a time. The runs of a group start together
    (the runs of a pair then share the machine's load); a group waits until it fits in the
    free slots (`group_starts`). `recorded(run)` is the earlier summary's entry of the run's
    algorithm: a run it records (recorded_finished) is finished though its dir is gone."""
    total = sum(len(group) for group in groups)
    todo = [[run for run in group if run_action(args, run)[0] != "finished"
             and not recorded_finished(args, run, recorded(run))]
            for group in groups]
    todo = [group for group in todo if group]
    left = sum(len(group) for group in todo)
    print(f"{total} runs, {total - left} already finished, {left} to run with {args.jobs} at "
          f"a time", flush=True)
    running: list[tuple[subprocess.Popen, float, Run]] = []
    failed = []
    # A benchmark stopped by SIGTERM (a session that ends) stops its runs as on Ctrl-C, rather
    # than leaving them running into the dirs the next sitting resumes.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while todo or running:
            while todo and group_starts(len(todo[0]), len(running), args.jobs):
                for run in todo.pop(0):
                    print(f"start {run.name}", flush=True)
                    running.append((*start_run(args, run), run))
            time.sleep(1.0)
            for item in list(running):
                proc, started, run = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                wall = time.perf_counter() - started
                end_run(run, proc, wall)
                status = "done" if proc.returncode == 0 else f"FAILED ({proc.returncode})"
                print(f"{status} {run.name} in {wall:.0f} s "
                      f"(log: {run.directory / 'train.log'})", flush=True)
                if proc.returncode != 0:
                    failed.append(run.name)
    except KeyboardInterrupt:
        for proc, *_ in running:
            proc.terminate()
        for proc, started, run in running:
            proc.wait()
            end_run(run, proc, time.perf_counter() - started)
        raise SystemExit(f"stopped with {len(running)} runs unfinished; the same command "
                         "resumes them") from None
    if failed:
        print(f"{len(failed)} runs failed: {failed}", flush=True)


# --- aggregation ---------------------------------------------------------------------------------

def _float(value) -> float | None:
    return float(value) if value not in (None, "") else None


def seed_runs(out_dir: Path, task: str, algo: str, partial: bool = False) -> list[dict]:
    """The seeds that reached total_steps; with `partial`, every seed with an evaluation."""
    runs = []
    for directory in sorted((out_dir / task / algo).glob("seed_*")):
        rows = read_csv(directory / "eval.csv")
        info_path = directory / "run.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        total = info.get("total_steps")
        if not rows or total is None or (int(rows[-1]["env_steps"]) < total and not partial):
            continue  # unfinished: left out of the aggregate
        add_earlier_sittings(rows, info.get("resumed", []))
        runs.append({"dir": directory, "info": info, "config": experiment_config(directory),
                     "eval": rows, "rate": learning_rate(rows),
                     "train": read_csv(directory / "train.csv")})
    return runs


def table_rows(table: dict) -> list[dict]:
    """The rows a `columns` table was made from (its values as numbers, not CSV text)."""
    names = list(table)
    return [dict(zip(names, values, strict=True))
            for values in zip(*(table[n] for n in names), strict=True)]


def recorded_runs(entry: dict, machine: dict | None, partial: bool = False) -> list[dict]:
    """An algorithm's seed runs as an earlier summary recorded them (its `entry` in the
    aggregate), in the form seed_runs reads from run dirs. The run dirs are not committed and a
    later sitting may be on a fresh machine: the summary is then all that is left of them."""
    if entry.get("total_steps") is None:
        return []
    records = {record.get("seed"): record for record in entry.get("runs", [])}
    runs = []
    for seed in entry.get("seeds", []):
        evals = table_rows(entry["evaluations"][str(seed)])
        if not evals or (evals[-1]["env_steps"] < entry["total_steps"] and not partial):
            continue
        record = dict(records.get(seed, {"seed": seed}))
        if machine and "machine" not in record:
            # Records before runs kept their own: the aggregate's, where every run agreed.
            record["machine"] = machine
        info = {"seed": seed, "profile": entry.get("profile"),
                "total_steps": entry["total_steps"], "overrides": entry.get("overrides", [])}
        if record.get("machine"):
            info["machine"] = record["machine"]
        if record.get("process_wall_s") is not None:
            info["process_wall_s"] = record["process_wall_s"]
        runs.append({"dir": None, "info": info, "config": entry.get("config"),
                     "record": record, "eval": evals,
                     "rate": learning_rate(evals),
                     "train": table_rows(entry.get("training_log", {}).get(str(seed), {}))})
    return runs


def with_recorded(runs: list[dict], entry: dict | None, machine: dict | None,
                  partial: bool = False, name: str = "") -> list[dict]:
    """`runs` (from run dirs) and the seeds an earlier summary's `entry` recorded that are not
    among them; a run dir wins over its record. Recorded runs of another experiment than the
    newest run dir's (experiment_difference; the run dir study_configuration also goes by) are
    left out, with a line that says so."""
    if not entry:
        return runs
    on_disk = {run["info"].get("seed") for run in runs}
    kept = [run for run in recorded_runs(entry, machine, partial)
            if run["info"]["seed"] not in on_disk]
    if runs and kept and (difference := experiment_difference(newest_first(runs)[0], entry)):
        seeds = [run["info"]["seed"] for run in kept]
        print(f"{name}: the summary's seeds {seeds} are of another experiment than the run "
              f"dirs' ({difference}); only the run dirs are aggregated", flush=True)
        return runs
    return sorted(runs + kept, key=lambda run: run["info"].get("seed", -1))


def experiment_difference(run: dict, entry: dict) -> str | None:
    """How a run dir's `run` and an earlier summary's `entry` are not one experiment, or None:
    by their resolved configurations where both kept one (recorded_finished's rule), else by
    their overrides."""
    if run["config"] and entry.get("config"):
        return config_changes(entry["config"], config_from_dict(run["config"]))
    if overrides(run["info"]) != entry.get("overrides", []):
        return f"overrides {entry.get('overrides')} -> {overrides(run['info'])}"
    return None


def overrides(info: dict) -> list[str]:
    """A run's overrides without those that differ between seeds of one experiment."""
    per_seed = tuple(f"{section}.{name}" for section, name in PER_SEED_FIELDS)
    return [o for o in info.get("overrides", []) if not o.startswith(per_seed)]


def add_earlier_sittings(rows: list[dict], resumed: list[dict]) -> None:
    """Make eval rows' wall_time_s count the whole run: a resumed trainer's clock starts at 0
    again at its checkpoint (run.json's `resumed`), so later rows get the time of the last
    row kept from before it added (the time between that row and the checkpoint is lost)."""
    resumes = sorted(r["env_steps"] for r in resumed)
    offset, last, passed = 0.0, 0.0, 0
    for row in rows:
        while passed < len(resumes) and int(row["env_steps"]) > resumes[passed]:
            offset, passed = last, passed + 1
        last = float(row["wall_time_s"]) + offset
        row["wall_time_s"] = str(round(last, 2))


def learning_rate(rows: list[dict]) -> float | None:
    """Env steps/s from the first evaluation after updates began to the last one: collection,
    updates and the evaluations in between (the warm-up of random actions left out)."""
    started = [r for r in rows if int(r["updates"]) > 0]
    if len(started) < 2:
        return None
    first, last = started[0], started[-1]
    seconds = float(last["wall_time_s"]) - float(first["wall_time_s"])
    return (int(last["env_steps"]) - int(first["env_steps"])) / seconds if seconds > 0 else None


def curve(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Env steps evaluated by every seed; seed mean and sample std there."""
    per_seed = [{int(r["env_steps"]): _float(r.get(key)) for r in run["eval"]} for run in runs]
    steps = sorted(set.intersection(*(set(k for k, v in s.items() if v is not None)
                                      for s in per_seed)))
    values = np.array([[s[step] for step in steps] for s in per_seed], dtype=float)
    if values.size == 0:
        return np.array(steps), np.array([]), np.array([])
    std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(steps))
    return np.array(steps), values.mean(axis=0), std


def stats(runs: list[dict], key: str) -> dict | None:
    finals = [_float(run["eval"][-1].get(key)) for run in runs]
    if not runs or any(v is None for v in finals):
        return None
    steps, mean, _ = curve(runs, key)
    best = int(np.argmax(mean))
    return {"final_mean": float(np.mean(finals)),
            "final_std": float(np.std(finals, ddof=1)) if len(finals) > 1 else 0.0,
            "final_per_seed": finals,
            "best_mean": float(mean[best]), "best_at_env_steps": int(steps[best])}


def _rounded(value) -> float | None:
    number = _float(value)
    return float(f"{number:.4g}") if number is not None else None


def _portable(arg: str) -> str:
    """A command-line argument without this machine's paths: a folder under some checkout's
    bench/ is named from the repository root (`trainer.output_dir=bench/results/...`)."""
    key, sep, value = arg.rpartition("=")
    if value.startswith("/") and "/bench/" in value:
        return key + sep + "bench/" + value.split("/bench/", 1)[1]
    return arg


def run_record(run: dict) -> dict:
    """What a seed's run.json says beyond the algorithm's entry: its exact command (a
    `python -m fpmd_core.cli` line that repeats the run), when it ran and how it ended."""
    if "record" in run:  # a run an earlier summary recorded: its record as it was
        return run["record"]
    info = run["info"]
    record = {"seed": info.get("seed")}
    if info.get("command"):
        record["command"] = " ".join(["python"] + [_portable(a) for a in info["command"][1:]])
    for key in ("started", "returncode", "stopped", "process_wall_s", "machine", "note"):
        if key in info:
            record[key] = info[key]
    return record


def columns(rows: list[dict], names=None, value=_float) -> dict:
    """CSV rows as env_steps plus one list per column of `names` (default: every column), None
    where a row left it empty."""
    table = {"env_steps": [int(r["env_steps"]) for r in rows]}
    for name in names or [n for n in (rows[0] if rows else {}) if n != "env_steps"]:
        if any(name in r for r in rows):
            table[name] = [value(r.get(name)) for r in rows]
    return table


def curve_record(runs: list[dict], key: str) -> dict | None:
    steps, mean, std = curve(runs, key)
    if not len(mean):
        return None
    return {"env_steps": steps.tolist(), "mean": mean.tolist(), "std": std.tolist()}


def aggregate(out_dir: Path, tasks: list[str], algos: list[str], partial: bool = False,
              earlier: dict | None = None,
              configs: Callable[[str, str], Config | None] | None = None) -> dict:
    """The summary of the runs under `out_dir`, together with the runs that an `earlier`
    aggregate of the same folder recorded and whose run dirs are gone (with_recorded).
    `configs(task, algo)`: the configuration its runs must have been made with, or None for
    any (of_configuration); without `configs` (a study), that of its newest run
    (study_configuration)."""
    summary: dict = {"tasks": {}, "machine": None, "aggregated_on": machine()}
    earlier_tasks = (earlier or {}).get("tasks", {})
    recorded = []
    for task in tasks:
        entry, task_runs = {}, {}
        for algo in algos:
            earlier_entry = earlier_tasks.get(task, {}).get(algo)
            runs = with_recorded(seed_runs(out_dir, task, algo, partial), earlier_entry,
                                 (earlier or {}).get("machine"), partial, f"{task}/{algo}")
            wanted = configs(task, algo) if configs is not None else study_configuration(runs)
            runs = of_configuration(runs, wanted, f"{task}/{algo}")
            if not runs:
                continue
            task_runs[algo] = runs
            info = runs[0]["info"]
            recorded += [run["info"]["machine"] for run in runs if "machine" in run["info"]]
            walls = [float(run["eval"][-1]["wall_time_s"]) for run in runs]
            process = [run["info"].get("process_wall_s") for run in runs]
            rates = [run["rate"] for run in runs if run["rate"] is not None]
            entry[algo] = {
                "seeds": [run["info"].get("seed") for run in runs],
                "profile": info.get("profile"), "total_steps": info.get("total_steps"),
                "env_steps_reached": min(int(run["eval"][-1]["env_steps"]) for run in runs),
                "overrides": overrides(info),
                # Whether a later sitting's profile is this one (recorded_finished).
                "config": entry_config(runs, earlier_entry),
                "deploy": stats(runs, "return_deploy"),
                "best_of_n": stats(runs, "return_best_of_n"),
                "train_wall_s_mean": float(np.mean(walls)),
                "process_wall_s_mean": float(np.mean(process)) if None not in process else None,
                "env_steps_per_s_after_warmup": float(np.mean(rates)) if rates else None,
                "eval_steps": [int(r["env_steps"]) for r in runs[0]["eval"]],
                # What the plot shows (seed mean and std at the steps every seed evaluated) and
                # what it was computed from, so the run dirs need not be kept.
                "curves": {"deploy": curve_record(runs, "return_deploy"),
                           "best_of_n": curve_record(runs, "return_best_of_n")},
                "runs": [run_record(run) for run in runs],
                "evaluations": {str(run["info"].get("seed")): columns(run["eval"], EVAL_COLUMNS)
                                for run in runs},
                "training_log": {str(run["info"].get("seed")): columns(run["train"], None, _rounded)
                                 for run in runs},
            }
        if entry:
            if partial:
                add_equal_budget(entry, task_runs)
            summary["tasks"][task] = entry
    # Runs record where they ran; older run dirs do not, so then it is left unknown (None).
    if recorded and all(m == recorded[0] for m in recorded):
        summary["machine"] = recorded[0]
    return summary


def of_configuration(runs: list[dict], config: Config | None, name: str) -> list[dict]:
    """The runs (run dirs and an earlier summary's records, as with_recorded gives them) made with
    `config` (config_changes), all of them when it is None. A profile that changed since makes
    the others another experiment: they are left out, with a line (the next sitting runs them
    again); runs that kept no configuration stay."""
    if config is None:
        return runs
    kept = []
    for run in runs:
        changed = config_changes(run["config"], config) if run["config"] else None
        if changed:
            print(f"{name}: seed {run['info'].get('seed')} left out: it ran with another "
                  f"configuration ({changed})", flush=True)
        else:
            kept.append(run)
    return kept


def study_configuration(runs: list[dict]) -> Config | None:
    """The configuration a study's seeds of one task and algorithm must share, where no profile
    says which (bench_learning's own sittings): that of the newest run dir, else the one the
    summary kept; None when no run kept one that still reads. A seed left in the folder from
    before a change is then left out (of_configuration), not averaged with the others."""
    for run in (run for run in newest_first(runs) if run["config"]):
        try:
            return config_from_dict(run["config"])
        except ConfigError:
            continue
    return None


def newest_first(runs: list[dict]) -> list[dict]:
    """The run dirs among `runs`, the newest first (by when their resolved configuration, else
    their run.json, was last written), then the runs an earlier summary recorded: the order in
    which the configuration a study's seeds must share is looked for."""
    def written(run: dict) -> float:
        for name in (RESOLVED_CONFIG_NAME, "run.json"):
            if (run["dir"] / name).is_file():
                return (run["dir"] / name).stat().st_mtime
        return 0.0

    on_disk = sorted((run for run in runs if run["dir"] is not None), key=written, reverse=True)
    return on_disk + [run for run in runs if run["dir"] is None]


def entry_config(runs: list[dict], earlier_entry: dict | None) -> dict | None:
    """The experiment's configuration (experiment_config) from the first run dir that has one,
    else as the earlier summary kept it."""
    from_dirs = [run["config"] for run in runs if run["dir"] is not None and run["config"]]
    return from_dirs[0] if from_dirs else (earlier_entry or {}).get("config")


def add_equal_budget(entry: dict, runs: dict[str, list[dict]]) -> None:
    """Runs stopped early reach different env steps, so their final returns are not at equal
    budget; record each algorithm's deploy return at the last step every run of the task
    evaluated (`runs`: algo -> its seed runs)."""
    evaluated = [set(curve(algo_runs, "return_deploy")[0].tolist())
                 for algo_runs in runs.values()]
    common = set.intersection(*evaluated) if evaluated else set()
    if not common:
        return
    step = max(common)
    for algo, algo_runs in runs.items():
        values = [_float(next(r["return_deploy"] for r in run["eval"]
                              if int(r["env_steps"]) == step)) for run in algo_runs]
        entry[algo]["deploy_at_equal_budget"] = {
            "env_steps": step, "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def markdown(summary: dict) -> str:
    def cell(s: dict | None, which: str) -> str:
        if s is None:
            return "n/a"
        if which == "final":
            return f"{s['final_mean']:.1f} ± {s['final_std']:.1f}"
        return f"{s['best_mean']:.1f} (at {s['best_at_env_steps'] / 1000:g}k)"

    lines = ["| task | algorithm | seeds | env steps | final deploy | best deploy | "
             "final best-of-N | best best-of-N | wall (min) | env steps/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    equal = []
    for task, entry in summary["tasks"].items():
        for algo, row in entry.items():
            rate = row["env_steps_per_s_after_warmup"]
            lines.append(
                f"| {task} | {LABELS.get(algo, algo)} | {len(row['seeds'])} | "
                f"{row['env_steps_reached']} | {cell(row['deploy'], 'final')} | "
                f"{cell(row['deploy'], 'best')} | {cell(row['best_of_n'], 'final')} | "
                f"{cell(row['best_of_n'], 'best')} | {row['train_wall_s_mean'] / 60:.1f} | "
                + (f"{rate:.1f} |" if rate else "n/a |"))
            at = row.get("deploy_at_equal_budget")
            if at:
                equal.append(f"| {task} | {LABELS.get(algo, algo)} | {at['env_steps']} | "
                             f"{at['mean']:.1f} ± {at['std']:.1f} |")
    if equal:
        lines += ["", "Equal budget (runs stopped early): deploy return at the last env step "
                  "every run of the task evaluated.", "",
                  "| task | algorithm | env steps | deploy |", "|---|---|---|---|", *equal]
    return "\n".join(lines) + "\n"


def plot_task(task: str, entry: dict, png: Path, partial: bool = False) -> None:
    """The learning curves of one task from its summary entry (algo -> aggregate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    meta = None
    for algo, row in entry.items():
        deploy = (row.get("curves") or {}).get("deploy")
        if not deploy:
            continue
        meta = meta or row
        color = COLORS.get(algo)
        steps, mean, std = (np.array(deploy[k], dtype=float) for k in ("env_steps", "mean", "std"))
        ax.plot(steps, mean, color=color, marker="o", ms=3,
                label=f"{LABELS.get(algo, algo)} deploy (NFE {NFE.get(algo, 1)}), "
                      f"{len(row['seeds'])} seeds")
        ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.15)
        best = row["curves"].get("best_of_n")
        if algo != "sac" and best:
            ax.plot(best["env_steps"], best["mean"], color=color, ls="--", lw=1,
                    label=f"{LABELS.get(algo, algo)} best-of-N")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (mean over seeds, ± std shaded)")
    if meta:
        stopped = " (runs stopped early)" if partial else ""
        ax.set_title(f"{task}: profile {meta.get('profile')}, {meta.get('total_steps')} "
                     f"steps{stopped}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def read_summary(out_dir: Path) -> dict:
    path = out_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_outputs(out_dir: Path, summary: dict) -> None:
    """summary.json, summary.md and one learning-curve PNG per task, all from `summary`."""
    partial = bool(summary.get("unfinished_runs_included"))
    text = markdown(summary)
    (out_dir / "summary.json").write_text(json_text(summary) + "\n")
    (out_dir / "summary.md").write_text(text)
    for task, entry in summary["tasks"].items():
        plot_task(task, entry, out_dir / f"{task}.png", partial)
    print(text, end="")
    print(f"written: {out_dir / 'summary.json'}, {out_dir / 'summary.md'}, "
          f"{', '.join(str(out_dir / f'{t}.png') for t in summary['tasks'])}")


def write_aggregate(out_dir: Path, tasks: list[str], algos: list[str],
                    partial: bool = False) -> None:
    previous = read_summary(out_dir)
    summary = aggregate(out_dir, tasks, algos, partial, earlier=previous)
    summary["unfinished_runs_included"] = partial
    # Every command that made the runs and this summary, oldest first (the runs' own commands
    # are in each algorithm's "runs"), and notes written about them, are kept from an earlier
    # summary; so is its machine where the runs name none.
    commands = list(previous.get("commands", []))
    if command_line() not in commands:
        commands.append(command_line())
    notes = {"notes": previous["notes"]} if previous.get("notes") else {}
    summary = {"commands": commands, **notes, **summary}
    if summary["machine"] is None and previous.get("machine"):
        summary["machine"] = previous["machine"]
    write_outputs(out_dir, summary)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of how each run trains and is evaluated (bench_paired_sb3 takes them too)."""
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. n-1")
    parser.add_argument("--profile", default="cpu", choices=["cpu", "paper"])
    parser.add_argument("--eval-interval", type=int, default=None,
                        help="trainer.eval_interval (default: the profile's)")
    parser.add_argument("--eval-episodes", type=int, default=None,
                        help="trainer.eval_episodes (default: the profile's)")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="trainer.warmup_steps of our runs (default: the profile's)")
    parser.add_argument("--checkpoint-interval", type=int, default=None,
                        help="trainer.checkpoint_interval (default: the profile's); an "
                             "interrupted run of ours resumes from its newest checkpoint")
    parser.add_argument("--torch-threads", type=int, default=1, help="per run")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help="extra override for every run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=None,
                        help=f"default {' '.join(TASKS)} (--aggregate-only: those on disk)")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=[*ALGOS, SB3_SAC])
    parser.add_argument("--total-steps", type=int, default=100_000)
    add_run_arguments(parser)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results/learning"))
    parser.add_argument("--aggregate-only", action="store_true",
                        help="only re-make summary and plots from the run dirs on disk")
    parser.add_argument("--from-summary", action="store_true",
                        help="only re-make summary.md and the plots from summary.json (the run "
                             "dirs are not needed)")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="aggregate runs stopped before --total-steps too, up to their last "
                             "evaluation (the table's env steps column says how far)")
    args = parser.parse_args()
    args.out_dir = args.out_dir if args.out_dir.is_absolute() else REPO / args.out_dir
    if args.from_summary:
        summary = read_summary(args.out_dir)
        if not summary:
            parser.error(f"--from-summary: no summary.json in {args.out_dir}")
        write_outputs(args.out_dir, summary)
        return
    if args.aggregate_only:
        tasks, _ = folder_contents(args.out_dir, args.tasks or [], [])
        if not tasks:
            parser.error(f"--aggregate-only: no task directories under {args.out_dir} and no "
                         f"task in its summary.json")
    else:
        tasks = args.tasks = args.tasks or list(TASKS)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        runs = [Run(task, algo, seed, args.total_steps, args.out_dir) for task in tasks
                for algo in args.algos for seed in range(args.seeds)]
        runs.sort(key=lambda r: (COST_ORDER.get(r.algo, 9), r.seed, r.task))
        earlier = read_summary(args.out_dir).get("tasks", {})
        run_all(args, [[run] for run in runs],
                lambda run: earlier.get(run.task, {}).get(run.algo))
        print(f"all runs ended after {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    write_aggregate(args.out_dir, *folder_contents(args.out_dir, tasks, args.algos),
                    args.include_unfinished)


def folder_contents(out_dir: Path, tasks: list[str], algos: list[str]) -> tuple[list, list]:
    """The tasks and algorithms a folder's summary covers: those of this invocation, those with
    run dirs under `out_dir` and those its summary.json records (the run dirs are not
    committed, and a sitting may choose fewer tasks than the earlier ones ran)."""
    recorded = read_summary(out_dir).get("tasks", {})
    on_disk = {p.name: {a.name for a in p.iterdir() if a.is_dir()}
               for p in (out_dir.iterdir() if out_dir.is_dir() else []) if p.is_dir()}
    present = set(algos).union(*on_disk.values(), *(set(e) for e in recorded.values()))
    others = sorted((set(on_disk) | set(recorded)) - set(tasks))
    return [*tasks, *others], [a for a in (*ALGOS, SB3_SAC) if a in present]


if __name__ == "__main__":
    main()
