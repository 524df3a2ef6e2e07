"""Offscreen camera images of a MuJoCo model: the one renderer of pixel tasks and sim nodes.

The OpenGL backend is chosen by `MUJOCO_GL` (egl or osmesa on a headless machine), which MuJoCo
reads once, at import; `fpmd_core.use_headless_backend` (run when fpmd_core is imported) picks
EGL when nothing is set and there is no display.
"""

from __future__ import annotations

import atexit
import os
import weakref

import mujoco
import numpy as np

_live_cameras: weakref.WeakSet = weakref.WeakSet()
_close_at_exit_registered = False


def _close_live_cameras() -> None:
    for camera in list(_live_cameras):
        camera.close()


class RenderError(RuntimeError):
    """No OpenGL context could be made, or the camera does not exist."""




class UnknownCameraError(RenderError, ValueError):
    """The model has no camera of that id or name."""


def camera_id(model: mujoco.MjModel, camera: int | str) -> int:
    """The id of `camera` in `model`: an id (int or numeric string; -1 is the free camera) or a
    camera name. The one place camera names and ids are resolved."""
    text = str(camera).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not -1 <= index < model.ncam:
            raise UnknownCameraError(f"camera: expected -1 (free camera) or an id in "
                                     f"[0, {model.ncam - 1}], got {index}")
        return index
    # mj_name2id answers -1 for an unknown name, which must not become the free camera.
    index = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, text) if text else -1
    if index < 0:
        names = [model.camera(i).name for i in range(model.ncam)]
        raise UnknownCameraError(f"camera: no camera named {camera!r}; the model has {names}")
    return index


def camera_list(model: mujoco.MjModel) -> str:
    """'0 (fixed), 1 (lookatcart)': the model's cameras, for error messages."""
    return ", ".join(f"{i} ({model.camera(i).name or 'unnamed'})" for i in range(model.ncam))


class Camera:
    """RGB images (H, W, 3) uint8 of one camera of `model`.

    `fast` turns off shadows and multisampling: about 8x more frames per second with the
    software rasteriser (llvmpipe), at a small visual cost. Pixel training and the sim node both
    use this class, so what a policy sees in training is what a sim publishes.
    """

    def __init__(self, model: mujoco.MjModel, width: int = 84, height: int = 84,
                 camera: int | str = 0, fast: bool = True):
        if width < 1 or height < 1:
            raise RenderError(f"image size: expected positive width and height, got "
                              f"{width}x{height}")
        camera = camera_id(model, camera)
        if fast:
            model.vis.quality.shadowsize = 0
            model.vis.quality.offsamples = 0
        # The offscreen buffer bounds the image size; grow it rather than fail.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.width, self.height, self.camera = width, height, camera
        try:
            self._renderer = mujoco.Renderer(model, height, width)
        except Exception as err:  # the GL stack raises many types
            raise RenderError(
                f"cannot create an offscreen OpenGL context with MUJOCO_GL="
                f"{os.environ.get('MUJOCO_GL', '')!r}: {err}. Headless machines need EGL "
                "(apt-get install libegl1 libegl-mesa0 libgl1 libglx-mesa0) or OSMesa "
                "(apt-get install libosmesa6, then MUJOCO_GL=osmesa)") from None
        # MuJoCo's EGL module terminates the display at exit; contexts freed after that print
        # errors. Registered after the first context exists, this runs before it (LIFO).
        global _close_at_exit_registered
        _live_cameras.add(self)
        if not _close_at_exit_registered:
            atexit.register(_close_live_cameras)
            _close_at_exit_registered = True

    def render(self, data: mujoco.MjData) -> np.ndarray:
        self._renderer.update_scene(data, camera=self.camera)
        return self._renderer.render()

    def close(self) -> None:
        renderer, self._renderer = getattr(self, "_renderer", None), None
        if renderer is not None:
            renderer.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the GL library may already be gone
            pass
