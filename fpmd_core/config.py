"""Typed configuration: every field has a type, a default and a docstring-comment.

Defaults are the paper's settings (docs/algorithm.md). `PROFILES` holds named overrides, e.g. the
CPU profile that fits a 2-core machine. Config files (YAML or JSON) and command-line overrides
are validated strictly: an unknown field or a wrong type is an error that names the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ALGORITHMS = ("fpmd_r", "fpmd_m", "dpmd", "sac")
WEIGHT_FORMS = ("normalized", "released", "advantage")
ACTOR_SAMPLES = ("best_of_n", "policy")


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the field."""


@dataclass
class TaskConfig:
    id: str = "Hopper-v5"
    """Gymnasium MuJoCo id (v5, v4 accepted), dm_control suite task as `domain-task`, or a robot
    task file (`sim/arm_reach.yaml`; docs/robots.md)."""
    num_envs: int = 5
    """Parallel environments; one vector step collects `num_envs` env steps."""
    max_episode_steps: int = 0
    """Episode time limit in control steps (before action repeat); 0 keeps the task's own."""
    action_repeat: int = 1
    """Control steps per env step, the action held (the paper's visual tasks use 2)."""
    pixels: bool = False
    """Observe stacked camera frames (uint8) instead of the state vector."""
    image_size: int = 84
    """Pixels: square image side in pixels."""
    frame_stack: int = 3
    """Pixels: frames stacked into one observation (oldest first)."""
    camera: str = ""
    """Pixels: camera id or name; "" = the task's default (dm_control: 0, quadruped: 2)."""


