"""`fpmd-train`: train in-process (no ROS) from a config file plus overrides.

    fpmd-train --profile cpu --set task.id=InvertedPendulum-v5 --set agent.algo=fpmd_m
    fpmd-train --config my.yaml --resume runs/fpmd/checkpoints/step_20000.pt
"""

from __future__ import annotations

import argparse
import sys

from .config import PROFILES, ConfigError, load_file, make_config

PROG = "fpmd-train"

# bench/bench_core.py on the 2-core development CPU (bench/results/core.json): paper-size FPMD-R
# (3x256, 32 particles x 20 flow steps) makes 0.6 updates/s, so its 1M env steps take days.
PAPER_ON_CPU_COST = ("on a 2-core CPU paper-size FPMD-R makes 0.6 updates/s, about 4 days for "
                     "1M env steps")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML/JSON file with task/agent/trainer sections")
    parser.add_argument("--profile", default=None, choices=sorted(PROFILES),
                        help="named defaults (paper: the paper's settings, the default; cpu: "
                             "2-core budget)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help="override one field (repeatable)")
    parser.add_argument("--resume", help="checkpoint to continue from")
    return parser.parse_args(argv)


def profile_notice(args: argparse.Namespace, cfg, cuda_available: bool) -> str | None:
    """One line saying which profile runs and what it costs, when none was chosen (neither
    --profile nor the config file's `profile:`) and training would run on the CPU."""
    if args.profile or (args.config and load_file(args.config).get("profile")):
        return None
    if cfg.trainer.device == "cuda" or (cfg.trainer.device == "auto" and cuda_available):
        return None
    a = cfg.agent
    return (f"{PROG}: no --profile given, so the 'paper' profile runs on the CPU (no GPU "
            f"found): {a.algo}, {cfg.trainer.total_steps} env steps, {a.layers}x{a.hidden} "
            f"networks, {a.particles} particles; {PAPER_ON_CPU_COST}; --profile cpu is the "
            "budget for a CPU")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = make_config(args.profile, args.config, args.overrides)
    except ConfigError as err:
        print(f"{PROG}: configuration error: {err}", file=sys.stderr)
        return 2
    import torch

    from .checkpoint import CheckpointError
    from .tasks import TaskError
    from .trainer import EXIT_DIVERGED, Trainer, TrainingDiverged

    notice = profile_notice(args, cfg, torch.cuda.is_available())
    if notice:
        print(notice, file=sys.stderr)
    try:
        trainer = Trainer(cfg, resume=args.resume)
    except ConfigError as err:
        print(f"{PROG}: configuration error: {err}", file=sys.stderr)
        return 2
    except CheckpointError as err:  # its message names the file and what does not fit
        print(f"{PROG}: cannot resume: {err}", file=sys.stderr)
        return 2
    except TaskError as err:  # an unknown task id, or a task file that names what is wrong
        print(f"{PROG}: task error: {err}", file=sys.stderr)
        return 2
    try:
        result = trainer.run()
    except TrainingDiverged as err:
        print(f"{PROG}: training diverged: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    print(f"policy: {result.policy}\ncheckpoint: {result.checkpoint}\n"
          f"deploy-mode return (NFE = 1): {result.final_return_deploy}")
    if result.final_goal_distance_deploy is not None:
        print(f"final goal distance (deploy, mean over the evaluation episodes): "
              f"{result.final_goal_distance_deploy:.4f} m")
    return 0


if __name__ == "__main__":
    sys.exit(main())
