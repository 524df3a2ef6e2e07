"""A picture of a robot task: the robot in its default pose (the goal marked for reaching).

    python -m fpmd_core.robots.preview sim/arm_reach.yaml sim/images/arm_reach.png

Rendered offscreen (MUJOCO_GL egl or osmesa on a headless machine) through
fpmd_core.rendering, from the model's first camera, or a view of the whole robot if it has none.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mujoco
import numpy as np

from ..rendering import Camera
from .env import RobotEnv
from .schema import load_task


def render_task(task_file: str, width: int = 640, height: int = 480, settle_steps: int = 25,
                seed: int = 0) -> np.ndarray:
    """An RGB image (height, width, 3) of the robot after `settle_steps` steps at its default
    pose (zero normalised action)."""
    env = RobotEnv(load_task(task_file))
    env.reset(seed=seed)
    for _ in range(settle_steps):
        env.step(env.action_center)
    camera = Camera(env.model, width, height, 0 if env.model.ncam else -1, fast=False)
    try:
        renderer = camera._renderer
        scene_camera = camera.camera if env.model.ncam else _whole_robot_view(env)
        renderer.update_scene(env.data, camera=scene_camera)
        if env.task.command.kind == "goal_position":
            _mark_goal(renderer.scene, env.command)
        return renderer.render().copy()
    finally:
        camera.close()


def _whole_robot_view(env: RobotEnv) -> mujoco.MjvCamera:
    view = mujoco.MjvCamera()
    view.type = mujoco.mjtCamera.mjCAMERA_FREE
    # Frame the robot's bodies, not the model's extent (which a floor makes metres wide).
    bodies = env.data.xpos[1:]
    view.lookat[:] = (bodies.min(axis=0) + bodies.max(axis=0)) / 2
    view.distance = 3.0 * max(float(np.ptp(bodies, axis=0).max()), 0.2)
    view.azimuth, view.elevation = 135.0, -20.0
    return view


def _mark_goal(scene: mujoco.MjvScene, goal: np.ndarray) -> None:
    if scene.ngeom >= scene.maxgeom:
        return
    mujoco.mjv_initGeom(scene.geoms[scene.ngeom], mujoco.mjtGeom.mjGEOM_SPHERE,
                        np.array([0.02, 0.0, 0.0]), goal, np.eye(3).ravel(),
                        np.array([0.1, 0.9, 0.1, 0.8], dtype=np.float32))
    scene.ngeom += 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpmd_core.robots.preview",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task_file")
    parser.add_argument("png")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args(argv)
    from PIL import Image

    image = render_task(args.task_file, args.width, args.height)
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(args.png)
    print(args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
