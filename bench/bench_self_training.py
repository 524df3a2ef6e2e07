"""Issue 16 diagnostic: does a flow policy drift when it is refitted on its own samples alone?

    python -m bench.bench_self_training CHECKPOINT [--noise-scales 0.5 1.0] [--updates 3000]

FPMD's actor fits the policy's own samples, weighted by exp(Q / alpha). This takes the critic
and the exploration noise out of that loop: from a trainer checkpoint, for each noise scale,
`--updates` actor updates on samples of the online policy from x0 = scale * eps (one candidate,
the training steps, clipped to [-1, 1], no exploration noise, every weight 1), the EMA policy
following by Polyak averaging as in training. A sampler that matches what the policy was fitted
to leaves the actions where they are; one that does not moves them a little at every refit, and
the loop compounds it. Reported every `--updates / 5` updates on 512 fixed replay states: the
deploy action's mean |a| (EMA policy, x0 = 0, NFE = 1) and the spread of two samples of a state.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.bench_straightness import load_agent
from bench.common import require_checkpoints, write_results
from fpmd_core.agents.critic import polyak
from fpmd_core.agents.sampling import sample_actions

ALGOS = ("fpmd_r", "fpmd_m")
PROBE_STATES = 512


def report_interval(updates: int) -> int:
    return max(updates // 5, 1)


def refit_on_own_samples(path: Path, noise_scale: float, updates: int, seed: int) -> list[dict]:
    agent, cfg, env_steps, replay_obs = load_agent(path, torch.device("cpu"), ALGOS)
    agent.train()
    torch.manual_seed(seed)
    features = agent.features(torch.as_tensor(replay_obs[:env_steps], dtype=torch.float32))
    probe = features[torch.randint(0, len(features), (PROBE_STATES,))]

    def sample(policy, obs):
        return sample_actions(policy, None, obs, agent.steps, 1, noise_scale)

    @torch.no_grad()
    def measure(update: int) -> dict:
        deploy = agent.deploy_policy()(probe)
        spread = (sample(agent.policy, probe) - sample(agent.policy, probe)).abs().mean()
        return {"updates": update, "deploy_abs_action": float(deploy.abs().mean()),
                "sample_spread": float(spread)}

    rows = [measure(0)]
    for update in range(1, updates + 1):
        obs = features[torch.randint(0, len(features), (cfg.agent.batch_size,))]
        actions = sample(agent.policy, obs)
        agent.update_actor(obs, actions, torch.ones(len(obs)))
        polyak(agent.ema_policy, agent.policy, cfg.agent.tau)
        if update % report_interval(updates) == 0:
            rows.append(measure(update))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--noise-scales", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.updates < 1:
        parser.error(f"--updates: expected a positive number, got {args.updates}")
    if any(scale <= 0 for scale in args.noise_scales):
        parser.error(f"--noise-scales: expected positive numbers, got {args.noise_scales}")
    require_checkpoints(parser, [args.checkpoint])
    results = []
    for scale in args.noise_scales:
        rows = refit_on_own_samples(args.checkpoint, scale, args.updates, args.seed)
        results.append({"checkpoint": str(args.checkpoint), "noise_scale": scale, "rows": rows})
        print(f"noise scale {scale}: deploy |a| "
              + " ".join(f"{r['deploy_abs_action']:.2f}" for r in rows)
              + ", sample spread " + " ".join(f"{r['sample_spread']:.2f}" for r in rows)
              + f" (every {report_interval(args.updates)} updates)", flush=True)
    if args.out:
        write_results(args.out, results)


if __name__ == "__main__":
    main()
