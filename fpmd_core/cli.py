"""`fpmd-train`: train in-process (no ROS) from a config file plus overrides.

    fpmd-train --profile cpu --set task.id=InvertedPendulum-v5 --set agent.algo=fpmd_m
    fpmd-train --config my.yaml --resume runs/fpmd/checkpoints/step_20000.pt
"""

from __future__ import annotations

import argparse
import sys

from .config import PROFILES, ConfigError, make_config


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fpmd-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML/JSON file with task/agent/trainer sections")
    parser.add_argument("--profile", default=None, choices=sorted(PROFILES),
                        help="named defaults (paper: the paper's settings; cpu: 2-core budget)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help="override one field (repeatable)")
    parser.add_argument("--resume", help="checkpoint to continue from")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = make_config(args.profile, args.config, args.overrides)
    except ConfigError as err:
        print(f"fpmd-train: configuration error: {err}", file=sys.stderr)
        return 2
    from .trainer import Trainer

    result = Trainer(cfg, resume=args.resume).run()
    print(f"policy: {result.policy}\ncheckpoint: {result.checkpoint}\n"
          f"deploy-mode return (NFE = 1): {result.final_return_deploy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
