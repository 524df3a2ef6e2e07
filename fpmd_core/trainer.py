"""The training loop: collect, update, evaluate, log, checkpoint, export.

    for each vector step:
        a ~ uniform during warm-up, else best-of-N from the EMA policy + exploration noise
        step all envs; store (s, a, r, s', terminated) (s' = final obs at episode ends)
        updates_per_step gradient steps (critic; actor, Polyak every 2; alpha every 250,
        or every step on its `budget` schedule)
        evaluate in deploy mode (NFE = 1) and best-of-N; checkpoint; log
    export the one-step policy to ONNX; plot the learning curve

Works on any Gymnasium vector env with SAME_STEP autoreset: in-process envs, or the ROS
vector env of fpmd_ros (whose sims cannot be snapshotted, so its resume restarts episodes).
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .agents import NonFiniteLossError, make_agent
from .checkpoint import CheckpointError, load_agent_state, load_checkpoint, save_checkpoint
from .config import (
    RESOLVED_CONFIG_NAME,
    Config,
    ConfigError,
    config_from_dict,
    gradient_steps_of_run,
    save_config,
)
from .export import export_onnx
from .files import remove_stale_temp_files
from .logger import ProgressLine, RunLogger, goal_distance_columns, plot_learning_curve
from .memory import retain_freed_memory
from .replay import ReplayBuffer
from .robots.terms import GOAL_DISTANCE_INFO
from .tasks import (
    env_from_config,
    get_env_state,
    make_vector_env,
    pixel_options,
    set_env_state,
    task_spec,
)


class TrainingDiverged(RuntimeError):
    """Training stopped on a NaN/Inf loss; the last good checkpoint was kept."""


EXIT_DIVERGED = 4
"""The exit code of a training process (fpmd-train, the trainer node) that diverged."""


@dataclass
class TrainResult:
    output_dir: Path
    env_steps: int
    updates: int
    final_return_deploy: float | None
    final_return_best_of_n: float | None
    checkpoint: Path | None
    policy: Path | None
    curve: Path | None
    final_goal_distance_deploy: float | None = None
    """Goal tasks: the last evaluation's mean final goal distance (m), deploy mode."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


