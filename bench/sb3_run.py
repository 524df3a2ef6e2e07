"""One stable-baselines3 SAC run (its defaults), evaluated with fpmd_core's protocol: the
`sb3_sac` run kind of bench/bench_learning.py and bench/bench_paired_sb3.py.

    python -m bench.sb3_run --task Hopper-v5 --seed 0 --total-steps 25000 --eval-interval 5000 \
        --eval-episodes 5 --log-interval 500 --out-dir bench/results/x/Hopper-v5/sb3_sac/seed_0

The env is fpmd_core's (`make_env`: float32 observations, actions in [-1, 1], which SB3's tanh
policy covers exactly); its first reset takes the run's seed, as our trainer's training env
does. Every `--eval-interval` env steps (after that step's gradient update) and at the end, the
deploy action (SB3's deterministic action: the tanh of the Gaussian mean) runs one episode per
evaluation seed of fpmd_core (`evaluation_seeds`) through fpmd_core's `run_episodes`. eval.csv and
train.csv have our trainer's columns (fpmd_core.logger), best-of-N left empty, so the
benchmark's aggregation reads them unchanged; train.csv holds alpha (SB3's entropy
coefficient), the latest losses, the training episodes' return and the rates, every
`--log-interval` env steps. sb3_config.json records SB3's version and hyperparameters.

A run is not resumable: SB3's save/load restores the model and its replay buffer but not the
RNG states, the env's mid-episode simulator state or the episode statistics, so a resumed run
would not repeat an uninterrupted one; the benchmark restarts an unfinished one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fpmd_core.logger import RunLogger
from fpmd_core.tasks import make_env
from fpmd_core.trainer import evaluation_seeds, run_episodes

RECENT_EPISODES = 20  # training episodes averaged in train/episode_return, as our trainer does


class DeployPolicy:
    """An SB3 model behind the agent interface `run_episodes` calls: its deterministic action."""

    def __init__(self, model):
        self.model = model

    def act(self, obs: np.ndarray, mode: str) -> np.ndarray:
        actions, _ = self.model.predict(obs, deterministic=True)
        return actions


def make_callback(logger: RunLogger, eval_envs: list, seeds: list[int], eval_interval: int,
                  log_interval: int):
    """The SB3 callback that evaluates and logs at our intervals. It acts at the start of each
    rollout (one env step with SB3's defaults), that is after the previous step's gradient
    update, where our trainer evaluates too; `finish()` covers the last step."""
    from stable_baselines3.common.callbacks import BaseCallback

    class ProtocolCallback(BaseCallback):
        def __init__(self):
            super().__init__()
            self.seen = 0
            self.last_eval_steps = None
            self.window = None

        def _on_training_start(self) -> None:
            self.start = time.perf_counter()
            self.window = (self.start, 0, 0)

        def _on_rollout_start(self) -> None:
            self.boundary()

        def _on_step(self) -> bool:
            return True

        def boundary(self) -> None:
            before, after = self.seen, self.num_timesteps
            self.seen = after
            if log_interval > 0 and after // log_interval > before // log_interval:
                self.log_training(after)
            if eval_interval > 0 and after // eval_interval > before // eval_interval:
                self.evaluate(after)

        def finish(self) -> None:
            self.boundary()
            if self.last_eval_steps != self.num_timesteps:
                self.evaluate(self.num_timesteps)

        def log_training(self, steps: int) -> None:
            model = self.model
            now = time.perf_counter()
            started, updates0, steps0 = self.window
            elapsed = max(now - started, 1e-9)
            values = {"updates": model._n_updates,
                      "alpha": float(np.exp(model.log_ent_coef.detach().cpu().item())),
                      "perf/updates_per_s": (model._n_updates - updates0) / elapsed,
                      "perf/env_steps_per_s": (steps - steps0) / elapsed}
            # SB3 keeps its latest recorded values until a dump, which learn() never does here
            # (log_interval=None).
            recorded = model.logger.name_to_value
            for ours, theirs in (("loss/critic", "train/critic_loss"),
                                 ("loss/actor", "train/actor_loss")):
                if theirs in recorded:
                    values[ours] = float(recorded[theirs])
            episodes = list(model.ep_info_buffer)[-RECENT_EPISODES:]
            if episodes:
                values["train/episode_return"] = float(np.mean([e["r"] for e in episodes]))
            logger.scalars(values, steps)
            self.window = (now, model._n_updates, steps)

        def evaluate(self, steps: int) -> None:
            episodes = run_episodes(DeployPolicy(self.model), eval_envs, "deploy", seeds)
            returns, lengths = episodes.returns, episodes.lengths
            logger.evaluation({
                "env_steps": steps, "updates": self.model._n_updates,
                "wall_time_s": round(time.perf_counter() - self.start, 2),
                "return_deploy": float(returns.mean()), "length_deploy": float(lengths.mean()),
                # The spread over the episodes, as our trainer logs it (population std).
                "return_deploy_std": float(returns.std()),
                "return_deploy_min": float(returns.min()),
                "return_deploy_max": float(returns.max())})
            self.last_eval_steps = steps

    return ProtocolCallback()


def train(task: str, seed: int, total_steps: int, eval_interval: int, eval_episodes: int,
          log_interval: int, out_dir: Path, torch_threads: int = 1) -> Path:
    """Train SB3 SAC with its defaults on `task` for `total_steps` env steps; returns eval.csv."""
    import stable_baselines3
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import configure

    if torch_threads:
        torch.set_num_threads(torch_threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = SAC("MlpPolicy", make_env(task), seed=seed, verbose=0)
    model.set_logger(configure(None, []))
    (out_dir / "sb3_config.json").write_text(json.dumps({
        "stable_baselines3": stable_baselines3.__version__, "algorithm": "SAC",
        "policy": "MlpPolicy", "seed": seed, "device": str(model.device),
        "hyperparameters": {k: repr(getattr(model, k)) for k in (
            "learning_rate", "buffer_size", "learning_starts", "batch_size", "tau", "gamma",
            "train_freq", "gradient_steps", "ent_coef", "target_entropy",
            "target_update_interval", "policy_kwargs")},
        "net_arch": repr(model.policy.net_arch)}, indent=2))
    logger = RunLogger(out_dir, tensorboard=False)
    eval_envs = [make_env(task) for _ in range(eval_episodes)]
    callback = make_callback(logger, eval_envs, evaluation_seeds(seed, eval_episodes),
                             eval_interval, log_interval)
    try:
        model.learn(total_timesteps=total_steps, callback=callback, log_interval=None)
        callback.finish()
    finally:
        logger.close()
    return logger.eval_csv


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="a Gymnasium MuJoCo id, e.g. Hopper-v5")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--total-steps", type=int, required=True)
    parser.add_argument("--eval-interval", type=int, required=True,
                        help="env steps between evaluations (our trainer.eval_interval)")
    parser.add_argument("--eval-episodes", type=int, required=True,
                        help="episodes per evaluation (our trainer.eval_episodes)")
    parser.add_argument("--log-interval", type=int, required=True,
                        help="env steps between train.csv rows (our trainer.log_interval)")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    for name in ("total_steps", "eval_episodes", "log_interval"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected an integer >= 1, "
                         f"got {getattr(args, name)}")
    if args.eval_interval < 0:
        parser.error(f"--eval-interval: expected an integer >= 0, got {args.eval_interval}")
    eval_csv = train(args.task, args.seed, args.total_steps, args.eval_interval,
                     args.eval_episodes, args.log_interval, args.out_dir, args.torch_threads)
    print(f"evaluations: {eval_csv}")


if __name__ == "__main__":
    main()
