"""Issue 7 benchmark: how straight the learned flow is (the paper's one-step claim), with plots.

    nice -n 5 python -m bench.bench_straightness \
        [--run-dir bench/results/learning/InvertedPendulum-v5/fpmd_r/seed_0]

(a) One-step error against training: the trainer logs ``one_step_error`` in train.csv every
``trainer.log_interval`` env steps, the mean over 64 replay states of ||a(NFE=1) - a(NFE=20)||
from x0 = 0 with the EMA policy, actions clipped to [-1, 1]
(``MirrorDescentAgent.one_step_error``). It is read from the FPMD-R and FPMD-M run dirs of
``bench.bench_learning`` (``--train-csv`` globs) and plotted per task and algorithm (mean over
seeds, shaded ± std) to ``straightness_error.png``.

(b) The paper's trajectory figure: an early and a late checkpoint of one FPMD-R run (the first
checkpoint after the warm-up unless ``--early-step``, and ``final.pt``) are loaded as
``fpmd_core.runtime.CheckpointPolicy`` loads them, and the EMA policy's flow is integrated for one
fixed state (the task's first observation after ``reset(seed=--state-seed)``) from ``--samples``
noise draws x0 ~ N(0, I) with K = 20 Euler steps, recording every x_t (the same steps as
``FlowPolicy.generate``, checked against it). The plot shows x_t of the first action dimension
against t, early and late side by side, with the one-step prediction x0 + v(x0, 0) as straight
dashed lines. Numbers (``straightness.json``): the one-step vs 20-step endpoint gap
mean ||x_1 - (x0 + v(x0, 0))|| (raw flow output and clipped to [-1, 1]), the same from x0 = 0 (the
deploy action), rectified flow's straightness E_t ||(x_1 - x0) - v(x_t, t)||^2 along the recorded
path (0 = straight), the spread of the 20-step endpoints for scale, and the endpoint gap averaged
over 64 states of the run's replay (32 draws each).

If ``--run-dir`` has fewer than two checkpoints, an FPMD-R run of ``--train-steps`` on ``--task``
(CPU profile) is trained in-process into ``<out-dir>/straightness_run/<task>/fpmd_r/seed_<s>``
first (its train.csv then joins (a)). The device is
``trainer.device: auto`` (CUDA when present).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from bench.common import REPO, command_line
from fpmd_core.agents import make_agent
from fpmd_core.checkpoint import load_checkpoint
from fpmd_core.config import config_from_dict, make_config
from fpmd_core.tasks import make_env
from fpmd_core.trainer import Trainer, resolve_device

STEPS = 20
LABELS = {"fpmd_r": "FPMD-R", "fpmd_m": "FPMD-M"}
DEFAULT_RUN = "bench/results/learning/InvertedPendulum-v5/fpmd_r/seed_0"
DEFAULT_CSV = "bench/results/learning/*/fpmd_[rm]/seed_*/train.csv"


# --- (a) one-step error from train.csv -----------------------------------------------------------

def error_curves(pattern: str) -> dict:
    """(task, algo) -> {"steps", "mean", "std", "seeds"} of one_step_error over env steps."""
    per_run = defaultdict(list)
    for path in sorted(glob.glob(str(REPO / pattern) if not Path(pattern).is_absolute()
                                 else pattern)):
        parts = Path(path).parts
        task, algo = parts[-4], parts[-3]
        with open(path, newline="") as handle:
            rows = {int(r["env_steps"]): float(r["one_step_error"])
                    for r in csv.DictReader(handle) if r.get("one_step_error")}
        if rows:
            per_run[(task, algo)].append(rows)
    curves = {}
    for key, runs in per_run.items():
        steps = sorted(set.intersection(*(set(r) for r in runs)))
        values = np.array([[r[s] for s in steps] for r in runs])
        curves[key] = {"steps": steps, "mean": values.mean(axis=0).tolist(),
                       "std": (values.std(axis=0, ddof=1) if len(runs) > 1
                               else np.zeros(len(steps))).tolist(),
                       "seeds": len(runs)}
    return curves


def plot_errors(curves: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (task, algo), c in sorted(curves.items()):
        steps, mean, std = np.array(c["steps"]), np.array(c["mean"]), np.array(c["std"])
        line, = ax.plot(steps, mean, label=f"{LABELS.get(algo, algo)}, {task} "
                        f"({c['seeds']} seeds)")
        ax.fill_between(steps, np.maximum(mean - std, 1e-6), mean + std,
                        color=line.get_color(), alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("||a(NFE=1) - a(NFE=20)||, x0 = 0, EMA policy")
    ax.set_title("one-step error during training (mean over seeds, ± std shaded)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


# --- (b) trajectories from checkpoints -----------------------------------------------------------

def checkpoints(run_dir: Path) -> dict[int, Path]:
    """env steps -> checkpoint path (step_<n>.pt, and final.pt at its own step count)."""
    found = {}
    for path in (run_dir / "checkpoints").glob("step_*.pt"):
        match = re.fullmatch(r"step_(\d+)\.pt", path.name)
        if match:
            found[int(match.group(1))] = path
    final = run_dir / "checkpoints" / "final.pt"
    if final.is_file():
        steps = int(load_checkpoint(final)["counters"]["env_steps"])
        found.setdefault(steps, final)
    return dict(sorted(found.items()))


def train_run(args, run_dir: Path) -> None:
    cfg = make_config("cpu", overrides={
        "task.id": args.task, "agent.algo": "fpmd_r", "trainer.total_steps": args.train_steps,
        "trainer.warmup_steps": args.warmup_steps, "trainer.eval_interval": args.train_steps,
        "trainer.eval_episodes": 3, "trainer.checkpoint_interval": args.train_steps // 4,
        "trainer.output_dir": str(run_dir), "trainer.progress": False,
        "trainer.torch_threads": 1, "trainer.seed": args.seed})
    print(f"training FPMD-R on {args.task} for {args.train_steps} env steps into {run_dir}",
          flush=True)
    Trainer(cfg).run()


def load_agent(path: Path, device: torch.device, algos: tuple[str, ...] = ("fpmd_r",)):
    """(agent, config, env steps, replay observations) of a trainer checkpoint."""
    payload = load_checkpoint(path, map_location=device)
    cfg = config_from_dict(payload["config"])
    spec = payload["task_spec"]
    if cfg.agent.algo not in algos:
        raise SystemExit(f"{path}: algorithm {cfg.agent.algo}; expected one of {algos}")
    agent = make_agent(tuple(spec["obs_shape"]) or spec["obs_dim"], spec["act_dim"], cfg.agent,
                       device)
    agent.load_full_state(payload["agent"])
    agent.eval()
    replay_obs = payload["replay"]["data"]["obs"]
    return agent, cfg, int(payload["counters"]["env_steps"]), replay_obs


@torch.no_grad()
def trajectories(policy, features: torch.Tensor, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """x_t at t = 0, 1/K, ..., 1 (shape K+1, rows, act_dim): FlowPolicy.generate's Euler steps."""
    x, dt, path = x0, 1.0 / steps, [x0]
    for k in range(steps):
        t = torch.full((1,), k * dt, dtype=x.dtype, device=x.device)
        x = x + dt * policy.velocity(features, x, t)
        path.append(x)
    path = torch.stack(path)
    check = policy.generate(features, x0, steps)
    if not torch.allclose(path[-1], check, atol=1e-5):
        raise RuntimeError("recorded trajectory does not end where FlowPolicy.generate does")
    return path


