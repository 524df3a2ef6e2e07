"""fpmd_core: Flow Policy Mirror Descent and its baselines, without ROS.

Data flows one way: `tasks` make environments, `agents` act and learn (with `policies`,
`replay`), `trainer` runs the loop and writes `checkpoint`s, `export` writes the one-step
policy to ONNX and `runtime` runs it.
"""

import os

__version__ = "0.1.0"


def use_headless_backend() -> str:
    """`MUJOCO_GL` as MuJoCo will use it: the user's value, else egl when there is no display.

    MuJoCo reads `MUJOCO_GL` once, when it is imported, so this runs when fpmd_core is imported
    (before any of its modules imports mujoco). Import fpmd_core before mujoco, or set
    `MUJOCO_GL` (egl or osmesa) yourself.
    """
    if not os.environ.get("MUJOCO_GL") and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"
    return os.environ.get("MUJOCO_GL", "glfw")


use_headless_backend()
