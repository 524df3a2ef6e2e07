"""Issue 6 benchmark: camera frames/s of `fpmd_core.rendering.Camera.render`, per OpenGL backend.

    python -m bench.bench_render --out bench/results/render.json

Each round runs, for each backend (MUJOCO_GL=egl, osmesa), a subprocess of its own (MuJoCo reads
MUJOCO_GL once, at import) that renders 84x84 frames of each task with the fast visuals pixel
tasks and sim nodes use (no shadows, no multisampling) and with MuJoCo's default visuals. Rounds
alternate the backends, so machine noise hits all alike. The physics steps between frames (not
timed), so every frame shows a new state. Reports the median frames/s over the rounds and the GL
renderer that drew them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import child_env, command_line

BACKENDS = ("egl", "osmesa")
TASKS = ("cartpole-swingup", "cheetah-run")
VISUALS = {"fast": True, "default": False}


def measure(args) -> dict:
    """In the worker process (MUJOCO_GL already set): frames/s of every task and visuals."""
    import numpy as np

    from fpmd_core.rendering import Camera
    from fpmd_core.tasks import default_camera, make_env, mujoco_handles

    # One env per (task, visuals): fast=True changes the model's visual quality for good.
    setups = {}
    for task in args.tasks:
        for visuals, fast in VISUALS.items():
            env = make_env(task, normalized_actions=False)
            env.reset(seed=0)
            model, data = mujoco_handles(env)
            camera = Camera(model, args.size, args.size, default_camera(task), fast=fast)
            setups[task, visuals] = (env, data, camera)
    renderer = _gl_renderer()
    rng = np.random.default_rng(0)
    rates = {f"{task}/{visuals}": _frames_per_second(env, data, camera, rng, args.seconds)
             for (task, visuals), (env, data, camera) in setups.items()}
    for env, _, camera in setups.values():
        camera.close()
        env.close()
    return {"gl_renderer": renderer, "frames_per_s": rates}


def _frames_per_second(env, data, camera, rng, seconds: float) -> float:
    low, high = env.action_space.low, env.action_space.high
    for _ in range(5):  # warm-up: first frames upload textures and compile shaders
        camera.render(data)
    frames, rendering = 0, 0.0
    while rendering < seconds:
        _, _, terminated, truncated, _ = env.step(rng.uniform(low, high))
        if terminated or truncated:
            env.reset()
        start = time.perf_counter()
        camera.render(data)
        rendering += time.perf_counter() - start
        frames += 1
    return frames / rendering


def _gl_renderer() -> str:
    """GL_RENDERER and GL_VERSION of the context the last Camera made current."""
    try:
        from OpenGL import GL

        return (f"{GL.glGetString(GL.GL_RENDERER).decode()}; "
                f"{GL.glGetString(GL.GL_VERSION).decode()}")
    except Exception as error:  # PyOpenGL missing or no current context: not fatal here
        return f"unknown ({error!r})"


def run_backend(backend: str, args) -> dict:
    """One round in a worker subprocess with MUJOCO_GL=backend: its JSON, or why it failed."""
    env = child_env(MUJOCO_GL=backend)
    command = [sys.executable, "-m", "bench.bench_render", "--worker", "--size", str(args.size),
               "--seconds", str(args.seconds), "--tasks", *args.tasks]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["exit "
                                                                  f"{result.returncode}"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _summary(runs: list[dict], tasks) -> dict:
    """Median frames/s over the rounds of one backend, and every round's numbers."""
    failed = [run["error"] for run in runs if "error" in run]
    if failed:
        return {"error": failed[0]}
    return {"gl_renderer": runs[0]["gl_renderer"],
            "frames_per_s": {task: {visuals: statistics.median(
                run["frames_per_s"][f"{task}/{visuals}"] for run in runs)
                for visuals in VISUALS} for task in tasks},
            "rounds": [run["frames_per_s"] for run in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--size", type=int, default=84, help="image width and height")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="rendering time per task, visuals and round")
    parser.add_argument("--out", default="bench/results/render.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args)))
        return

    rounds = {backend: [] for backend in args.backends}
    for _ in range(args.rounds):
        for backend in args.backends:
            rounds[backend].append(run_backend(backend, args))
    result = {"command": command_line(),
              "size": args.size, "tasks": args.tasks, "rounds": args.rounds,
              "seconds_per_measurement": args.seconds,
              "machine": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "lp_num_threads": os.environ.get("LP_NUM_THREADS", ""),
              "backends": {backend: _summary(runs, args.tasks)
                           for backend, runs in rounds.items()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"Camera.render at {args.size}x{args.size}, frames/s (median of {args.rounds} rounds)")
    print(f"{'backend':8} {'task':18} {'fast':>8} {'default':>8}  renderer")
    for backend, measured in result["backends"].items():
        if "error" in measured:
            print(f"{backend:8} failed: {measured['error']}")
            continue
        for task, rates in measured["frames_per_s"].items():
            print(f"{backend:8} {task:18} {rates['fast']:8.1f} {rates['default']:8.1f}  "
                  f"{measured['gl_renderer']}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