@torch.no_grad()
def straightness(agent, obs: np.ndarray, replay_obs: torch.Tensor, samples: int,
                 noise_scale: float, seed: int) -> dict:
    policy, device = agent.ema_policy, agent.device
    gen = torch.Generator().manual_seed(seed)
    features = agent.features(torch.as_tensor(obs[None], dtype=torch.float32, device=device))
    rows = features.expand(samples, -1)
    x0 = (noise_scale * torch.randn(samples, agent.act_dim, generator=gen)).to(device)
    path = trajectories(policy, rows, x0, STEPS)
    end, one = path[-1], policy.generate(rows, x0, 1)
    zero = torch.zeros(1, agent.act_dim, device=device)
    deploy_gap = (policy.generate(features, zero, STEPS) - policy.generate(features, zero, 1))
    # Rectified flow's straightness (Liu et al. 2022): E over t of ||(x1 - x0) - v(x_t, t)||^2,
    # 0 for straight constant-speed paths (the velocity along the recorded Euler path).
    velocity = (path[1:] - path[:-1]) * STEPS
    deviation = (velocity - (end - x0)[None]).pow(2).sum(dim=-1).mean()
    # The same gap over many states: 64 replay states x 32 noise draws.
    states = replay_obs[torch.randperm(len(replay_obs), generator=gen)[:64]].to(device)
    many = agent.features(states.float()).repeat_interleave(32, dim=0)
    xm = (noise_scale * torch.randn(len(many), agent.act_dim, generator=gen)).to(device)
    replay_gap = (policy.generate(many, xm, STEPS) - policy.generate(many, xm, 1)).norm(dim=-1)
    return {
        "path": path[:, :, 0].cpu().numpy(), "one_step": one[:, 0].cpu().numpy(),
        "x0": x0[:, 0].cpu().numpy(),
        "endpoint_gap_mean": (end - one).norm(dim=-1).mean().item(),
        "endpoint_gap_dim0_mean": (end - one)[:, 0].abs().mean().item(),
        "endpoint_gap_clipped_mean":
            (end.clamp(-1, 1) - one.clamp(-1, 1)).norm(dim=-1).mean().item(),
        "deploy_gap_x0_zero": deploy_gap.norm().item(),
        "velocity_deviation": deviation.item(),
        "endpoint_std_dim0": end[:, 0].std().item(),
        "endpoint_mean_dim0": end[:, 0].mean().item(),
        "replay_states_endpoint_gap_mean": replay_gap.mean().item(),
    }