@dataclass
class AgentConfig:
    algo: str = "fpmd_r"
    """fpmd_r (rectified flow), fpmd_m (MeanFlow), dpmd (diffusion baseline) or sac."""
    hidden: int = 256
    """Width of every MLP (critics and policies)."""
    layers: int = 3
    """Hidden layers of every MLP."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak rate of the target critics and the EMA policy."""
    batch_size: int = 256
    """Replay minibatch size."""
    critic_lr: float = 3e-4
    """Adam learning rate of both Q networks."""
    critic_steps: int = 2
    """FPMD-R, FPMD-M, DPMD: Adam steps on the critic per gradient step, all with the same
    gradient (the released code takes two; SAC always takes one)."""
    actor_lr: float = 3e-4
    """Initial Adam learning rate of the policy."""
    actor_lr_final: float = 3e-5
    """Policy learning rate after the linear decay."""
    lr_decay_start: int = 25_000
    """Actor updates before the linear learning-rate decay starts."""
    lr_decay_length: int = 50_000
    """Actor updates over which the learning rate decays to `actor_lr_final`."""
    reward_scale: float = 0.2
    """Multiplies rewards in the TD target."""
    actor_interval: int = 2
    """FPMD-R, FPMD-M, DPMD: gradient steps per actor update (and per Polyak update of the
    target critics and the EMA policy). SAC updates its actor, temperature and target critics
    every gradient step (the standard recipe)."""
    flow_steps: int = 20
    """FPMD-R: Euler steps K of training-time sampling (acting, TD targets, best-of-N eval)."""
    meanflow_steps: int = 1
    """FPMD-M: MeanFlow steps K of training-time sampling."""
    particles: int = 32
    """Best-of-N candidates per state, scored by min(Q1, Q2)."""
    actor_samples: str = "best_of_n"
    """FPMD-R, FPMD-M, DPMD: the actor loss's samples at s': best_of_n (released: the TD
    target's best-of-N samples) or policy (one sample of the online policy with exploration
    noise, the mirror-descent step's pi_old; docs/algorithm.md)."""
    noise_scale_init: float = 0.5
    """Initial noise x0 = noise_scale_init * eps when sampling in training (DPMD: x_T; its
    per-step noise is the full posterior sigma, as released)."""
    explore_noise: float = 0.1
    """Exploration noise std = explore_noise * alpha, added after best-of-N."""
    alpha_init: float = 5.0
    """Initial temperature alpha (= lambda of the mirror-descent weights)."""
    alpha_lr: float = 7e-3
    """Adam learning rate of log alpha."""
    alpha_interval: int = 250
    """Gradient steps between two temperature updates (`alpha_schedule` entropy)."""
    alpha_schedule: str = "entropy"
    """FPMD-R, FPMD-M, DPMD: `entropy` (the paper's: one Adam step on log alpha toward the target
    entropy every `alpha_interval` gradient steps) or `budget` (log alpha moves linearly from
    alpha_init to the target-entropy temperature over `alpha_anneal_fraction` of the run's
    gradient steps, then stays; docs/algorithm.md)."""
    alpha_anneal_fraction: float = 1.0
    """`alpha_schedule` budget: the fraction of the run's gradient steps that alpha anneals
    over."""
    target_entropy_scale: float = 1.5
    """H_target = -target_entropy_scale * action_dim."""
    q_stat_rate: float = 0.001
    """EMA rate of the running mean and std of Q used to normalise weights."""
    weight_clip: float = 3.0
    """Clip of the normalised Q before the exponential."""
    weight_form: str = "normalized"
    """normalized: exp(clip((Q-mu)/sigma)/lambda); released: exp(clip(Q-mu/sigma)/lambda);
    advantage: exp(clip(A/sigma_A)/lambda), A = Q(s,a) - Q(s, policy's action from x0 = 0),
    sigma_A its running std (docs/algorithm.md)."""
    p_equal: float = 0.0
    """MeanFlow: probability of r = t in a training sample."""
    adaptive_loss: bool = False
    """MeanFlow: adaptive loss weighting 1/(|delta|^2 + c)^p (stop-gradient). Mode-seeking:
    with it a MeanFlow policy drops the minority mode of a bimodal target, so FPMD no longer
    fits pi_old * exp(Q / alpha); off in every profile."""
    adaptive_p: float = 1.0
    """MeanFlow adaptive weighting power p."""
    adaptive_c: float = 1e-3
    """MeanFlow adaptive weighting constant c."""
    grad_clip: float = 0.0
    """Max global gradient norm of the policy update; 0 disables clipping."""
    output_bound: float = 0.0
    """Bound on the flow/diffusion net output (bound * tanh(out / bound)); 0 = unbounded."""
    diffusion_steps: int = 20
    """DPMD: DDPM steps (cosine schedule)."""
    feature_dim: int = 50
    """Pixels: encoder output size (DrQ-v2 conv -> Linear -> LayerNorm -> tanh)."""
    shift_pad: int = 4
    """Pixels: random-shift augmentation of replay frames by up to this many pixels."""
    sac_target_entropy_scale: float = 1.0
    """SAC: target entropy = -scale * action_dim."""
    sac_alpha_init: float = 1.0
    """SAC: initial entropy temperature."""


