"""Issue 3 benchmark: update throughput and deploy latency of the four algorithms, one run.

    python -m bench.bench_core --out bench/results/core.json

Measures, interleaved so machine noise hits all alike: gradient updates/s (random replay
batch, one thread by default) of SAC, DPMD, FPMD-R (paper K=20, N=32 and the CPU profile) and
FPMD-M; and deploy-mode latency through onnxruntime at batch 1 (one intra-op thread) of each
exported policy. Reports ratios against SAC measured in the same run.

GPU profile: updates run on CUDA when present (``--device auto``, the default; deploy latency
stays on the CPU, as deployed), and ``--profile paper`` times the four algorithms with the
paper's settings:

    python -m bench.bench_core --profile paper --out bench/results/core_gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import command_line
from bench.machine import machine
from fpmd_core.agents import make_agent
from fpmd_core.config import gradient_steps_of_run, make_config
from fpmd_core.export import export_onnx
from fpmd_core.runtime import OnnxPolicy
from fpmd_core.tasks import make_env, task_spec
from fpmd_core.trainer import resolve_device

VARIANTS = {
    "sac": ("cpu", {"agent.algo": "sac"}),
    "dpmd": ("cpu", {"agent.algo": "dpmd"}),
    "fpmd_r_paper": ("paper", {"agent.algo": "fpmd_r"}),
    "fpmd_r_cpu": ("cpu", {"agent.algo": "fpmd_r"}),
    "fpmd_m": ("cpu", {"agent.algo": "fpmd_m"}),
}


def variants(profile: str | None) -> dict[str, tuple[str, dict]]:
    """The default CPU set, or the four algorithms all on one profile."""
    if profile is None:
        return VARIANTS
    return {algo: (profile, {"agent.algo": algo}) for algo in ("sac", "dpmd", "fpmd_r", "fpmd_m")}


def batch(spec, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    data = {"obs": torch.randn(size, spec.obs_dim), "next_obs": torch.randn(size, spec.obs_dim),
            "actions": torch.rand(size, spec.act_dim) * 2 - 1, "rewards": torch.randn(size),
            "terminated": torch.zeros(size)}
    return {key: value.to(device) for key, value in data.items()}


def updates_per_second(agent, data, seconds: float) -> float:
    agent.update(data)
    synchronize(agent.device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        agent.update(data)
        count += 1
    synchronize(agent.device)
    return count / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_us(policy: OnnxPolicy, obs: np.ndarray, calls: int) -> dict[str, float]:
    for _ in range(50):
        policy(obs)
    times = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        policy(obs)
        times.append((time.perf_counter_ns() - start) / 1000)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="Hopper-v5")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per variant per round")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", default=None, choices=["paper", "cpu"],
                        help="all four algorithms on this profile (default: the CPU set above)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where updates run (auto: CUDA when present)")
    parser.add_argument("--out", default="bench/results/core.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    env = make_env(args.task)
    spec = task_spec(env, args.task)
    chosen = variants(args.profile)
    agents, policies, configs = {}, {}, {}
    tmp = Path(tempfile.mkdtemp())
    for name, (profile, overrides) in chosen.items():
        cfg = make_config(profile, overrides={**overrides, "task.id": args.task})
        configs[name] = {k: getattr(cfg.agent, k) for k in
                         ("hidden", "layers", "batch_size", "particles", "flow_steps")}
        agents[name] = make_agent(spec.obs_dim, spec.act_dim, cfg.agent, device,
                                  gradient_steps_of_run(cfg))
        policies[name] = OnnxPolicy(export_onnx(agents[name], spec, cfg, tmp / f"{name}.onnx"))
    rates = {name: [] for name in chosen}
    latencies = {name: [] for name in chosen}
    obs = np.random.default_rng(0).standard_normal(spec.obs_dim).astype(np.float32)
    # Latency rounds are kept apart from update rounds: right after seconds of heavy updates,
    # a batch-1 call measures the cache and clock state the updates left behind.
    for _ in range(args.rounds):
        for name, agent in agents.items():
            data = batch(spec, agent.cfg.batch_size, device)
            rates[name].append(updates_per_second(agent, data, args.seconds))
    for _ in range(args.rounds):
        for name in chosen:
            latencies[name].append(latency_us(policies[name], obs, args.calls))
    result = {"command": command_line(), "task": args.task, "threads": args.threads,
              "machine": machine(),
              "device": str(device), "configs": configs, "variants": {}}
    sac_rate = statistics.median(rates["sac"])
    sac_p50 = statistics.median(lat["p50"] for lat in latencies["sac"])
    for name in chosen:
        rate = statistics.median(rates[name])
        p50 = statistics.median(lat["p50"] for lat in latencies[name])
        p99 = statistics.median(lat["p99"] for lat in latencies[name])
        result["variants"][name] = {
            "updates_per_s": rate, "updates_ratio_vs_sac": rate / sac_rate,
            "deploy_latency_us_p50": p50, "deploy_latency_us_p99": p99,
            "latency_ratio_vs_sac": p50 / sac_p50, "nfe": policies[name].metadata["nfe"]}
    dpmd = result["variants"]["dpmd"]["deploy_latency_us_p50"]
    # Against DPMD on the same profile only (same network sizes).
    for name in (n for n, (profile, _) in chosen.items()
                 if n.startswith("fpmd") and profile == chosen["dpmd"][0]):
        result["variants"][name]["speedup_vs_dpmd"] = dpmd / \
            result["variants"][name]["deploy_latency_us_p50"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'variant':14} {'updates/s':>10} {'vs SAC':>7} {'p50 us':>8} {'p99 us':>8} "
          f"{'vs SAC':>7} NFE")
    for name, v in result["variants"].items():
        print(f"{name:14} {v['updates_per_s']:10.1f} {v['updates_ratio_vs_sac']:7.2f} "
              f"{v['deploy_latency_us_p50']:8.1f} {v['deploy_latency_us_p99']:8.1f} "
              f"{v['latency_ratio_vs_sac']:7.2f} {v['nfe']}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
