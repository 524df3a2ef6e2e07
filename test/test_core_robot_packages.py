"""package:// and file:// URIs in a robot model (a URDF from a ROS description package): found
as ROS finds them, through AMENT_PREFIX_PATH or the package's source folder, without ROS; the
task builds, and its policies record and check the mesh by its URI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_core_robot_policy import TETRAHEDRON_OBJ, export_arm

from fpmd_core.robots import TaskFileError, robot_metadata
from fpmd_core.robots.packages import PackageError, resolve_uri
from fpmd_core.runtime import OnnxPolicy
from fpmd_core.tasks import env_from_metadata, make_env

REPO_ROOT = Path(__file__).resolve().parent.parent
URI = 'package://my_robot_description/meshes/cap.obj'


def make_package(folder: Path, name: str = 'my_robot_description') -> Path:
    folder.mkdir(parents=True)
    (folder / 'package.xml').write_text(
        f'<?xml version="1.0"?>\n<package format="3">\n  <name>{name}</name>\n</package>\n')
    (folder / 'meshes').mkdir()
    (folder / 'meshes' / 'cap.obj').write_text(TETRAHEDRON_OBJ)
    return folder


def test_a_package_is_found_in_the_first_ament_prefix_that_has_it(tmp_path):
    for prefix in ('a', 'b', 'c'):
        (tmp_path / prefix / 'share').mkdir(parents=True)
    for prefix in ('b', 'c'):
        (tmp_path / prefix / 'share' / 'my_robot_description').mkdir()
    environ = {'AMENT_PREFIX_PATH': os.pathsep.join(str(tmp_path / p) for p in 'abc')}
    assert resolve_uri(URI, tmp_path / 'robot.urdf', environ) == (
        tmp_path / 'b' / 'share' / 'my_robot_description' / 'meshes' / 'cap.obj')


def test_a_package_is_found_above_the_model_by_its_package_xml(tmp_path):
    package = make_package(tmp_path / 'src' / 'description')  # the folder's name differs
    model = package / 'urdf' / 'robot.urdf'
    assert resolve_uri(URI, model, {}) == package / 'meshes' / 'cap.obj'
    with pytest.raises(PackageError, match="no package 'other_pkg' found"):
        resolve_uri('package://other_pkg/meshes/cap.obj', model, {})


def test_file_uris_and_plain_names(tmp_path):
    assert resolve_uri('file:///opt/meshes/cap.obj', tmp_path / 'r.urdf', {}) == Path(
        '/opt/meshes/cap.obj')
    assert resolve_uri('meshes/cap.obj', tmp_path / 'r.urdf', {}) is None


@pytest.mark.parametrize('uri, message', [
    ('package://my_robot_description', r'expected package://<package>/<path>'),
    ('package:///meshes/cap.obj', r'expected package://<package>/<path>'),
    (URI, r"no package 'my_robot_description' found: not in the share folder of any "
          r'AMENT_PREFIX_PATH prefix \(none \(AMENT_PREFIX_PATH is unset\)\), nor a folder above '
          r'.*; source the workspace that has the package'),
])
def test_bad_and_unknown_packages_are_named(tmp_path, uri, message):
    with pytest.raises(PackageError, match=message):
        resolve_uri(uri, tmp_path / 'robot.urdf', {})


@pytest.fixture
def urdf_task_in_package(tmp_path, monkeypatch):
    """The URDF arm inside a description package's source folder, its base showing a mesh by
    package:// URI; AMENT_PREFIX_PATH unset."""
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    package = make_package(tmp_path / 'src' / 'my_robot_description')
    (package / 'urdf').mkdir()
    text = (REPO_ROOT / 'sim' / 'arm3.urdf').read_text()
    mesh = (f'<collision><geometry><mesh filename="{URI}"/></geometry></collision>\n'
            '    <collision>')
    (package / 'urdf' / 'arm3.urdf').write_text(text.replace('<collision>', mesh, 1))
    task = package / 'urdf' / 'arm_reach_urdf.yaml'
    shutil.copy(REPO_ROOT / 'sim' / 'arm_reach_urdf.yaml', task)
    return task


def test_a_urdf_with_package_meshes_builds_and_its_policy_checks_the_mesh(urdf_task_in_package,
                                                                           tmp_path, monkeypatch):
    task = urdf_task_in_package
    env = make_env(str(task))
    try:
        model = env.unwrapped.model
        assert model.nmesh == 1 and model.mesh_vertnum[0] == 4
        env.reset(seed=0)
    finally:
        env.close()
    package = task.parent.parent
    assert set(robot_metadata(task)['model_files']) == {URI}
    policy = OnnxPolicy(export_arm(task, tmp_path / 'arm.onnx'))
    env_from_metadata(policy.metadata).close()
    # A deploy machine with the package installed: the mesh is looked up in its share folder.
    installed = make_package(tmp_path / 'install' / 'share' / 'my_robot_description')
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(tmp_path / 'install'))
    env_from_metadata(policy.metadata).close()
    (installed / 'meshes' / 'cap.obj').write_text(TETRAHEDRON_OBJ.replace('0.02', '0.03'))
    with pytest.raises(TaskFileError, match=rf'file {URI} of model .*arm3.urdf: changed since'):
        env_from_metadata(policy.metadata)
    # Nowhere to be found: the package is named.
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(tmp_path / 'nothing'))
    shutil.move(package / 'package.xml', package / 'package.xml.moved')
    with pytest.raises(TaskFileError, match=rf"file {URI} of model .*no package "
                       r"'my_robot_description' found"):
        env_from_metadata(policy.metadata)


def test_a_missing_package_fails_the_task_by_name(urdf_task_in_package):
    (urdf_task_in_package.parent.parent / 'package.xml').unlink()
    with pytest.raises(TaskFileError, match=rf"model: .*arm3.urdf: mesh 'cap': '{URI}': no "
                       r"package 'my_robot_description' found"):
        make_env(str(urdf_task_in_package))