@dataclass
class TrainerConfig:
    total_steps: int = 1_000_000
    """Environment steps (summed over all parallel envs)."""
    warmup_steps: int = 30_000
    """Environment steps of uniform-random actions before learning starts."""
    updates_per_step: int = 1
    """Gradient steps per vector step."""
    replay_size: int = 1_000_000
    """Replay buffer capacity in transitions."""
    eval_interval: int = 10_000
    """Environment steps between evaluations; 0 evaluates only at the end."""
    eval_episodes: int = 10
    """Episodes per evaluation (each of deploy mode and best-of-N)."""
    eval_best_of_n: bool = True
    """Also evaluate with best-of-N sampling (besides deploy mode, NFE = 1)."""
    checkpoint_interval: int = 50_000
    """Environment steps between checkpoints; 0 checkpoints only at the end."""
    log_interval: int = 1_000
    """Environment steps between TensorBoard/CSV logging of update metrics."""
    seed: int = 0
    """Seeds networks, replay sampling, exploration and environments."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    torch_threads: int = 0
    """torch intra-op threads; 0 keeps torch's default."""
    deterministic: bool = False
    """Use deterministic torch algorithms (exact resume on CPU)."""
    output_dir: str = "runs/fpmd"
    """Where checkpoints, logs, plots and the exported policy go."""
    progress: bool = True
    """Show a progress bar on a terminal; false, or without a terminal (ros2 launch, a log
    file), a progress line every `progress_interval_s` instead."""
    progress_interval_s: float = 30.0
    """Seconds between two progress lines (when there is no progress bar)."""


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable short hash of the whole configuration (recorded in exports)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# Named profiles: overrides applied on top of the paper defaults.
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {},
    # A 2-core CPU budget. Deviations from the paper, each for cost or small-budget stability:
    # fewer particles and flow steps (best-of-N sampling dominates CPU time), one env, a short
    # warm-up, shallower nets, bounded flow outputs and gradient clipping (the prototype's MeanFlow
    # loss diverged without a bound). Not MeanFlow's adaptive loss weighting: it is mode-seeking
    # (test_core_modes). One critic Adam step per gradient step, not the released two: the
    # measured CPU runs and config/train_sim.yaml's critic_lr 1e-3 were tuned with one, and two
    # steps with one gradient roughly double the critic's step size. The `entropy` temperature
    # keeps the paper's pace (alpha_interval 250): 20 annealed alpha to its floor by 15k steps and
    # FPMD-R's samples then shrank to one action per state and it collapsed (docs/benchmarks.md,
    # "Why FPMD-R collapsed with the old alpha pace"); with 250 FPMD-R and FPMD-M both solve
    # InvertedPendulum in 25k steps. FPMD-M uses the `budget` schedule and training noise scale
    # 1.0 (ALGORITHM_PROFILES).
    # Networks 2x256 and reward scale 1, stable-baselines3's SAC defaults: with the earlier
    # 2x128 and the paper's 0.2, FPMD-M and SAC trailed SB3 SAC on Walker2d at 25k steps
    # (docs/benchmarks.md, "Paired with stable-baselines3 SAC").
    "cpu": {
        "task.num_envs": 1,
        "agent.hidden": 256,
        "agent.layers": 2,
        "agent.reward_scale": 1.0,
        "agent.particles": 4,
        "agent.flow_steps": 4,
        "agent.lr_decay_start": 10**9,
        "agent.critic_steps": 1,
        "agent.grad_clip": 10.0,
        "agent.output_bound": 5.0,
        "trainer.warmup_steps": 2_000,
        "trainer.replay_size": 200_000,
        "trainer.eval_interval": 5_000,
        "trainer.eval_episodes": 5,
        "trainer.checkpoint_interval": 20_000,
        "trainer.log_interval": 500,
        # One torch thread: on 2 cores shared with sim processes, two OpenMP threads spin
        # against each other (a 1-minute run took over 10 minutes under load).
        "trainer.torch_threads": 1,
    },
}


