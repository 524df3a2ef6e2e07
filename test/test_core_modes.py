"""The policy loss must cover every mode of its target.

FPMD's actor step fits pi_old * exp(Q / alpha); a loss that drops a minority mode fits something
else. Target here: 75% of the mass at -0.6 and 25% at +0.6 (each N(., 0.2^2)), constant state,
all weights 1. Through the agent's own actor step (its loss, gradient clip, output bound,
learning-rate schedule), in every shipped profile, the fitted policy must put about 25% of its
samples on the minority side (x > 0); MeanFlow's adaptive loss weighting puts almost none there.

Cost: the profile's loss settings on a 2x64 net, actor_lr 3e-3 decayed to 3e-4 (the agent's
schedule) and 2000 (FPMD-R) or 1000 (FPMD-M) batches of 256, a few seconds each. Measured with
seeds 0, 1, 2 in the cpu and paper profiles: FPMD-R 0.245 to 0.277, FPMD-M 0.229 to 0.247 on the
minority side; with adaptive weighting FPMD-M 0.003 to 0.005 (cpu seeds 0, 1; paper seed 0).
"""

from __future__ import annotations

import pytest
import torch

from fpmd_core.agents import MirrorDescentAgent
from fpmd_core.config import PROFILES, make_config

OBS_DIM, BATCH, SAMPLES = 3, 256, 4000
MINORITY_SHARE, MODE, MODE_STD = 0.25, 0.6, 0.2
FIT_STEPS = {'fpmd_r': 2000, 'fpmd_m': 1000}
EVAL_EULER_STEPS = 50
"""FPMD-R is evaluated on a fine ODE grid: the question is what the loss fits, not how well the
profile's K Euler steps integrate it (4 steps smear a bimodal flow toward its mean)."""


pytestmark = pytest.mark.usefixtures('one_thread_torch')


def minority_share_after_fit(algo: str, profile: str, seed: int = 0, steps: int = 0,
                             **agent) -> float:
    steps = steps or FIT_STEPS[algo]
    overrides = {'agent.algo': algo, 'agent.hidden': 64, 'agent.layers': 2,
                 'agent.actor_lr': 3e-3, 'agent.actor_lr_final': 3e-4,
                 'agent.lr_decay_start': steps // 2, 'agent.lr_decay_length': steps // 4}
    overrides.update({f'agent.{k}': v for k, v in agent.items()})
    cfg = make_config(profile, overrides=overrides).agent
    torch.manual_seed(seed)
    learner = MirrorDescentAgent(OBS_DIM, 1, cfg, torch.device('cpu'))
    obs, ones = torch.zeros(BATCH, OBS_DIM), torch.ones(BATCH)
    for _ in range(steps):
        majority = torch.rand(BATCH) < 1 - MINORITY_SHARE
        actions = torch.where(majority, -MODE, MODE)[:, None] + MODE_STD * torch.randn(BATCH, 1)
        learner.update_actor(obs, actions, ones)
    # Samples of the fitted distribution: from x0 = eps (the noise the loss was fitted with).
    with torch.no_grad():
        x = learner.policy.generate(torch.zeros(SAMPLES, OBS_DIM), torch.randn(SAMPLES, 1),
                                    EVAL_EULER_STEPS if algo == 'fpmd_r' else cfg.meanflow_steps)
    return (x > 0).float().mean().item()


@pytest.mark.parametrize('profile', sorted(PROFILES))
@pytest.mark.parametrize('algo', ['fpmd_r', 'fpmd_m'])
def test_every_profile_fits_both_modes_of_an_asymmetric_target(algo, profile):
    share = minority_share_after_fit(algo, profile)
    assert 0.18 < share < 0.32, (
        f"{algo} in profile {profile!r}: {share:.3f} of the samples on the minority side, "
        f"expected about {MINORITY_SHARE}")


def test_meanflow_adaptive_loss_weighting_drops_the_minority_mode():
    """Why adaptive weighting is off everywhere: 1 / (|delta|^2 + c) down-weights the samples
    the policy fits worst, the minority mode's, until the policy ignores them."""
    share = minority_share_after_fit('fpmd_m', 'cpu', adaptive_loss=True)
    assert share < 0.08, f"{share:.3f} on the minority side with adaptive weighting"


def test_the_fit_is_deterministic():
    """Same seed, same share (and a different seed, a different one: the check can fail)."""
    first = minority_share_after_fit('fpmd_r', 'cpu', seed=3, steps=150)
    assert minority_share_after_fit('fpmd_r', 'cpu', seed=3, steps=150) == first
    assert minority_share_after_fit('fpmd_r', 'cpu', seed=4, steps=150) != first
