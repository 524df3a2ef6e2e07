"""Flow Policy Mirror Descent (FPMD-R, FPMD-M) and the DPMD baseline: one update rule.

The three differ only in the generative policy (rectified flow, MeanFlow, DDPM): each policy
brings `generate` and `weighted_loss`; the mirror-descent weights, the temperature and the
schedule are the same (docs/algorithm.md).
"""

from __future__ import annotations

import copy
import math

import torch

from ..config import training_steps
from ..policies import DiffusionPolicy, FlowPolicy, MeanFlowPolicy
from .base import Agent
from .critic import check_finite, polyak, td_target, update_critic
from .optim import adam
from .sampling import sample_actions

ONE_STEP_REFERENCE_STEPS = 20
# A batch whose samples all equal the policy's action has A = 0 everywhere: z must be 0, not 0/0.
ADVANTAGE_STD_FLOOR = 1e-8


def exploration_entropy(alpha: torch.Tensor, act_dim: int, explore_noise: float) -> torch.Tensor:
    """H = 0.5 d log(2 pi e (explore_noise * alpha)^2): entropy of the exploration noise."""
    return 0.5 * act_dim * torch.log(2 * math.pi * math.e * (explore_noise * alpha) ** 2)


def target_entropy_alpha(target_entropy_scale: float, explore_noise: float) -> float:
    """The alpha whose exploration noise has the target entropy -scale * d: from
    0.5 d log(2 pi e (explore_noise * alpha)^2) = -scale * d (d cancels)."""
    return math.exp(-target_entropy_scale) / (math.sqrt(2 * math.pi * math.e) * explore_noise)


def budget_alpha(gradient_step: int, anneal_steps: int, alpha_init: float,
                 alpha_final: float) -> float:
    """log alpha linear from log alpha_init (step 0) to log alpha_final (step `anneal_steps`),
    then constant: the `budget` temperature schedule."""
    progress = min(gradient_step / max(anneal_steps, 1), 1.0)
    return math.exp((1.0 - progress) * math.log(alpha_init) + progress * math.log(alpha_final))


def effective_sample_fraction(weights: torch.Tensor) -> float:
    """(sum w)^2 / (n sum w^2): 1 when every sample of the batch counts alike, 1/n when one
    carries the actor step. (Q - mu) / sigma is normalised over the batch's states, so as alpha
    falls the weights favour the states of high value, not only the better actions."""
    return float(weights.sum() ** 2 / (weights.numel() * (weights ** 2).sum()))


def normalised_q(q: torch.Tensor, q_mean: torch.Tensor, q_std: torch.Tensor,
                 form: str) -> torch.Tensor:
    """z = (Q - mu) / sigma (`normalized`); `released` keeps the released code's Q - mu / sigma."""
    if form == "normalized":
        return (q - q_mean) / q_std
    if form == "released":
        return q - q_mean / q_std
    raise ValueError(f"normalised_q: form {form!r}; expected normalized or released")


def advantage_scores(q: torch.Tensor, q_baseline: torch.Tensor,
                     advantage_std: torch.Tensor) -> torch.Tensor:
    """z = A / sigma_A, A = Q(s, a) - Q(s, a_det): each state's own baseline, so z says how a
    sample compares with the policy's action in its state, not how valuable the state is
    (`weight_form: advantage`)."""
    return (q - q_baseline) / advantage_std.clamp_min(ADVANTAGE_STD_FLOOR)


def exp_weights(z: torch.Tensor, alpha: torch.Tensor, clip: float) -> torch.Tensor:
    """w = exp(clip(z, -c, c) / lambda): the mirror-descent weights of scores z."""
    return torch.exp(z.clamp(-clip, clip) / alpha)