# Entries of a profile for one algorithm, applied after the profile's own (a config file and
# overrides still win). `cpu` FPMD-M anneals alpha over the run's own length: at the paper's pace
# alpha is still 2.7 at 25k env steps and the policy barely improves on its samples
# (InvertedDoublePendulum 1045 ± 562 against SB3 SAC's 9360; with `budget` 9358 ± 3, 3 seeds).
# FPMD-R keeps the paper's pace: at the floor `budget` reaches at the end, its samples collapse to
# one action per state (InvertedDoublePendulum 117-275 at 25k after 620-3050 at 20k).
# FPMD-M also draws its training samples from the prior it is fitted to (noise scale 1, not 0.5):
# on Ant its deploy action grew toward the box's faces and every seed fell between 15k and 25k env
# steps (-1439 ± 1377 at 25k; 498 ± 442 with scale 1). Refitted on its own samples alone, without
# the critic, the 15k-step policy's deploy |a| went 0.18 -> 0.68 in 3k updates from the 0.5-scaled
# prior, 0.18 -> 0.28 from the full one (bench/bench_self_training.py). docs/benchmarks.md,
# "FPMD-M's training noise scale".
# FPMD-M updates its actor (and the target critics and EMA policy) every gradient step, as SAC
# does, not every second: with every second, its Reacher runs fell late (50k env steps, every
# seed) and Hopper stayed on its plateau (docs/benchmarks.md, "FPMD-M's actor every gradient
# step").
# FPMD-M starts learning after 500 random env steps, not 2,000 (2% of a 25k budget; the paper's
# 30k is 3% of 1M): at 25k env steps Hopper reached 336.0 ± 88.6 against 266.3 ± 49.6, behind
# SB3 SAC's 325.4 ± 40.2 beyond seed noise before (docs/benchmarks.md, "FPMD-M's warm-up").
# FPMD-M's target entropy is -1.0 d, not -1.5 d: `budget` then anneals to alpha 0.89, not 0.54
# (exploration noise std 0.089, not 0.054). At 0.54 two of three Reacher seeds fell over the last
# 20k of 50k env steps (-6.05, -7.17); at 0.89 they did not (docs/benchmarks.md, "FPMD-M's
# temperature floor").
ALGORITHM_PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {"fpmd_m": {"agent.alpha_schedule": "budget", "agent.noise_scale_init": 1.0,
                       "agent.weight_form": "advantage", "agent.actor_interval": 1,
                       "agent.target_entropy_scale": 1.0, "trainer.warmup_steps": 500}},
}


# The paper's visual setting (DrQ-v2 conventions), on top of `paper` or `cpu`.
_PIXELS = {"task.pixels": True, "task.action_repeat": 2, "task.frame_stack": 3,
           "agent.reward_scale": 1.0}
PROFILES["paper_pixels"] = dict(_PIXELS)
# CPU: a replay of 100k pixel transitions takes 12.7 GB (2 stacks of 84x84x9 each).
PROFILES["cpu_pixels"] = PROFILES["cpu"] | _PIXELS | {"trainer.replay_size": 50_000,
                                                     "agent.batch_size": 128}
ALGORITHM_PROFILES["cpu_pixels"] = ALGORITHM_PROFILES["cpu"]


_EXPONENT_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Return `value` if it matches the annotated type (ints are accepted for floats)."""
    expected = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation, annotation)
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        if isinstance(value, str) and _EXPONENT_NUMBER.match(value.strip()):
            value = float(value)  # YAML 1.1 (PyYAML) reads 1e-3 as a string, not a number
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    elif expected is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - all fields use the four scalar types
        raise TypeError(f"unsupported annotation {annotation!r} for {name}")
    if not ok:
        raise ConfigError(
            f"{name}: expected {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _field_map(section: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(section)}


def set_field(cfg: Config, dotted: str, value: Any) -> None:
    """Set `section.field` on `cfg`, validating the name and the type."""
    parts = dotted.split(".")
    sections = _field_map(cfg)
    if len(parts) != 2 or parts[0] not in sections:
        hint = difflib.get_close_matches(parts[0], list(sections), n=1)
        raise ConfigError(
            f"{dotted}: expected section.field with section in {sorted(sections)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    section = getattr(cfg, parts[0])
    fields = _field_map(section)
    if parts[1] not in fields:
        hint = difflib.get_close_matches(parts[1], list(fields), n=1)
        raise ConfigError(
            f"{dotted}: unknown field"
            + (f" (did you mean {parts[0]}.{hint[0]}?)" if hint else "")
        )
    setattr(section, parts[1], _check_type(dotted, value, fields[parts[1]].type))


def _flatten(data: dict[str, Any], where: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if section == "profile":
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{where}{section}: expected a mapping of fields, got {values!r}")
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """`agent.particles=8` -> ('agent.particles', 8); values are parsed as YAML scalars."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.field=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {err}") from None
    if isinstance(value, (dict, list)) or value is None:
        raise ConfigError(f"{key}: expected a scalar value, got {raw!r}")
    return key.strip(), value


