"""ROS resource URIs in a robot model: ``package://<package>/<path>`` and ``file://<path>``.

A URDF from a ROS description package names its meshes by package (``package://my_robot_description
/meshes/base.stl``), which MuJoCo cannot open. The model's asset file names (meshes, height fields,
skins, textures) are rewritten to files before it compiles, found as ROS finds them, without
importing ROS: ``<prefix>/share/<package>`` for each prefix of ``AMENT_PREFIX_PATH`` (a sourced
ROS 2 workspace or distro), else the nearest folder above the model whose ``package.xml`` names the
package (a description package used from its source checkout).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import mujoco

PACKAGE_SCHEME = "package://"
FILE_SCHEME = "file://"
_PACKAGE_NAME = re.compile(r"<name>\s*([^<\s]+)\s*</name>")


class PackageError(ValueError):
    """A ``package://`` URI whose package is nowhere to be found."""


def asset_files(spec: mujoco.MjSpec) -> Iterator[tuple[object, str, str, int | None]]:
    """(element, kind, file name, cube face or None) of every file name a model's assets give,
    skipping empty ones."""
    for kind, group in (("mesh", spec.meshes), ("hfield", spec.hfields), ("skin", spec.skins)):
        for element in group:
            if element.file:
                yield element, kind, element.file, None
    for texture in spec.textures:
        if texture.file:
            yield texture, "texture", texture.file, None
        for face, name in enumerate(texture.cubefiles):
            if name:
                yield texture, "texture", name, face


def resolve_uri(uri: str, model_path: Path,
                environ: Mapping[str, str] = os.environ) -> Path | None:
    """The file a ``package://`` or ``file://`` URI names (PackageError where the package is
    not found); None for a plain file name, which MuJoCo resolves itself."""
    if uri.startswith(FILE_SCHEME):
        return Path(uri[len(FILE_SCHEME):])
    if not uri.startswith(PACKAGE_SCHEME):
        return None
    package, _, relative = uri[len(PACKAGE_SCHEME):].partition("/")
    if not package or not relative:
        raise PackageError(f"{uri!r}: expected package://<package>/<path>")
    prefixes = [p for p in environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for prefix in prefixes:
        share = Path(prefix) / "share" / package
        if share.is_dir():
            return share / relative
    for folder in model_path.resolve().parents:
        manifest = folder / "package.xml"
        if manifest.is_file():
            match = _PACKAGE_NAME.search(manifest.read_text(errors="replace"))
            if match and match.group(1) == package:
                return folder / relative
    searched = ", ".join(f"{p}/share" for p in prefixes) or "none (AMENT_PREFIX_PATH is unset)"
    raise PackageError(
        f"{uri!r}: no package {package!r} found: not in the share folder of any AMENT_PREFIX_PATH "
        f"prefix ({searched}), nor a folder above {model_path} whose package.xml names it; "
        "source the workspace that has the package, or keep the model inside the package's "
        "source folder")


def asset_uri_file(spec: mujoco.MjSpec, name: str, model_path: Path,
                   environ: Mapping[str, str] = os.environ) -> Path | None:
    """The file an asset name of `spec` (loaded from `model_path`) names as a URI
    (`resolve_uri`), or None: a plain name, or any name of a model that strips paths (compiler
    ``strippath``), whose bare file name MuJoCo looks up in its meshdir itself."""
    return None if spec.strippath else resolve_uri(name, model_path, environ)


def resolve_package_uris(spec: mujoco.MjSpec, model_path: Path,
                         environ: Mapping[str, str] = os.environ) -> None:
    """Rewrite the ``package://`` and ``file://`` asset file names of `spec` (loaded from
    `model_path`) to the files they name (`asset_uri_file`; PackageError naming the asset
    otherwise)."""
    for element, kind, name, face in asset_files(spec):
        try:
            path = asset_uri_file(spec, name, model_path, environ)
        except PackageError as err:
            label = f" {element.name!r}" if element.name else ""
            raise PackageError(f"{kind}{label}: {err}") from None
        if path is None:
            continue
        if face is None:
            element.file = str(path)
        else:
            faces = list(element.cubefiles)
            faces[face] = str(path)
            element.cubefiles = faces
