"""Issue 16 diagnostic: what FPMD's mirror-descent weights compare, states or actions?

    python -m bench.bench_weights CHECKPOINT [CHECKPOINT ...] [--states 256] [--actions 16]

The weights are w = exp(clip((Q - mu) / sigma, -c, c) / alpha) with (mu, sigma) the running mean
and std of Q over the batches, that is over states (`MirrorDescentAgent.weights_and_q_statistics`);
with `agent.weight_form: advantage`, z = (Q - Q(s, a_det)) / sigma_A instead, against each state's
own baseline.
From a trainer checkpoint, on `--states` replay states with `--actions` training actions each
(the online policy's best-of-N samples with exploration noise, as in an update), this reports:

- z's spread across states (the std over states of a state's mean z) and across the actions of
  one state (the mean over states of the std over its actions);
- the effective sample fraction (sum w)^2 / (n sum w^2) (`effective_sample_fraction`) of a batch
  with one action per state, as in training, and among the actions of one state.

A fraction near 1 among a state's actions says the weights barely tell its actions apart; a low
one over the batch says a few states carry the actor's step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.bench_straightness import load_agent
from bench.common import require_checkpoints, write_results
from fpmd_core.agents.fpmd import effective_sample_fraction, exp_weights

ALGOS = ("fpmd_r", "fpmd_m")


@torch.no_grad()
def weight_spread(path: Path, states: int, actions: int, seed: int) -> dict:
    agent, cfg, env_steps, replay_obs = load_agent(path, torch.device("cpu"), ALGOS)
    torch.manual_seed(seed)
    features = agent.features(torch.as_tensor(replay_obs[:env_steps], dtype=torch.float32))
    batch = features[torch.randint(0, len(features), (states,))]
    rows = batch.repeat_interleave(actions, dim=0)
    q = agent.critic.online.min_q(rows, agent.training_samples(rows))
    z = agent.mirror_descent_scores(rows, q).view(states, actions)
    weights = exp_weights(z, agent.alpha, cfg.agent.weight_clip)
    return {
        "checkpoint": str(path), "algo": cfg.agent.algo, "weight_form": cfg.agent.weight_form,
        "env_steps": env_steps,
        "alpha": agent.alpha.item(), "q_mean": agent.q_mean.item(), "q_std": agent.q_std.item(),
        "z_std_across_states": z.mean(dim=1).std().item(),
        "z_std_across_actions_of_a_state": z.std(dim=1).mean().item(),
        "ess_batch_one_action_per_state": sum(
            effective_sample_fraction(weights[:, j]) for j in range(actions)) / actions,
        "ess_among_actions_of_a_state": sum(
            effective_sample_fraction(weights[i]) for i in range(states)) / states,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--states", type=int, default=256)
    parser.add_argument("--actions", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    for name in ("states", "actions"):
        if getattr(args, name) < 2:
            parser.error(f"--{name}: expected at least 2, got {getattr(args, name)}")
    require_checkpoints(parser, args.checkpoints)
    results = []
    for path in args.checkpoints:
        results.append(row := weight_spread(path, args.states, args.actions, args.seed))
        print(f"{path}: alpha {row['alpha']:.2f}; z std across states "
              f"{row['z_std_across_states']:.3f}, across a state's actions "
              f"{row['z_std_across_actions_of_a_state']:.3f}; effective sample fraction of a "
              f"batch {row['ess_batch_one_action_per_state']:.3f}, among a state's actions "
              f"{row['ess_among_actions_of_a_state']:.3f}", flush=True)
    if args.out:
        write_results(args.out, results)


if __name__ == "__main__":
    main()
