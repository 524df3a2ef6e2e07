"""A short learning run: FPMD-M must clearly learn InvertedPendulum-v5 in deploy mode (NFE = 1).

Budget: about 4k env steps with small nets, well under two minutes on 2 CPU cores. A random or
untrained policy scores about 5-20 (the pole falls within a second); the threshold asks for a
policy that balances several times longer, measured deterministically in deploy mode.
"""

from fpmd_core.config import make_config
from fpmd_core.trainer import Trainer

THRESHOLD = 100.0


def test_fpmd_m_learns_inverted_pendulum_in_deploy_mode(tmp_path):
    cfg = make_config("cpu", overrides={
        "task.id": "InvertedPendulum-v5",
        "agent.algo": "fpmd_m",
        "agent.hidden": 64,
        "agent.batch_size": 128,
        "agent.particles": 4,
        "agent.alpha_interval": 5,
        "trainer.total_steps": 5_000,
        "trainer.warmup_steps": 1_000,
        "trainer.eval_interval": 0,
        "trainer.eval_episodes": 5,
        "trainer.checkpoint_interval": 0,
        "trainer.progress": False,
        "trainer.seed": 0,
        "trainer.output_dir": str(tmp_path),
    })
    result = Trainer(cfg).run()
    assert result.final_return_deploy is not None
    assert result.final_return_deploy >= THRESHOLD, (
        f"deploy-mode return {result.final_return_deploy:.1f} after {result.env_steps} env "
        f"steps; expected >= {THRESHOLD}")
