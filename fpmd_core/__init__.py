"""fpmd_core: Flow Policy Mirror Descent and its baselines, without ROS.

Data flows one way: `tasks` make environments, `agents` act and learn (with `policies`,
`replay`), `trainer` runs the loop and writes `checkpoint`s, `export` writes the one-step
policy to ONNX and `runtime` runs it.
"""

import ctypes.util
import os
from collections.abc import Callable

__version__ = "0.1.0"


def headless_backend(find_library: Callable[[str], str | None] = ctypes.util.find_library) -> str:
    """The offscreen backend for a machine without a display: egl, else osmesa, else disable.

    mujoco imports the chosen backend's library when it is imported itself, so naming one that
    is not installed breaks `import mujoco` even for state-only work (a GPU server without
    libEGL, say). "disable" keeps simulation working; rendering then fails with a RenderError
    that names the packages to install.
    """
    if find_library("EGL"):
        return "egl"
    if find_library("OSMesa"):
        return "osmesa"
    return "disable"


def use_headless_backend() -> str:
    """`MUJOCO_GL` as MuJoCo will use it: the user's value, else `headless_backend()` when there
    is no display.

    MuJoCo reads `MUJOCO_GL` once, when it is imported, so this runs when fpmd_core is imported
    (before any of its modules imports mujoco). Import fpmd_core before mujoco, or set
    `MUJOCO_GL` (egl or osmesa) yourself.
    """
    if not os.environ.get("MUJOCO_GL") and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = headless_backend()
    return os.environ.get("MUJOCO_GL", "glfw")


use_headless_backend()