def plot_trajectories(results: list[dict], task: str, png: Path, shown: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), sharey=True)
    t = np.linspace(0.0, 1.0, STEPS + 1)
    for ax, r in zip(np.atleast_1d(axes), results, strict=True):
        for i in range(min(shown, r["path"].shape[1])):
            ax.plot(t, r["path"][:, i], color="tab:blue", lw=0.8, alpha=0.5,
                    label="K = 20 Euler steps" if i == 0 else None)
            ax.plot([0, 1], [r["x0"][i], r["one_step"][i]], color="tab:orange", lw=0.6,
                    ls="--", alpha=0.6, label="one step x0 + v(x0, 0)" if i == 0 else None)
        ax.axhspan(-1, 1, color="0.9", zorder=0, label="action range [-1, 1]")
        ax.set_title(f"{r['label']}: {r['env_steps']} env steps ({r['updates']} updates)\n"
                     f"mean |x1(K=20) - x1(K=1)| = {r['endpoint_gap_mean']:.3f}\n"
                     f"E||(x1 - x0) - v(x_t, t)||² = {r['velocity_deviation']:.4f}",
                     fontsize=9)
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("x_t, action dimension 0")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"FPMD-R flow from x0 ~ N(0, I) at one fixed state of {task} (EMA policy)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path(DEFAULT_RUN),
                        help="an FPMD-R run dir with checkpoints/")
    parser.add_argument("--train-csv", nargs="+", default=[DEFAULT_CSV],
                        help="globs of train.csv files of FPMD-R/FPMD-M runs "
                             "(<task>/<algo>/seed_<s>/train.csv)")
    parser.add_argument("--early-step", type=int, default=None,
                        help="checkpoint step of the early policy (default: the first after "
                             "the warm-up)")
    parser.add_argument("--samples", type=int, default=256, help="noise draws x0")
    parser.add_argument("--shown", type=int, default=48, help="trajectories drawn per panel")
    parser.add_argument("--noise-scale", type=float, default=1.0, help="x0 = scale * N(0, I)")
    parser.add_argument("--state-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", default="InvertedPendulum-v5", help="only if training")
    parser.add_argument("--train-steps", type=int, default=6000, help="only if training")
    parser.add_argument("--warmup-steps", type=int, default=1000, help="only if training")
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    out_dir = args.out_dir if args.out_dir.is_absolute() else REPO / args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"command": command_line()}

    run_dir = args.run_dir if args.run_dir.is_absolute() else REPO / args.run_dir
    trained = False
    if len(checkpoints(run_dir)) < 2:
        print(f"{run_dir}: fewer than two checkpoints")
        own = out_dir / "straightness_run"
        run_dir, trained = own / args.task / "fpmd_r" / f"seed_{args.seed}", True
        if len(checkpoints(run_dir)) < 2:
            train_run(args, run_dir)
    found = checkpoints(run_dir)
    device = resolve_device("auto")
    _, cfg, _, _ = load_agent(found[max(found)], device)
    warmup = cfg.trainer.warmup_steps
    early = args.early_step if args.early_step is not None else \
        min((s for s in found if s > warmup), default=min(found))
    if early not in found:
        raise SystemExit(f"no checkpoint at step {early} in {run_dir}: {sorted(found)}")
    env = make_env(cfg.task.id)
    obs, _ = env.reset(seed=args.state_seed)
    panels = []
    for label, step in (("early", early), ("late", max(found))):
        agent, _, env_steps, replay_obs = load_agent(found[step], device)
        r = straightness(agent, np.asarray(obs, np.float32), replay_obs, args.samples,
                         args.noise_scale, args.seed)
        r |= {"label": label, "env_steps": env_steps, "updates": agent.gradient_steps,
              "checkpoint": str(found[step].relative_to(REPO) if found[step].is_relative_to(REPO)
                                else found[step])}
        panels.append(r)
        print(f"{label}: {env_steps} env steps ({agent.gradient_steps} updates): endpoint gap "
              f"{r['endpoint_gap_mean']:.4f} (clipped {r['endpoint_gap_clipped_mean']:.4f}), "
              f"from x0 = 0 {r['deploy_gap_x0_zero']:.4f}, E||(x1 - x0) - v||^2 "
              f"{r['velocity_deviation']:.4f}, endpoint spread (std, dim 0) "
              f"{r['endpoint_std_dim0']:.4f}; over 64 replay states "
              f"{r['replay_states_endpoint_gap_mean']:.4f}")
    plot_trajectories(panels, cfg.task.id, out_dir / "straightness_trajectories.png", args.shown)
    result["trajectories"] = {
        "task": cfg.task.id, "run_dir": str(run_dir.relative_to(REPO)
                                            if run_dir.is_relative_to(REPO) else run_dir),
        "state": np.asarray(obs).tolist(), "state_seed": args.state_seed,
        "samples": args.samples, "noise_scale": args.noise_scale, "euler_steps": STEPS,
        "device": str(device),
        "checkpoints": [{k: v for k, v in p.items() if k not in ("path", "one_step", "x0")}
                        for p in panels]}
    curves: dict = {}
    for pattern in args.train_csv + ([str(run_dir / "train.csv")] if trained else []):
        curves |= error_curves(pattern)
    if curves:
        plot_errors(curves, out_dir / "straightness_error.png")
        result["one_step_error"] = {
            f"{task}/{algo}": {**c, "first": c["mean"][0], "last": c["mean"][-1]}
            for (task, algo), c in curves.items()}
        for (task, algo), c in sorted(curves.items()):
            print(f"one-step error {LABELS.get(algo, algo)} {task} ({c['seeds']} seeds): "
                  f"{c['mean'][0]:.4f} at {c['steps'][0]} -> {c['mean'][-1]:.4f} at "
                  f"{c['steps'][-1]} env steps")
    else:
        print(f"no train.csv with one_step_error matches {args.train_csv}")

    (out_dir / "straightness.json").write_text(json.dumps(result, indent=2))
    print(f"written: {out_dir / 'straightness.json'}, {out_dir / 'straightness_error.png'}, "
          f"{out_dir / 'straightness_trajectories.png'}")


if __name__ == "__main__":
    main()