def make_config(
    profile: str | None = None,
    file: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> Config:
    """Paper defaults, then the profile (the argument, else the file's `profile:`, else
    paper) with its entries for the run's algorithm (`ALGORITHM_PROFILES`), then the config
    file's fields, then overrides."""
    cfg = Config()
    file_data: dict[str, Any] = {}
    if file is not None:
        file_data = load_file(file)
    profile = profile or file_data.get("profile", "paper")
    if profile not in PROFILES:
        raise ConfigError(f"profile: expected one of {sorted(PROFILES)}, got {profile!r}")
    file_fields = _flatten(file_data, f"{file}: ")
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    overrides = overrides or {}
    algo = overrides.get("agent.algo", file_fields.get("agent.algo", cfg.agent.algo))
    algorithm_entries = ALGORITHM_PROFILES.get(profile, {}).get(algo, {}) \
        if isinstance(algo, str) else {}
    for key, value in (PROFILES[profile] | algorithm_entries).items():
        set_field(cfg, key, value)
    for key, value in (file_fields | overrides).items():
        set_field(cfg, key, value)
    validate(cfg)
    return cfg


def load_file(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: not valid YAML/JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, got {data!r}")
    return data


RESOLVED_CONFIG_NAME = "config.yaml"
"""The resolved configuration's file name in a run's output directory."""


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write every field of `cfg` as YAML (atomically); `make_config(file=path)` reads it back
    to an equal Config, whatever profile produced it."""
    import yaml

    from fpmd_core.files import write_atomically

    text = ("# The resolved configuration of this run: every field, after profile, file and\n"
            "# overrides. Train again with: fpmd-train --config <this file>\n"
            + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return write_atomically(path, lambda handle: handle.write(text.encode()))


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config saved with `to_dict` (checkpoints, exports), validating every field."""
    cfg = Config()
    for key, value in _flatten(data, "").items():
        set_field(cfg, key, value)
    validate(cfg)
    return cfg


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Range checks that types alone cannot express."""
    a, t, k = cfg.agent, cfg.trainer, cfg.task
    _require(a.algo in ALGORITHMS, f"agent.algo: expected one of {ALGORITHMS}, got {a.algo!r}")
    _require(a.alpha_schedule in ("entropy", "budget"),
             f"agent.alpha_schedule: expected 'entropy' or 'budget', got {a.alpha_schedule!r}")
    _require(0.0 < a.alpha_anneal_fraction <= 1.0,
             f"agent.alpha_anneal_fraction: expected a value in (0, 1], "
             f"got {a.alpha_anneal_fraction}")
    # The budget schedule ends at the temperature whose exploration noise has the target entropy.
    _require(a.alpha_schedule != "budget" or a.explore_noise > 0,
             f"agent.explore_noise: expected a positive number with agent.alpha_schedule "
             f"'budget', got {a.explore_noise}")
    _require(a.actor_samples in ACTOR_SAMPLES,
             f"agent.actor_samples: expected one of {', '.join(ACTOR_SAMPLES)}, "
             f"got {a.actor_samples!r}")
    _require(a.weight_form in WEIGHT_FORMS,
             f"agent.weight_form: expected one of {', '.join(WEIGHT_FORMS)}, "
             f"got {a.weight_form!r}")
    _require(t.device in ("auto", "cpu", "cuda"),
             f"trainer.device: expected auto, cpu or cuda, got {t.device!r}")
    for name, value, low in [
        ("task.num_envs", k.num_envs, 1), ("task.max_episode_steps", k.max_episode_steps, 0),
        ("task.action_repeat", k.action_repeat, 1), ("task.image_size", k.image_size, 16),
        ("task.frame_stack", k.frame_stack, 1), ("agent.feature_dim", a.feature_dim, 1),
        ("agent.shift_pad", a.shift_pad, 0),
        ("agent.hidden", a.hidden, 1), ("agent.layers", a.layers, 1),
        ("agent.batch_size", a.batch_size, 2), ("agent.actor_interval", a.actor_interval, 1),
        ("agent.critic_steps", a.critic_steps, 1),
        ("agent.flow_steps", a.flow_steps, 1), ("agent.meanflow_steps", a.meanflow_steps, 1),
        ("agent.particles", a.particles, 1),
        ("agent.alpha_interval", a.alpha_interval, 1),
        ("agent.diffusion_steps", a.diffusion_steps, 1),
        ("agent.lr_decay_start", a.lr_decay_start, 0),
        ("agent.lr_decay_length", a.lr_decay_length, 1),
        ("trainer.total_steps", t.total_steps, 1), ("trainer.warmup_steps", t.warmup_steps, 0),
        ("trainer.updates_per_step", t.updates_per_step, 0),
        ("trainer.replay_size", t.replay_size, 1), ("trainer.eval_interval", t.eval_interval, 0),
        ("trainer.eval_episodes", t.eval_episodes, 1),
        ("trainer.checkpoint_interval", t.checkpoint_interval, 0),
        ("trainer.log_interval", t.log_interval, 1), ("trainer.torch_threads", t.torch_threads, 0),
    ]:
        _require(value >= low, f"{name}: expected an integer >= {low}, got {value}")
    for name, value in [
        ("agent.gamma", a.gamma), ("agent.tau", a.tau), ("agent.q_stat_rate", a.q_stat_rate),
        ("agent.p_equal", a.p_equal),
    ]:
        _require(0.0 <= value <= 1.0, f"{name}: expected a value in [0, 1], got {value}")
    for name, value in [
        ("agent.critic_lr", a.critic_lr), ("agent.actor_lr", a.actor_lr),
        ("agent.actor_lr_final", a.actor_lr_final), ("agent.alpha_lr", a.alpha_lr),
        ("agent.alpha_init", a.alpha_init), ("agent.reward_scale", a.reward_scale),
        ("agent.weight_clip", a.weight_clip), ("agent.adaptive_c", a.adaptive_c),
        ("agent.sac_alpha_init", a.sac_alpha_init),
    ]:
        _require(value > 0.0, f"{name}: expected a positive number, got {value}")
    for name, value in [
        ("agent.noise_scale_init", a.noise_scale_init), ("agent.explore_noise", a.explore_noise),
        ("agent.grad_clip", a.grad_clip), ("agent.output_bound", a.output_bound),
        ("agent.adaptive_p", a.adaptive_p), ("trainer.progress_interval_s", t.progress_interval_s),
    ]:
        _require(value >= 0.0, f"{name}: expected a number >= 0, got {value}")
    # Updates start after the warm-up: a run that ends there would export an untrained policy.
    _require(t.total_steps > t.warmup_steps,
             f"trainer.total_steps: expected more than trainer.warmup_steps ({t.warmup_steps}), "
             f"got {t.total_steps}: a run that ends within the warm-up of random actions trains "
             "nothing and exports an untrained policy")
    _require(a.batch_size <= t.replay_size,
             f"agent.batch_size: expected <= trainer.replay_size ({t.replay_size})")


def gradient_steps_of_run(cfg: Config) -> int:
    """The gradient steps a run of `cfg` takes: `updates_per_step` after every vector step (of
    `num_envs` env steps) that ends at or beyond the warm-up, until `total_steps`."""
    t, envs = cfg.trainer, cfg.task.num_envs
    vector_steps = -(-t.total_steps // envs)
    first_learning_step = max(-(-t.warmup_steps // envs), 1)
    return t.updates_per_step * max(vector_steps - first_learning_step + 1, 0)


def training_steps(agent: AgentConfig) -> int:
    """Generator steps K of training-time sampling for the configured algorithm."""
    return {"fpmd_r": agent.flow_steps, "fpmd_m": agent.meanflow_steps,
            "dpmd": agent.diffusion_steps}.get(agent.algo, 1)
