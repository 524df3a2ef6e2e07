"""Issue 7 benchmark: deploy latency of SAC, FPMD-R, FPMD-M and DPMD at batch 1, one thread.

    nice -n 5 python -m bench.bench_inference --out bench/results/inference.json

For each network profile (``paper``: 3x256, ``cpu``: 2x128) on one task (Hopper-v5), untrained
agents (latency does not depend on the weights) are built as the trainer builds them and timed on
one CPU thread at batch 1, through two backends:

- ``onnxruntime``: ``session.run`` on the exported deploy graph (``fpmd_core.export.export_onnx``,
  one intra-op and one inter-op thread, as ``OnnxPolicy`` opens it);
- ``torch``: the same deploy graph in eager torch (``fpmd_core.export.deploy_graph``, i.e.
  ``agent.deploy_policy()`` plus encoder and action rescaling) under ``torch.inference_mode``.

Variants: SAC (tanh-Gaussian mean), FPMD-R and FPMD-M (one network call from x0 = 0), DPMD
deploy mode (20 DDPM steps from x0 = 0, NFE = 20) and DPMD best-of-32 x 20 steps, the paper's
640-call reference: ``fpmd_core.agents.sampling.sample_actions(policy, critic, obs, steps=20,
particles=32, noise_scale=0.5)`` (32 noise draws batched as 32 rows through 20 DDPM steps, with
per-step noise, then one double-Q call on the 32 candidates and the argmax), exported to ONNX as
it is (its random draws become RandomNormal nodes) and run eagerly in torch.

Each call maps one observation (numpy, float32) to one action in env units. The (profile,
variant, backend) blocks are interleaved: every round runs each block once, in a fresh random
order, so machine noise hits all alike; p50/p99 are over all timed calls of all rounds, and the
ratios against SAC and DPMD are taken in the same run and backend. Each call is timed by the
wall clock (the latency) and by the thread's CPU time (the same work without the waits for a
core on a loaded host, so long calls are not penalised by preemption more than short ones).
Latency is a one-thread CPU measurement by definition, so the agents are built on the CPU
whatever the machine has.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.common import command_line
from bench.machine import cpu_model
from fpmd_core.agents import make_agent
from fpmd_core.agents.sampling import sample_actions
from fpmd_core.config import make_config
from fpmd_core.export import deploy_graph, export_onnx
from fpmd_core.runtime import OnnxPolicy
from fpmd_core.tasks import make_env, task_spec

ALGOS = ("sac", "fpmd_r", "fpmd_m", "dpmd")
VARIANTS = ("sac", "fpmd_r", "fpmd_m", "dpmd", "dpmd_bo32")
LABELS = {"sac": "SAC", "fpmd_r": "FPMD-R", "fpmd_m": "FPMD-M", "dpmd": "DPMD (NFE 20)",
          "dpmd_bo32": "DPMD best-of-32 x 20"}
BACKENDS = ("onnxruntime", "torch")
SLOW = {"dpmd_bo32"}
BEST_OF_N_PARTICLES, BEST_OF_N_STEPS = 32, 20
TARGETS = {"vs_sac_max": 1.2, "vs_dpmd_min": 8.0, "vs_dpmd_bo32_min": 150.0}


class BestOfN(torch.nn.Module):
    """raw observation -> best-of-N action in env units (DPMD's evaluation sampler)."""

    def __init__(self, agent, spec, particles: int, steps: int):
        super().__init__()
        self.encoder, self.policy, self.critic = agent.encoder, agent.ema_policy, \
            agent.critic.online
        self.particles, self.steps = particles, steps
        self.noise_scale = agent.cfg.noise_scale_init
        self.register_buffer("low", torch.as_tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(spec.action_high, dtype=torch.float32))

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        action = sample_actions(self.policy, self.critic, self.encoder(observation), self.steps,
                                self.particles, self.noise_scale)
        return self.low + (action + 1.0) * 0.5 * (self.high - self.low)


def onnx_session(path: Path):
    """The exported graph opened as OnnxPolicy opens it (one intra-op, one inter-op thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_best_of_n(module: BestOfN, obs_dim: int, path: Path) -> Path:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and indexing notes
        torch.onnx.export(module, (torch.zeros(1, obs_dim),), str(path), dynamo=False,
                          opset_version=17, input_names=["observation"],
                          output_names=["action"])
    return path


def build_calls(profile: str, task: str, spec, obs: np.ndarray, tmp: Path) -> dict:
    """(variant, backend) -> (zero-argument call, its network-call count description)."""
    calls = {}
    batch = obs[None]
    for algo in ALGOS:
        cfg = make_config(profile, overrides={"agent.algo": algo, "task.id": task})
        agent = make_agent(spec.obs_shape, spec.act_dim, cfg.agent, torch.device("cpu")).eval()
        path = export_onnx(agent, spec, cfg, tmp / f"{profile}_{algo}.onnx")
        policy = OnnxPolicy(path)  # validates the export against its metadata
        session, feed = policy.session, {"observation": batch}
        graph = deploy_graph(agent, spec).eval()
        calls[(algo, "onnxruntime")] = lambda s=session, f=feed: s.run(["action"], f)[0]
        calls[(algo, "torch")] = lambda g=graph: g(torch.as_tensor(batch)).numpy()
        if algo == "dpmd":
            best = BestOfN(agent, spec, BEST_OF_N_PARTICLES, BEST_OF_N_STEPS).eval()
            session = onnx_session(export_best_of_n(best, spec.obs_dim,
                                                    tmp / f"{profile}_dpmd_bo32.onnx"))
            calls[("dpmd_bo32", "onnxruntime")] = \
                lambda s=session, f=feed: s.run(["action"], f)[0]
            calls[("dpmd_bo32", "torch")] = lambda g=best: g(torch.as_tensor(batch)).numpy()
    for (variant, backend), call in calls.items():
        with torch.inference_mode():
            action = call()
        if action.shape != (1, spec.act_dim) or not np.isfinite(action).all():
            raise RuntimeError(f"{profile} {variant} {backend}: bad action {action!r}")
    return calls


def time_block(call, count: int, warmup: int) -> tuple[list[float], list[float]]:
    """`count` timed calls after `warmup` untimed ones: wall-clock and this thread's CPU time
    (microseconds). Both backends compute on the calling thread at one thread, so the CPU time
    is the call's own work, without the time the thread waited for a core on a loaded host."""
    with torch.inference_mode():
        for _ in range(warmup):
            call()
        wall, cpu = [], []
        for _ in range(count):
            start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
            call()
            cpu.append((time.thread_time_ns() - start_cpu) / 1000.0)
            wall.append((time.perf_counter_ns() - start) / 1000.0)
    return wall, cpu


def summarise(samples: dict, profiles: list[str]) -> dict:
    """p50/p99 of wall and CPU time per block; ratios and targets per profile and backend."""
    out = {}
    for profile in profiles:
        out[profile] = {}
        for backend in BACKENDS:
            rows = {}
            for variant in VARIANTS:
                wall, cpu = samples[(profile, variant, backend)]
                rows[variant] = {"p50_us": float(np.percentile(wall, 50)),
                                 "p99_us": float(np.percentile(wall, 99)),
                                 "cpu_p50_us": float(np.percentile(cpu, 50)),
                                 "cpu_p99_us": float(np.percentile(cpu, 99)),
                                 "calls": len(wall)}
            for variant, row in rows.items():
                for q in ("p50", "p99", "cpu_p50"):
                    row[f"{q}_vs_sac"] = row[f"{q}_us"] / rows["sac"][f"{q}_us"]
                    row[f"dpmd_over_this_{q}"] = rows["dpmd"][f"{q}_us"] / row[f"{q}_us"]
                    row[f"dpmd_bo32_over_this_{q}"] = \
                        rows["dpmd_bo32"][f"{q}_us"] / row[f"{q}_us"]
                if variant in ("fpmd_r", "fpmd_m"):
                    for q in ("p50", "cpu_p50"):
                        row[f"targets_{q}"] = {
                            "vs_sac <= 1.2": row[f"{q}_vs_sac"] <= TARGETS["vs_sac_max"],
                            "dpmd / this >= 8":
                                row[f"dpmd_over_this_{q}"] >= TARGETS["vs_dpmd_min"],
                            "dpmd_bo32 / this >= 150":
                                row[f"dpmd_bo32_over_this_{q}"] >= TARGETS["vs_dpmd_bo32_min"],
                        }
            out[profile][backend] = rows
    return out


def plot(summary: dict, profiles: list[str], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(profiles), figsize=(6 * len(profiles), 4.2), squeeze=False)
    width = 0.38
    for ax, profile in zip(axes[0], profiles, strict=True):
        x = np.arange(len(VARIANTS))
        for i, backend in enumerate(BACKENDS):
            rows = summary[profile][backend]
            p50 = [rows[v]["p50_us"] for v in VARIANTS]
            p99 = [rows[v]["p99_us"] for v in VARIANTS]
            pos = x + (i - 0.5) * width
            ax.bar(pos, p50, width, label=f"{backend} p50")
            ax.scatter(pos, p99, marker="_", s=200, color="k",
                       label="p99" if i == 0 else None, zorder=3)
            for px, value in zip(pos, p50, strict=True):
                ax.text(px, value * 1.08, f"{value:.0f}", ha="center", fontsize=7)
        ax.set_yscale("log")
        ax.set_xticks(x, [LABELS[v].replace(" (", "\n(").replace(" best", "\nbest")
                          for v in VARIANTS], fontsize=8)
        ax.set_ylabel("latency per action, µs (batch 1, one thread)")
        ax.set_title(f"profile {profile}")
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def print_table(summary: dict, profiles: list[str]) -> None:
    def mark(targets: dict) -> str:
        return " ".join("met" if ok else "NOT met" for ok in targets.values())

    for profile in profiles:
        for backend in BACKENDS:
            print(f"\nprofile {profile}, {backend}")
            print(f"{'variant':22} {'p50 us':>9} {'p99 us':>9} {'cpu p50':>9} {'vs SAC':>7} "
                  f"{'DPMD/x':>7} {'bo32/x':>8}  targets (<=1.2x SAC, >=8x, >=150x)")
            for variant, row in summary[profile][backend].items():
                print(f"{LABELS[variant]:22} {row['p50_us']:9.1f} {row['p99_us']:9.1f} "
                      f"{row['cpu_p50_us']:9.1f} {row['p50_vs_sac']:7.2f} "
                      f"{row['dpmd_over_this_p50']:7.2f} {row['dpmd_bo32_over_this_p50']:8.1f}"
                      + (f"  {mark(row['targets_p50'])}" if "targets_p50" in row else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="Hopper-v5")
    parser.add_argument("--profiles", nargs="+", default=["paper", "cpu"],
                        choices=["paper", "cpu"])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per block and round")
    parser.add_argument("--slow-calls", type=int, default=20,
                        help="timed calls per round of the best-of-32 blocks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/inference.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    env = make_env(args.task)
    spec = task_spec(env, args.task)
    obs, _ = env.reset(seed=args.seed)
    obs = np.asarray(obs, dtype=np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    calls = {}
    for profile in args.profiles:
        for (variant, backend), call in build_calls(profile, args.task, spec, obs, tmp).items():
            calls[(profile, variant, backend)] = call
    samples: dict = {key: ([], []) for key in calls}
    order = list(calls)
    shuffle = random.Random(args.seed)
    load_before = os.getloadavg()
    start = time.perf_counter()
    for _ in range(args.rounds):
        shuffle.shuffle(order)
        for key in order:
            count = args.slow_calls if key[1] in SLOW else args.calls
            wall, cpu = time_block(calls[key], count, warmup=max(2, count // 10))
            samples[key][0].extend(wall)
            samples[key][1].extend(cpu)
    elapsed = time.perf_counter() - start
    summary = summarise(samples, args.profiles)
    configs = {}
    for profile in args.profiles:
        cfg = make_config(profile, overrides={"task.id": args.task})
        configs[profile] = {"hidden": cfg.agent.hidden, "layers": cfg.agent.layers,
                            "diffusion_steps": cfg.agent.diffusion_steps,
                            "noise_scale_init": cfg.agent.noise_scale_init}
    import onnxruntime

    result = {
        "command": command_line(),
        "task": args.task, "batch": 1, "threads": 1, "rounds": args.rounds,
        "calls_per_round": args.calls, "slow_calls_per_round": args.slow_calls,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__},
        "measure_seconds": round(elapsed, 1),
        "best_of_n": {"particles": BEST_OF_N_PARTICLES, "steps": BEST_OF_N_STEPS,
                      "policy_rows": BEST_OF_N_PARTICLES * BEST_OF_N_STEPS,
                      "note": "20 batched DDPM calls of 32 rows (640 policy evaluations) plus "
                              "one double-Q call of 32 rows"},
        "targets": TARGETS, "configs": configs, "results": summary,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(summary, args.profiles, out.with_suffix(".png"))
    print_table(summary, args.profiles)
    print(f"\n{elapsed:.0f} s of measurement; written: {out}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
