"""Issue 7 diagnostic: is there still a choice for best-of-N to make? Particle spread per state.

    python -m bench.bench_particle_spread RUN_DIR [RUN_DIR ...] [--out FILE.json]

Mirror descent improves the policy only through its own samples: best-of-N keeps the best of
N candidates per state, and the weighted loss fits those. Once the N candidates of a state are
(nearly) the same action, there is nothing left to choose and the policy stops improving
wherever it stands. For every checkpoint of each run dir (``checkpoints/step_*.pt`` and
``final.pt``), on the last 3000 replay states (every 10th): N candidates per state from the
online policy exactly as the trainer samples them (x0 = noise_scale_init * eps, the training
steps, clipped, no exploration noise), and reports

- ``particle_std``: the std of the N candidates within a state (mean over states and dims);
- ``q_spread``: max - min of min(Q1, Q2) over the N candidates (what best-of-N can gain);
- ``q_gain_uniform``: how much higher the best of 256 uniform random actions scores than the
  best candidate (what the critic says a wider search would gain).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.bench_straightness import checkpoints, load_agent
from bench.common import command_line

ALGOS = ("fpmd_r", "fpmd_m", "dpmd")
UNIFORM = 256


@torch.no_grad()
def spread(path: Path, seed: int) -> dict:
    agent, cfg, env_steps, replay_obs = load_agent(path, torch.device("cpu"), ALGOS)
    generator = torch.Generator().manual_seed(seed)
    count = min(len(replay_obs), env_steps)
    obs = torch.as_tensor(replay_obs[max(0, count - 3000):count][::10], dtype=torch.float32)
    features = agent.features(obs)
    states, particles, act_dim = len(features), cfg.agent.particles, agent.act_dim
    rows = features.repeat_interleave(particles, dim=0)
    x0 = cfg.agent.noise_scale_init * torch.randn(len(rows), act_dim, generator=generator)
    torch.manual_seed(seed)  # DPMD's sampler draws its per-step noise from the global generator
    candidates = agent.policy.generate(rows, x0, agent.steps,
                                       noise_scale=cfg.agent.noise_scale_init).clamp(-1, 1)
    q = agent.critic.online.min_q(rows, candidates).view(states, particles)
    uniform = torch.rand(states * UNIFORM, act_dim, generator=generator) * 2 - 1
    q_uniform = agent.critic.online.min_q(features.repeat_interleave(UNIFORM, dim=0),
                                          uniform).view(states, UNIFORM)
    candidates = candidates.view(states, particles, act_dim)
    return {"checkpoint": str(path), "algo": cfg.agent.algo, "env_steps": env_steps,
            "particles": particles, "alpha": float(agent.alpha),
            "particle_std": float(candidates.std(dim=1).mean()),
            "q_spread": float((q.max(1).values - q.min(1).values).mean()),
            "q_gain_uniform": float((q_uniform.max(1).values - q.max(1).values).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for run_dir in args.run_dirs:
        paths = checkpoints(run_dir)  # final.pt only where no step_*.pt has its step count
        if not paths:
            parser.error(f"{run_dir}: no checkpoints/step_*.pt or final.pt")
        for path in paths.values():
            row = spread(path, args.seed)
            rows.append(row)
            print(f"{run_dir} {row['algo']} {row['env_steps']:>6} steps: particle std "
                  f"{row['particle_std']:.3f}, Q spread {row['q_spread']:.3f}, Q gain of uniform "
                  f"search {row['q_gain_uniform']:.2f}, alpha {row['alpha']:.2f}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": command_line(), "runs": rows}, indent=2))
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
