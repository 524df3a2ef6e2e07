"""Where one gradient update spends its time, and how torch's thread count and products move it.

    python -m bench.bench_update_parts                     # config/train_sim.yaml, 1 and 2 threads
    python -m bench.bench_update_parts --variants threads1_onednn threads1_torch_linear

One process, the agent of a config file (default: `config/train_sim.yaml`, the default
`./fpmd train`) at each size, trained on a replay of the task's transitions under uniform random
actions. Each variant is a torch thread count with the large products where `fpmd_core.linear`
puts them on this processor (`threadsN`), on oneDNN (`threadsN_onednn`) or on torch's own linear,
MKL's (`threadsN_torch_linear`). Rounds alternate over (size, variant), in
reverse order every other round, so drift in the machine's load hits all alike. Per variant: the
median time of one update and of each of its parts (an average per update: the actor part runs
every `actor_interval` updates), and the median over rounds of its speed relative to the first
variant of the same size in the same round. The parts are the mirror-descent agent's update
(FPMD-R, FPMD-M, DPMD) in the released code's order: replay sample, best-of-N actions at s', TD
target, critic step, mirror-descent weights, actor step, Polyak averaging. With
`--profile-updates N`, torch's profiler also runs N updates of each size on the first variant and
records the operators with the largest share of the CPU time (their own, without callees).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench.bench_updates_vs_sb3 import agent_on_replay, parse_size, random_transitions
from bench.common import REPO, RESULTS, command_line, json_text
from bench.machine import machine
from fpmd_core import linear as linear_module
from fpmd_core.agents import fpmd as fpmd_module
from fpmd_core.config import make_config
from fpmd_core.memory import retain_freed_memory

VARIANT = re.compile(r"threads([1-9][0-9]*)(?:_(onednn|torch_linear))?")
AGENT_PARTS = {"training_samples": "best_of_n_next_actions",
               "weights_and_q_statistics": "weights", "update_actor": "actor"}
MODULE_PARTS = {"td_target": "td_target", "update_critic": "critic", "polyak": "polyak"}


def parse_variant(text: str) -> tuple[int, str]:
    """'threads2' -> (2 threads, 'chosen': this processor's products); 'threads1_onednn' -> (1,
    'onednn'); 'threads1_torch_linear' -> (1, 'torch_linear')."""
    match = VARIANT.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            "variant: expected threadsN, threadsN_onednn or threadsN_torch_linear (N >= 1), "
            f"got {text!r}")
    return int(match.group(1)), match.group(2) or "chosen"


def variant_name(threads: int, products: str) -> str:
    return f"threads{threads}" + ("" if products == "chosen" else f"_{products}")


class PartTimer:
    """Wall time per part of `agent.update`: the agent's own steps and the update's module-level
    functions wrapped while it is installed (`with PartTimer(agent) as timer`)."""

    def __init__(self, agent):
        self.agent = agent
        self.seconds: dict[str, float] = defaultdict(float)
        self._restore: list = []

    def _wrap(self, owner, attribute: str, part: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start

        setattr(owner, attribute, timed)
        self._restore.append((owner, attribute, original))

    def __enter__(self) -> PartTimer:
        for attribute, part in AGENT_PARTS.items():
            self._wrap(self.agent, attribute, part)
        for attribute, part in MODULE_PARTS.items():
            self._wrap(fpmd_module, attribute, part)
        return self

    def __exit__(self, *exc) -> None:
        for owner, attribute, original in reversed(self._restore):
            if owner is self.agent:
                delattr(owner, attribute)  # back to the class's method
            else:
                setattr(owner, attribute, original)
        self._restore.clear()


class Runner:
    """One agent of the config at one size, training on a filled replay."""

    def __init__(self, cfg, transitions: dict, seed: int):
        self.agent, self.replay = agent_on_replay(cfg, transitions, seed)
        if not hasattr(self.agent, "weights_and_q_statistics"):
            raise SystemExit(f"agent.algo {cfg.agent.algo!r}: the parts are those of the "
                             "mirror-descent agents (fpmd_r, fpmd_m, dpmd)")
        self.batch_size = cfg.agent.batch_size

    def run(self) -> None:
        """One update on a replay batch, untimed."""
        self.agent.update(self.replay.sample(self.batch_size, self.agent.device))

    def timed_round(self, seconds: float) -> dict[str, float]:
        """Milliseconds per update over `seconds`: 'update' and each part ('replay_sample'
        included)."""
        self.run()
        updates, sampling = 0, 0.0
        with PartTimer(self.agent) as timer:
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                before = time.perf_counter()
                batch = self.replay.sample(self.batch_size, self.agent.device)
                sampling += time.perf_counter() - before
                self.agent.update(batch)
                updates += 1
            wall = time.perf_counter() - start
        parts = {"replay_sample": sampling, **timer.seconds}
        return {"update": wall / updates * 1e3,
                **{k: v / updates * 1e3 for k, v in parts.items()}}


def operator_shares(runner: Runner, updates: int, top: int = 12) -> list[dict]:
    """The `top` torch operators by their own CPU time over `updates` updates under torch's
    profiler: name, share of the total, calls per update."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(updates):
            runner.run()
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    ranked = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[:top]
    return [{"operator": event.key, "self_cpu_share": round(event.self_cpu_time_total / total, 4),
             "calls_per_update": round(event.count / updates, 2)} for event in ranked]


