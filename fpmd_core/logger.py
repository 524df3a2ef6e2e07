"""Run outputs with stable names: TensorBoard scalars, CSV files, the learning-curve PNG, and
progress lines for logs."""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path


def goal_distance_columns(mode: str) -> tuple[str, ...]:
    """eval.csv's columns of the final goal distance (m) in one evaluation mode: its mean, std
    (ddof 0), median and max (the worst episode) over the evaluation episodes."""
    name = f"final_goal_distance_{mode}"
    return (name, f"{name}_std", f"{name}_median", f"{name}_max")


# Means over the evaluation episodes, then the spread of their returns (std over the episodes,
# ddof 0, min, max), then the final goal distance of goal tasks (empty for other tasks); new
# columns go at the end so that existing readers keep their positions.
EVAL_FIELDS = ("env_steps", "updates", "wall_time_s", "return_deploy", "return_best_of_n",
               "length_deploy", "length_best_of_n",
               "return_deploy_std", "return_deploy_min", "return_deploy_max",
               "return_best_of_n_std", "return_best_of_n_min", "return_best_of_n_max",
               *goal_distance_columns("deploy"), *goal_distance_columns("best_of_n"))
TRAIN_FIELDS = ("env_steps", "updates", "loss/critic", "loss/actor", "alpha", "q/mean",
                "weights/std", "weights/max", "weights/min", "grad_norm/actor", "entropy",
                "one_step_error", "train/episode_return", "perf/updates_per_s",
                "perf/env_steps_per_s", "weights/ess")


class RunLogger:
    def __init__(self, out_dir: Path, tensorboard: bool = True, start_env_steps: int = 0):
        """Rows past `start_env_steps` left by an earlier run in `out_dir` are dropped: a
        fresh run (0) starts new CSVs, a resumed one keeps the rows up to its checkpoint (rows
        written after it would otherwise appear twice). TensorBoard gets the same rule without
        deleting the earlier event files: the new file starts with a restart marker that hides
        their later steps (`purge_step`)."""
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"),
                                        purge_step=start_env_steps + 1)
        self.eval_csv = out_dir / "eval.csv"
        self.train_csv = out_dir / "train.csv"
        for path, fields in ((self.eval_csv, EVAL_FIELDS), (self.train_csv, TRAIN_FIELDS)):
            _keep_rows_until(path, fields, start_env_steps)

    def scalars(self, values: dict[str, float], env_steps: int) -> None:
        if self.writer:
            for key, value in values.items():
                self.writer.add_scalar(key, value, env_steps)
        self._append(self.train_csv, {"env_steps": env_steps, **values}, TRAIN_FIELDS)

    def evaluation(self, row: dict[str, float]) -> None:
        if self.writer:
            for key in ("return_deploy", "return_best_of_n", "length_deploy",
                        *goal_distance_columns("deploy"), *goal_distance_columns("best_of_n")):
                if row.get(key) is not None:
                    self.writer.add_scalar(f"eval/{key}", row[key], row["env_steps"])
        self._append(self.eval_csv, row, EVAL_FIELDS)

    @staticmethod
    def _append(path: Path, row: dict, fields) -> None:
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore",
                                    restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def _keep_rows_until(path: Path, fields, env_steps: int) -> None:
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["env_steps"]) <= env_steps]
    if not rows:
        path.unlink()
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)


def plot_learning_curve(eval_csv: Path, out_png: Path, title: str) -> Path | None:
    """Deploy-mode (NFE = 1) and best-of-N returns against env steps."""
    if not eval_csv.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(eval_csv.open()))
    steps = [int(r["env_steps"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("return_deploy", "deploy (NFE = 1)"), ("return_best_of_n", "best-of-N")):
        values = [float(r[key]) if r.get(key) not in (None, "") else None for r in rows]
        points = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


class ProgressLine:
    """Progress as a log line every `interval_s` seconds and one at the end: env steps, steps/s
    (since the previous line), the last evaluation's deploy-mode return and the time left at
    that rate. For logs, where a progress bar cannot be read. During the warm-up (random actions,
    no updates: many times faster than training) no time left is given, since its rate says
    nothing about the rest."""

    def __init__(self, total_steps: int, start_steps: int, interval_s: float,
                 clock: Callable[[], float] = time.monotonic, stream=None,
                 warmup_steps: int = 0):
        self.total_steps, self.interval_s = total_steps, interval_s
        self.warmup_steps = warmup_steps
        self.clock, self.stream = clock, stream
        self.start_time = self.line_time = clock()
        self.start_steps = self.line_steps = start_steps

    def update(self, env_steps: int, last_eval: dict) -> None:
        now = self.clock()
        if now - self.line_time >= self.interval_s:
            self._write(self.line(env_steps, last_eval, now))
            self.line_time, self.line_steps = now, env_steps

    def close(self, env_steps: int, last_eval: dict) -> None:
        now = self.clock()
        steps, elapsed = env_steps - self.start_steps, now - self.start_time
        rate = f"{steps / elapsed:.1f} steps/s" if elapsed > 0 else "- steps/s"
        self._write(f"progress: done, {env_steps}/{self.total_steps} env steps, {rate}, "
                    f"{_last_eval_text(last_eval)}, took {format_duration(elapsed)}")

    def line(self, env_steps: int, last_eval: dict, now: float) -> str:
        steps, elapsed = env_steps - self.line_steps, now - self.line_time
        rate = steps / elapsed if elapsed > 0 else 0.0
        left = max(self.total_steps - env_steps, 0)
        if env_steps < self.warmup_steps:
            eta = f"known once the warm-up ends at {self.warmup_steps} env steps"
        else:
            eta = format_duration(left / rate) if rate > 0 else "unknown"
        percent = 100.0 * env_steps / self.total_steps
        return (f"progress: {env_steps}/{self.total_steps} env steps ({percent:.1f}%), "
                f"{rate:.1f} steps/s, {_last_eval_text(last_eval)}, ETA {eta}")

    def _write(self, text: str) -> None:
        # stderr looked up at each write: a test's or a launcher's redirection applies.
        print(text, file=self.stream or sys.stderr, flush=True)


def _last_eval_text(last_eval: dict) -> str:
    if not last_eval or last_eval.get("return_deploy") is None:
        return "no evaluation yet"
    text = (f"last eval return {last_eval['return_deploy']:.1f} "
            f"(deploy, at {last_eval['env_steps']} env steps)")
    distance = last_eval.get(goal_distance_columns("deploy")[0])
    if distance is not None:
        # Centimetres: a reaching task's precision reads as 1.8 cm, not 0.018 m.
        text += f", final goal distance {100 * distance:.2f} cm (deploy, mean)"
    return text


def format_duration(seconds: float) -> str:
    """42 s, 5 min 15 s, 3 h 07 min, 2 d 04 h."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"
