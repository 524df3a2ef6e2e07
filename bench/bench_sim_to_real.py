"""Sim-to-real benchmark (issue 15): a robot policy trained with and without domain randomisation,
evaluated under perturbed physics and sensing it was not trained on exactly.

    python -m bench.bench_sim_to_real [--task sim/arm_reach.yaml] [--steps 8000] [--episodes 20]
        [--out bench/results/sim_to_real.json]

Two policies are trained in-process (`fpmd-train`, `cpu` profile, FPMD-R, same seed and steps):
one on the task file as it is, one on a copy with a randomisation section and observation noise
(`RANDOMIZED`, written next to the run). Each is then evaluated in deploy mode (the exported
ONNX policy, NFE = 1) on `--episodes` seeded episodes under each condition of `CONDITIONS`:
friction x0.5 and x1.5, link masses -20 % and +20 %, observation noise, an action delay of 1 and of
2 control steps, and all of the worst ones at once. Reported: mean final goal distance (cm) and
mean return per policy and condition, in a JSON summary and a markdown table (docs/benchmarks.md).
With `--from-summary` the table is re-made from a summary without training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RANDOMIZED = {
    'randomization': {'friction': [0.5, 1.5], 'link_mass': [0.8, 1.2], 'kp_scale': [0.9, 1.1],
                      'kd_scale': [0.9, 1.1], 'action_delay': [0, 2]},
    'noise': {'joint_pos': 0.01, 'joint_vel': 0.1},
}
"""What the randomised policy trains with (the ranges cover every condition below)."""
NOISE = {'joint_pos': 0.01, 'joint_vel': 0.1}
CONDITIONS = {
    'nominal': {},
    'friction x0.5': {'friction': (0.5, 0.5)},
    'friction x1.5': {'friction': (1.5, 1.5)},
    'mass -20%': {'link_mass': (0.8, 0.8)},
    'mass +20%': {'link_mass': (1.2, 1.2)},
    'obs noise': {'noise': NOISE},
    'delay 1 step': {'action_delay': (1, 1)},
    'delay 2 steps': {'action_delay': (2, 2)},
    'all (x0.5, +20%, noise, delay 2)': {'friction': (0.5, 0.5), 'link_mass': (1.2, 1.2),
                                         'noise': NOISE, 'action_delay': (2, 2)},
}


def randomized_task_file(task: Path, directory: Path) -> Path:
    """A copy of ``task`` with ``RANDOMIZED`` (the model path made absolute)."""
    data = yaml.safe_load(task.read_text())
    data['model'] = str((task.parent / data['model']).resolve())
    data['randomization'] = {**data.get('randomization', {}), **RANDOMIZED['randomization']}
    for term in data['observations']:
        if term['term'] in RANDOMIZED['noise']:
            term['noise'] = RANDOMIZED['noise'][term['term']]
    path = directory / f'{task.stem}_randomized.yaml'
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def train(task: Path, steps: int, seed: int, out: Path) -> dict:
    command = [sys.executable, '-m', 'fpmd_core.cli', '--profile', 'cpu',
               '--set', f'task.id={task}', '--set', 'agent.algo=fpmd_r',
               '--set', f'trainer.total_steps={steps}', '--set', f'trainer.seed={seed}',
               '--set', f'trainer.eval_interval={max(steps // 4, 1000)}',
               '--set', f'trainer.output_dir={out}', '--set', 'trainer.progress=false']
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=None)
    if result.returncode != 0:
        raise SystemExit(f'training failed ({" ".join(command)}):\n{result.stderr[-3000:]}')
    return {'command': ' '.join(command), 'wall_s': time.perf_counter() - start,
            'policy': str(out / 'policy.onnx')}


def condition_env(task: Path, condition: dict):
    import gymnasium as gym

    from fpmd_core.robots import RobotEnv, load_task
    from fpmd_core.tasks import Float32Observations

    spec = load_task(task)
    # Evaluation conditions replace the training randomisation: each is one fixed perturbation.
    randomization = dataclasses.replace(
        type(spec.randomization)(), **{k: v for k, v in condition.items() if k != 'noise'})
    noise = condition.get('noise', {})
    observations = tuple(dataclasses.replace(t, noise=noise.get(t.term, 0.0))
                         for t in spec.observations)
    spec = dataclasses.replace(spec, randomization=randomization, observations=observations)
    env = RobotEnv(spec)
    return Float32Observations(gym.wrappers.TimeLimit(env, spec.episode_steps))


def evaluate(policy_path: str, task: Path, condition: dict, episodes: int) -> dict:
    from fpmd_core.runtime import OnnxPolicy

    policy = OnnxPolicy(policy_path)
    env = condition_env(task, condition)
    distances, returns = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + episode)
        total, done, info = 0.0, False, {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total += reward
            done = terminated or truncated
        distances.append(100.0 * info['goal_distance'])
        returns.append(total)
    return {'final_goal_distance_cm': float(np.mean(distances)),
            'final_goal_distance_cm_median': float(np.median(distances)),
            'return': float(np.mean(returns)), 'return_std': float(np.std(returns))}


def table(summary: dict) -> str:
    names = list(summary['policies'])
    lines = ['| condition | ' + ' | '.join(f'{n}: final distance (cm) / return' for n in names)
             + ' |', '|---|' + '---|' * len(names)]
    for condition in summary['conditions']:
        cells = []
        for name in names:
            r = summary['results'][name][condition]
            cells.append(f"{r['final_goal_distance_cm']:.2f} / {r['return']:.1f}")
        lines.append(f'| {condition} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--task', default='sim/arm_reach.yaml')
    parser.add_argument('--steps', type=int, default=8000)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--episodes', type=int, default=20)
    parser.add_argument('--out', default='bench/results/sim_to_real.json')
    parser.add_argument('--from-summary', action='store_true',
                        help='print the table of --out without training')
    args = parser.parse_args(argv)
    if args.from_summary:
        print(table(json.loads(Path(args.out).read_text())))
        return 0
    task = (ROOT / args.task).resolve() if not Path(args.task).is_absolute() else Path(args.task)
    work = Path(tempfile.mkdtemp(prefix='sim_to_real_'))
    variants = {'nominal training': task,
                'randomised training': randomized_task_file(task, work)}
    summary = {'command': 'python -m bench.bench_sim_to_real ' + ' '.join(
        sys.argv[1:] if argv is None else argv), 'task': args.task, 'steps': args.steps,
        'seed': args.seed, 'episodes': args.episodes, 'randomised_with': RANDOMIZED,
        'conditions': {k: {kk: (list(vv) if isinstance(vv, tuple) else vv)
                           for kk, vv in v.items()} for k, v in CONDITIONS.items()},
        'policies': {}, 'results': {}}
    for name, variant in variants.items():
        print(f'training {name} ({variant}), {args.steps} steps ...', flush=True)
        summary['policies'][name] = train(variant, args.steps, args.seed,
                                          work / name.replace(' ', '_'))
        summary['results'][name] = {}
        for condition, settings in CONDITIONS.items():
            result = evaluate(summary['policies'][name]['policy'], task, settings,
                              args.episodes)
            summary['results'][name][condition] = result
            print(f'  {name:20s} {condition:34s} {result["final_goal_distance_cm"]:6.2f} cm '
                  f'return {result["return"]:8.2f}', flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + '\n')
    print(table(summary))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