def apply_variant(threads: int, products: str, choice: dict[str, bool]) -> None:
    """torch's thread count, and where the large products go: `choice` maps 'chosen' to
    `fpmd_core.linear.onednn_chosen()` and 'onednn' to `onednn_available()`, both asked once
    before any variant set them."""
    torch.set_num_threads(threads)
    # The module-level switch that `fpmd_core.linear.linear` reads on every call.
    linear_module._use_onednn = choice.get(products, False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config" / "train_sim.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help="config override (repeatable)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=None,
                        help="hidden layers x width, e.g. 2x256 (default: the config's)")
    parser.add_argument("--variants", nargs="+", type=parse_variant,
                        default=[(1, "chosen"), (2, "chosen")],
                        help="threadsN (this processor's products), threadsN_onednn or "
                             "threadsN_torch_linear; the first is the baseline")
    parser.add_argument("--transitions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.5, help="per variant per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile-updates", type=int, default=0,
                        help="also profile this many updates per size on the first variant")
    parser.add_argument("--out", default=str(RESULTS / "update_parts.json"))
    args = parser.parse_args()
    cfg = make_config(file=args.config, overrides=args.overrides)
    variant_names = [variant_name(*variant) for variant in args.variants]
    if len(set(variant_names)) != len(variant_names):
        parser.error(f"--variants: each once, got {' '.join(variant_names)}")
    for name, value, least in (("--rounds", args.rounds, 1), ("--transitions", args.transitions, 1),
                               ("--profile-updates", args.profile_updates, 0)):
        if value < least:
            parser.error(f"{name}: expected at least {least}, got {value}")
    if not args.seconds > 0:
        parser.error(f"--seconds: expected a positive number, got {args.seconds}")
    sizes = args.sizes or [(cfg.agent.layers, cfg.agent.hidden)]
    retain_freed_memory()  # as the trainer does
    choice = {"chosen": linear_module.onednn_chosen(),
              "onednn": linear_module.onednn_available()}
    if any(products == "onednn" for _, products in args.variants) and not choice["onednn"]:
        parser.error("--variants: *_onednn needs oneDNN's linear, which this torch lacks")
    transitions = random_transitions(cfg.task.id, args.transitions, args.seed)
    runners = {}
    for layers, hidden in sizes:
        sized = make_config(file=args.config, overrides=[
            *args.overrides, f"agent.layers={layers}", f"agent.hidden={hidden}"])
        runners[f"{layers}x{hidden}"] = Runner(sized, transitions, args.seed)
    keys = [(size, name, variant) for size in runners
            for name, variant in zip(variant_names, args.variants, strict=True)]
    for size, _, variant in keys:  # first calls pay one-off costs
        apply_variant(*variant, choice)
        runners[size].timed_round(0.5)
    rounds: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for index in range(args.rounds):
        for size, name, variant in (keys if index % 2 == 0 else keys[::-1]):
            apply_variant(*variant, choice)
            rounds[(size, name)].append(runners[size].timed_round(args.seconds))
        print(f"round {index + 1}/{args.rounds} done", file=sys.stderr)
    result = {"command": command_line(), "config": str(Path(args.config)),
              "overrides": args.overrides, "task": cfg.task.id, "algo": cfg.agent.algo,
              "batch_size": cfg.agent.batch_size, "particles": cfg.agent.particles,
              "actor_interval": cfg.agent.actor_interval, "rounds": args.rounds,
              "seconds": args.seconds, "cpu_vendor": linear_module.cpu_vendor(),
              "onednn_chosen_here": choice["chosen"], "onednn_available": choice["onednn"],
              "machine": machine(), "torch": torch.__version__,
              "sizes": summarise(rounds, runners, variant_names)}
    if args.profile_updates > 0:
        apply_variant(*args.variants[0], choice)
        result["operators"] = {
            size: {"variant": variant_names[0], "updates": args.profile_updates,
                   "top": operator_shares(runner, args.profile_updates)}
            for size, runner in runners.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json_text(result) + "\n")
    print(table(result["sizes"]))
    for size, profiled in result.get("operators", {}).items():
        print(f"{size}, {profiled['variant']}: operators by their own share of the CPU time")
        for entry in profiled["top"]:
            print(f"  {entry['self_cpu_share']:6.1%}  {entry['calls_per_update']:6.1f}/update"
                  f"  {entry['operator']}")
    print(f"written: {out}")


def summarise(rounds, runners, variant_names) -> dict:
    """Per size and variant: medians over rounds, and the speed relative to the first variant
    (its update time over this one's, round by round)."""
    sizes = {}
    for size in runners:
        base = [r["update"] for r in rounds[(size, variant_names[0])]]
        sizes[size] = {}
        for name in variant_names:
            measured = rounds[(size, name)]
            parts = {part: statistics.median(r[part] for r in measured)
                     for part in measured[0] if part != "update"}
            sizes[size][name] = {
                "update_ms": statistics.median(r["update"] for r in measured),
                "speed_vs_first": statistics.median(
                    b / r["update"] for b, r in zip(base, measured, strict=True)),
                "parts_ms": parts,
                "rounds_update_ms": [r["update"] for r in measured]}
    return sizes


def table(sizes: dict) -> str:
    lines = []
    for size, variants in sizes.items():
        parts = list(next(iter(variants.values()))["parts_ms"])
        lines.append(f"{size}: ms per update (parts: an average per update)")
        lines.append(f"{'variant':24} {'update':>7} {'speed':>6} "
                     + " ".join(f"{p[:12]:>12}" for p in parts))
        for name, v in variants.items():
            lines.append(f"{name:24} {v['update_ms']:7.2f} {v['speed_vs_first']:5.2f}x "
                         + " ".join(f"{v['parts_ms'][p]:12.2f}" for p in parts))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