class MirrorDescentAgent(Agent):
    POLICIES = {"fpmd_r": FlowPolicy, "fpmd_m": MeanFlowPolicy, "dpmd": DiffusionPolicy}

    def __init__(self, obs_shape, act_dim: int, cfg, device: torch.device,
                 gradient_budget: int = 0):
        """`gradient_budget`: the run's gradient steps (`config.gradient_steps_of_run`), which
        the `budget` temperature schedule anneals over; an agent that only acts needs none."""
        super().__init__(obs_shape, act_dim, cfg, device)
        self.algo = cfg.algo
        extra = {"steps": cfg.diffusion_steps} if cfg.algo == "dpmd" else {}
        self.policy = self.POLICIES[cfg.algo](self.obs_dim, act_dim, cfg.hidden, cfg.layers,
                                              output_bound=cfg.output_bound, **extra)
        self.ema_policy = copy.deepcopy(self.policy).requires_grad_(False)
        self.policy_optimizer = adam(self.policy.parameters(), lr=cfg.actor_lr)
        self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(cfg.alpha_init)))
        self.alpha_optimizer = adam([self.log_alpha], lr=cfg.alpha_lr)
        self.register_buffer("q_mean", torch.tensor(0.0))
        self.register_buffer("q_std", torch.tensor(1.0))
        if cfg.weight_form == "advantage":
            # 0 until the first batch sets it: any other start would scale the first weights.
            # Only this form has it, so checkpoints of the other forms keep their tensors.
            self.register_buffer("advantage_std", torch.tensor(0.0))
        self.steps = training_steps(cfg)
        self.target_entropy = -cfg.target_entropy_scale * act_dim
        self.alpha_anneal_steps = math.ceil(cfg.alpha_anneal_fraction * gradient_budget)
        self.to(device)

    # --- sampling ------------------------------------------------------------------------
    def _sample(self, policy, obs, explore: bool, particles: int | None = None):
        cfg = self.cfg
        std = cfg.explore_noise * self.alpha if explore else 0.0
        return sample_actions(policy, self.critic.online, obs, self.steps,
                              cfg.particles if particles is None else particles,
                              cfg.noise_scale_init, std)

    def explore(self, obs):
        return self._sample(self.ema_policy, obs, explore=True)

    def evaluate(self, obs):
        return self._sample(self.ema_policy, obs, explore=False)

    def learning_rates(self) -> dict[str, float]:
        """The actor's follows its schedule (`actor_learning_rate`)."""
        return super().learning_rates() | {
            "policy": actor_learning_rate(self.actor_updates, self.cfg)}

    def deploy_policy(self) -> torch.nn.Module:
        return DeployGenerator(self.ema_policy, self.algo)

    def training_samples(self, obs):
        """The online policy's best-of-N samples with exploration noise: the TD target's
        actions at s', and with `actor_samples: best_of_n` the actor's."""
        return self._sample(self.policy, obs, explore=True)

    def actor_samples(self, next_obs, target_actions):
        """The actor loss's samples at s': the TD target's best-of-N samples (released), or
        with `actor_samples: policy` one sample of the online policy with exploration noise,
        the pi_old that the mirror-descent step reweighs."""
        if self.cfg.actor_samples == "best_of_n":
            return target_actions
        return self._sample(self.policy, next_obs, explore=True, particles=1)

    # --- the update ----------------------------------------------------------------------
    def update(self, batch: dict) -> dict[str, float]:
        """One gradient step, in the released code's order: critic (`critic_steps` Adam steps
        with one gradient); the mirror-descent weights of the actor's samples (`actor_samples`)
        from the running Q statistics, then the statistics' EMA step (every gradient step);
        every `actor_interval`: actor and Polyak; every `alpha_interval`: temperature (`budget`
        schedule: every step, its closed form)."""
        cfg = self.cfg
        batch = self.encode_batch(batch)
        next_actions = self.training_samples(batch["next_obs"])
        actor_actions = self.actor_samples(batch["next_obs"], next_actions)
        metrics = update_critic(self.critic, batch, td_target(self.critic, batch, 0.0,
                                                              next_actions, cfg),
                                adam_steps=cfg.critic_steps)
        weights = self.weights_and_q_statistics(batch["next_obs"], actor_actions)
        self.gradient_steps += 1
        if self.gradient_steps % cfg.actor_interval == 0:
            metrics |= self.update_actor(batch["next_obs"], actor_actions, weights)
            polyak(self.critic.target, self.critic.online, cfg.tau)
            polyak(self.ema_policy, self.policy, cfg.tau)
        if cfg.alpha_schedule == "budget":
            metrics |= self.anneal_temperature()
        elif self.gradient_steps % cfg.alpha_interval == 0:
            metrics |= self.update_temperature()
        return metrics

    @torch.no_grad()
    def weights_and_q_statistics(self, obs, actions) -> torch.Tensor:
        """w = exp(clip(z, -c, c) / alpha) of `mirror_descent_scores`, Q = min(Q1, Q2)(obs,
        actions) of the online critic, with the running (mu, sigma) as they were; then (mu,
        sigma) move toward this batch's mean and std at rate q_stat_rate. `weight_form:
        advantage`: sigma_A moves toward this batch's std of A first (the first batch sets
        it), and the weights use it."""
        cfg = self.cfg
        q = self.critic.online.min_q(obs, actions)
        q_baseline = None
        if cfg.weight_form == "advantage":
            q_baseline = self.baseline_q(obs)
            batch_std = (q - q_baseline).std()
            self.advantage_std.copy_(torch.where(
                self.advantage_std > 0, self.advantage_std.lerp(batch_std, cfg.q_stat_rate),
                batch_std))
        weights = exp_weights(self.mirror_descent_scores(obs, q, q_baseline), self.alpha,
                              cfg.weight_clip)
        self.q_mean.lerp_(q.mean(), cfg.q_stat_rate)
        self.q_std.lerp_(q.std(), cfg.q_stat_rate)
        return weights

    @torch.no_grad()
    def mirror_descent_scores(self, obs, q, q_baseline=None) -> torch.Tensor:
        """The scores z of Q values `q` at `obs` that the weights exponentiate, in the
        configured `weight_form`, from the running statistics as they are: `normalised_q`, or
        `advantage_scores` against `baseline_q` (`q_baseline` when the caller has it)."""
        cfg = self.cfg
        if cfg.weight_form == "advantage":
            baseline = self.baseline_q(obs) if q_baseline is None else q_baseline
            return advantage_scores(q, baseline, self.advantage_std)
        return normalised_q(q, self.q_mean, self.q_std, cfg.weight_form)

    def baseline_q(self, obs) -> torch.Tensor:
        """Q(s, a_det) of the online critic, a_det the online policy's action from x0 = 0 (the
        policy being trained, with its training flow steps): the advantage form's baseline."""
        deterministic = sample_actions(self.policy, None, obs, self.steps, 1, 0.0)
        return self.critic.online.min_q(obs, deterministic)

    def update_actor(self, obs, actions, weights) -> dict[str, float]:
        """One step on the weighted generative loss of the policy's own samples (obs, actions),
        w = exp(Q_norm / alpha) (`weights_and_q_statistics`), with the scheduled learning rate."""
        cfg = self.cfg
        loss = self.policy.weighted_loss(obs, actions, weights, cfg)
        check_finite("actor_loss", loss)
        self.policy_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.policy.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        self.policy_optimizer.step()
        self.actor_updates += 1
        for group in self.policy_optimizer.param_groups:
            group["lr"] = actor_learning_rate(self.actor_updates, cfg)
        return {"loss/actor": loss.item(), "weights/std": weights.std().item(),
                "weights/max": weights.max().item(), "weights/min": weights.min().item(),
                "weights/ess": effective_sample_fraction(weights),
                "grad_norm/actor": grad_norm.item()}

    def update_temperature(self) -> dict[str, float]:
        """One Adam step on -log(alpha) * (-H + H_target), H held constant."""
        cfg = self.cfg
        entropy = exploration_entropy(self.alpha, self.act_dim, cfg.explore_noise)
        loss = -self.log_alpha * (-entropy + self.target_entropy)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.alpha_optimizer.step()
        return {"alpha": self.alpha.item()}

    @torch.no_grad()
    def anneal_temperature(self) -> dict[str, float]:
        """alpha = `budget_alpha` at this gradient step: from alpha_init to the target-entropy
        temperature over `alpha_anneal_steps`."""
        if self.alpha_anneal_steps <= 0:
            raise ValueError("agent.alpha_schedule 'budget' anneals over the run's gradient "
                             "steps: this agent was made without a gradient_budget")
        cfg = self.cfg
        alpha = budget_alpha(self.gradient_steps, self.alpha_anneal_steps, cfg.alpha_init,
                             target_entropy_alpha(cfg.target_entropy_scale, cfg.explore_noise))
        self.log_alpha.fill_(math.log(alpha))
        return {"alpha": alpha}

    @torch.no_grad()
    def one_step_error(self, obs: torch.Tensor) -> float | None:
        """Mean ||a(NFE=1) - a(NFE=20)|| from x0 = 0 with the EMA policy (straightness)."""
        if self.algo == "dpmd":
            return None
        obs = self.features(obs)
        zeros = torch.zeros(obs.shape[0], self.act_dim, device=obs.device)
        one = self.ema_policy.generate(obs, zeros, 1).clamp(-1, 1)
        many = self.ema_policy.generate(obs, zeros, ONE_STEP_REFERENCE_STEPS).clamp(-1, 1)
        return (one - many).norm(dim=-1).mean().item()


def actor_learning_rate(actor_updates: int, cfg) -> float:
    """actor_lr, then linear decay to actor_lr_final over lr_decay_length actor updates."""
    progress = (actor_updates - cfg.lr_decay_start) / cfg.lr_decay_length
    progress = min(max(progress, 0.0), 1.0)
    return cfg.actor_lr + progress * (cfg.actor_lr_final - cfg.actor_lr)


class DeployGenerator(torch.nn.Module):
    """Deploy mode: x0 = 0 (or the given noise), one generator call (DPMD: its 20 steps)."""

    def __init__(self, policy, algo: str):
        super().__init__()
        self.policy = policy
        self.steps = policy.steps if algo == "dpmd" else 1

    def forward(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x0 = torch.zeros(obs.shape[0], self.policy.act_dim, dtype=obs.dtype, device=obs.device)
        if noise is not None:
            x0 = noise
        return self.policy.generate(obs, x0, self.steps).clamp(-1.0, 1.0)