class Trainer:
    def __init__(self, cfg: Config, envs=None, resume: str | Path | None = None,
                 on_progress=None):
        """`envs`: a SAME_STEP-autoreset vector env (default: in-process `task.num_envs`
        copies). `on_progress(trainer)` is called after every vector step (ROS diagnostics).
        Evaluation always runs in-process, on `trainer.eval_episodes` envs of its own."""
        self.cfg, tc = cfg, cfg.trainer
        if tc.torch_threads:
            torch.set_num_threads(tc.torch_threads)
        retain_freed_memory()  # each update reallocates the same large tensors
        seed_everything(tc.seed, tc.deterministic)
        self.device = resolve_device(tc.device)
        self.output_dir = Path(tc.output_dir)
        self.eval_envs = [env_from_config(cfg.task) for _ in range(tc.eval_episodes)]
        self.spec = task_spec(self.eval_envs[0], cfg.task.id)
        self.envs = envs or make_vector_env(cfg.task.id, cfg.task.num_envs,
                                            cfg.task.max_episode_steps,
                                            action_repeat=cfg.task.action_repeat,
                                            pixels=pixel_options(cfg.task))
        if self.envs.num_envs != cfg.task.num_envs:
            raise ValueError(f"task.num_envs is {cfg.task.num_envs} but the vector env has "
                             f"{self.envs.num_envs}")
        self.agent = make_agent(self.spec.obs_shape, self.spec.act_dim, cfg.agent, self.device,
                                gradient_steps_of_run(cfg))
        self.replay = ReplayBuffer(tc.replay_size, self.spec.obs_shape, self.spec.act_dim,
                                   tc.seed + 1)
        self.rng = np.random.default_rng(tc.seed + 2)  # warm-up actions
        self.env_steps = 0
        self.episode_returns = np.zeros(cfg.task.num_envs)
        self.recent_returns: list[float] = []
        self.last_eval: dict = {}
        self.last_checkpoint: Path | None = None
        self.on_progress = on_progress
        self.obs = None
        if resume is not None:
            self._restore(resume)

    # --- the loop ----------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, tc = self.cfg, self.cfg.trainer
        # Left by a run killed while writing (checkpoints, policy.onnx); a write removes those
        # of its own folder too, but a run may end before its first checkpoint.
        for folder in (self.output_dir, self.output_dir / "checkpoints"):
            remove_stale_temp_files(folder)
        save_config(cfg, self.output_dir / RESOLVED_CONFIG_NAME)
        logger = RunLogger(self.output_dir, start_env_steps=self.env_steps)
        if self.obs is None:
            self.obs, _ = self.envs.reset(seed=tc.seed)
        progress = _progress_bar(tc, self.env_steps)
        progress_line = None if progress is not None else ProgressLine(
            tc.total_steps, self.env_steps, tc.progress_interval_s,
            warmup_steps=tc.warmup_steps)
        window_start, window_updates, window_steps = time.perf_counter(), 0, 0
        self.start_time = time.perf_counter()
        metrics: dict[str, float] = {}
        try:
            while self.env_steps < tc.total_steps:
                before = self.env_steps
                self._collect()
                if self.env_steps >= tc.warmup_steps:
                    for _ in range(tc.updates_per_step):
                        batch = self.replay.sample(cfg.agent.batch_size, self.device)
                        metrics |= self.agent.update(batch)
                        window_updates += 1
                window_steps += self.env_steps - before
                if _crossed(before, self.env_steps, tc.log_interval):
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    self._log_updates(logger, metrics, window_updates / elapsed,
                                      window_steps / elapsed)
                    window_start, window_updates, window_steps = time.perf_counter(), 0, 0
                if _crossed(before, self.env_steps, tc.eval_interval):
                    self._evaluate(logger)
                if _crossed(before, self.env_steps, tc.checkpoint_interval):
                    self.save(self.output_dir / "checkpoints" / f"step_{self.env_steps}.pt")
                if progress is not None:
                    progress.update(self.env_steps - before)
                    progress.set_postfix(self._postfix(), refresh=False)
                else:
                    progress_line.update(self.env_steps, self.last_eval)
                if self.on_progress is not None:
                    self.on_progress(self)
        except NonFiniteLossError as err:
            logger.close()
            kept = "none written yet"
            if self.last_checkpoint:
                # Resume is exact: the same configuration diverges again at the same step.
                kept = (f"{self.last_checkpoint} (a resume from it with the same configuration "
                        "repeats this divergence: change it first, e.g. a lower agent.critic_lr "
                        "or agent.actor_lr)")
            raise TrainingDiverged(f"{err} at env step {self.env_steps}; last good checkpoint: "
                                   f"{kept}") from err
        finally:
            if progress is not None:
                progress.close()
        if not self.last_eval or self.last_eval["env_steps"] != self.env_steps:
            self._evaluate(logger)
        if progress_line is not None:
            progress_line.close(self.env_steps, self.last_eval)
        checkpoint = self.save(self.output_dir / "checkpoints" / "final.pt")
        policy = export_onnx(self.agent, self.spec, cfg, self.output_dir / "policy.onnx",
                             env_steps=self.env_steps)
        logger.close()
        curve = plot_learning_curve(logger.eval_csv, self.output_dir / "learning_curve.png",
                                    f"{cfg.agent.algo} on {cfg.task.id}")
        return TrainResult(self.output_dir, self.env_steps, self.agent.gradient_steps,
                           self.last_eval.get("return_deploy"),
                           self.last_eval.get("return_best_of_n"), checkpoint, policy, curve,
                           self.last_eval.get(goal_distance_columns("deploy")[0]))

    def _collect(self) -> None:
        """One vector step into the replay buffer."""
        if self.env_steps < self.cfg.trainer.warmup_steps:
            actions = self.rng.uniform(-1.0, 1.0, (self.envs.num_envs, self.spec.act_dim))
        else:
            actions = self.agent.act(self.obs, "explore")
        actions = actions.astype(np.float32)
        next_obs, rewards, terminated, truncated, infos = self.envs.step(actions)
        real_next_obs = np.array(next_obs, copy=True)
        if "_final_obs" in infos:
            for i in np.flatnonzero(infos["_final_obs"]):
                real_next_obs[i] = infos["final_obs"][i]
        self.replay.add(self.obs, actions, rewards, real_next_obs, terminated)
        self.episode_returns += rewards
        for i in np.flatnonzero(np.logical_or(terminated, truncated)):
            self.recent_returns = (self.recent_returns + [float(self.episode_returns[i])])[-20:]
            self.episode_returns[i] = 0.0
        self.obs = next_obs
        self.env_steps += self.envs.num_envs

    # --- evaluation and logging --------------------------------------------------------
    def evaluate(self, mode: str) -> tuple[float, float]:
        """Mean return and length over `trainer.eval_episodes` episodes (seeds fixed per
        episode index)."""
        episodes = self._episodes(mode)
        return float(episodes.returns.mean()), float(episodes.lengths.mean())

    def _episodes(self, mode: str) -> EpisodeResults:
        seeds = evaluation_seeds(self.cfg.trainer.seed, len(self.eval_envs))
        return run_episodes(self.agent, self.eval_envs, mode, seeds)

    def _evaluate(self, logger: RunLogger) -> None:
        tc = self.cfg.trainer
        row = {"env_steps": self.env_steps, "updates": self.agent.gradient_steps,
               "wall_time_s": round(time.perf_counter() - self.start_time, 2)}
        modes = ["deploy"]
        if tc.eval_best_of_n and self.cfg.agent.algo != "sac":
            modes.append("best_of_n")
        for mode in modes:
            episodes = self._episodes(mode)
            returns, lengths = episodes.returns, episodes.lengths
            row[f"return_{mode}"], row[f"length_{mode}"] = float(returns.mean()), \
                float(lengths.mean())
            # The spread over the episodes (population std: defined for one episode too).
            row[f"return_{mode}_std"] = float(returns.std())
            row[f"return_{mode}_min"] = float(returns.min())
            row[f"return_{mode}_max"] = float(returns.max())
            row |= episodes.goal_distance_stats(mode)
        self.last_eval = row
        logger.evaluation(row)

    def _log_updates(self, logger: RunLogger, metrics: dict, updates_per_s: float,
                     env_steps_per_s: float) -> None:
        values = dict(metrics)
        values["updates"] = self.agent.gradient_steps
        values["perf/updates_per_s"] = updates_per_s
        values["perf/env_steps_per_s"] = env_steps_per_s
        if self.recent_returns:
            values["train/episode_return"] = float(np.mean(self.recent_returns))
        if self.replay.size >= 64:
            obs = self.replay.sample(64, self.device)["obs"]
            error = self.agent.one_step_error(obs)
            if error is not None:
                values["one_step_error"] = error
        logger.scalars(values, self.env_steps)

    def _postfix(self) -> dict:
        post = {}
        if self.recent_returns:
            post["train_return"] = f"{np.mean(self.recent_returns):.1f}"
        if self.last_eval:
            post["eval_deploy"] = f"{self.last_eval['return_deploy']:.1f}"
            distance = self.last_eval.get(goal_distance_columns("deploy")[0])
            if distance is not None:
                post["goal_distance_cm"] = f"{100 * distance:.2f}"
        return post

    # --- checkpoints -------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        envs = getattr(self.envs, "envs", None)
        payload = {
            "config": self.cfg.to_dict(),
            "task_spec": dataclasses.asdict(self.spec),
            "agent": self.agent.full_state(),
            "replay": self.replay.state_dict(),
            "counters": {"env_steps": self.env_steps},
            "rng": {"torch": torch.get_rng_state(), "numpy_warmup": self.rng.bit_generator.state,
                    "python": list(random.getstate()[1]),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "envs": {
                "obs": torch.as_tensor(np.asarray(self.obs)),
                "episode_returns": torch.as_tensor(self.episode_returns),
                "states": [get_env_state(env) for env in envs] if envs is not None else None,
            },
        }
        self.last_checkpoint = save_checkpoint(payload, path)
        return self.last_checkpoint

    def _restore(self, path: str | Path) -> None:
        payload = load_checkpoint(path)
        saved = config_from_dict(payload["config"])
        for field in ("task.id", "task.num_envs", "task.pixels", "task.image_size",
                      "task.frame_stack", "task.action_repeat", "agent.algo", "agent.hidden",
                      "agent.layers", "agent.feature_dim", "trainer.replay_size"):
            section, name = field.split(".")
            have, want = getattr(getattr(saved, section), name), \
                getattr(getattr(self.cfg, section), name)
            if have != want:
                raise CheckpointError(f"checkpoint {path}: {field} is {have!r}, "
                                      f"the run is configured with {want!r}")
        load_agent_state(self.agent, payload, path)
        try:
            self.replay.load_state_dict(payload["replay"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint {path}: its replay buffer does not fit the "
                                  f"configured one: {' '.join(str(err).split())}") from None
        self.env_steps = int(payload["counters"]["env_steps"])
        rng = payload["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.rng.bit_generator.state = rng["numpy_warmup"]
        random.setstate((3, tuple(rng["python"]), None))
        envs = payload["envs"]
        states = envs["states"]
        if states is not None and hasattr(self.envs, "envs"):
            # Reset first: gymnasium's order enforcement refuses step() on a never-reset env;
            # the saved states then overwrite everything the reset changed.
            self.envs.reset(seed=self.cfg.trainer.seed)
            for env, state in zip(self.envs.envs, states, strict=True):
                set_env_state(env, state)
            self.obs = envs["obs"].cpu().numpy()
            self.episode_returns = envs["episode_returns"].cpu().numpy()
        # else: remote envs start new episodes (self.obs stays None -> reset in run()).
        self.last_checkpoint = Path(path)


def evaluation_seeds(seed: int, episodes: int) -> list[int]:
    """The reset seed of each evaluation episode of a run with `trainer.seed` = `seed`: fixed
    per episode index, apart from the training env's seeds (bench/sb3_run.py evaluates its peer
    on the same episodes)."""
    return [10_000 + seed * 1000 + i for i in range(episodes)]




@dataclass
class EpisodeResults:
    """One evaluation episode per env: its return, its length and, in goal tasks, the goal
    distance (m) its last step reported (a step whose simulation diverged reports none, so an
    episode ended by divergence keeps the distance of the step before); `final_goal_distances`
    is None when no step of any episode reported one (a task without a goal)."""

    returns: np.ndarray
    lengths: np.ndarray
    final_goal_distances: np.ndarray | None = None

    def goal_distance_stats(self, mode: str) -> dict[str, float]:
        """`goal_distance_columns(mode)` and their values; empty without goal distances."""
        d = self.final_goal_distances
        if d is None:
            return {}
        values = (d.mean(), d.std(), np.median(d), d.max())
        return {name: float(v) for name, v in zip(goal_distance_columns(mode), values,
                                                   strict=True)}


def evaluate_episodes(agent, envs: list, mode: str, seeds: list[int]) -> tuple[float, float]:
    """Mean return and length of one episode per env (`run_episodes`)."""
    episodes = run_episodes(agent, envs, mode, seeds)
    return float(episodes.returns.mean()), float(episodes.lengths.mean())


def run_episodes(agent, envs: list, mode: str, seeds: list[int]) -> EpisodeResults:
    """One episode per env, the episodes side by side: one batched policy call per step rather
    than one per episode and step, since a small network's call costs about the same at batch 1
    as at batch 10 (on a GPU, kernel launches set its time)."""
    obs = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)])
    returns, lengths = np.zeros(len(envs)), np.zeros(len(envs), dtype=int)
    # NaN until an episode's step reports a distance: an episode whose every step lacked it
    # (a simulation that diverged at once) makes the statistics NaN rather than silently
    # leaving that episode out.
    goal_distances = np.full(len(envs), np.nan)
    reported = False
    running = np.ones(len(envs), dtype=bool)
    while running.any():
        indices = np.flatnonzero(running)
        actions = agent.act(obs[indices], mode)
        for index, action in zip(indices, actions, strict=True):
            obs[index], reward, terminated, truncated, info = envs[index].step(action)
            returns[index] += float(reward)
            lengths[index] += 1
            running[index] = not (terminated or truncated)
            if GOAL_DISTANCE_INFO in info:
                goal_distances[index] = float(info[GOAL_DISTANCE_INFO])
                reported = True
    return EpisodeResults(returns, lengths, goal_distances if reported else None)


def _crossed(before: int, after: int, interval: int) -> bool:
    return interval > 0 and after // interval > before // interval


def _progress_bar(tc, initial: int):
    """A tqdm bar on a terminal; None (progress lines instead) with trainer.progress false or
    when stderr is not a terminal (ros2 launch, a log file): there a bar shows nothing until
    the end and then one enormous line."""
    if not tc.progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=tc.total_steps, initial=initial, unit="step", desc="env steps",
                dynamic_ncols=True)
