"""Package metadata and the colcon install tree."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL = os.path.join(REPO_ROOT, 'install', 'fpmd_ros')

EXEC_DEPENDS = {
    'rclpy', 'std_msgs', 'sensor_msgs', 'std_srvs', 'diagnostic_msgs', 'lifecycle_msgs',
    'rosgraph_msgs', 'geometry_msgs', 'python3-torch', 'python3-numpy', 'python3-mujoco-pip',
    'python3-gymnasium-pip', 'python3-onnxruntime-pip', 'python3-onnx-pip',
    'python3-dm-control-pip', 'python3-yaml', 'python3-matplotlib', 'python3-tqdm',
    'python3-tensorboard',
}


@pytest.fixture(scope='module')
def package():
    from catkin_pkg.package import parse_package

    return parse_package(os.path.join(REPO_ROOT, 'package.xml'))


def test_package_xml_is_valid(package):
    package.validate()  # raises InvalidPackage on any problem
    assert package.name == 'fpmd_ros'
    assert package.package_format == 3
    assert package.version == '0.1.0'
    assert package.licenses == ['Apache-2.0']
    assert [d.name for d in package.buildtool_depends] == ['ament_python']
    assert package.get_build_type() == 'ament_python'
    assert 'python3-pytest' in {d.name for d in package.test_depends}


def test_package_xml_exec_depends(package):
    declared = {d.name for d in package.exec_depends}
    assert EXEC_DEPENDS <= declared, f'missing exec_depend: {sorted(EXEC_DEPENDS - declared)}'


def test_setup_cfg_installs_scripts_into_lib_package():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(os.path.join(REPO_ROOT, 'setup.cfg'))
    assert cfg.get('develop', 'script_dir') == '$base/lib/fpmd_ros'
    assert cfg.get('install', 'install_scripts') == '$base/lib/fpmd_ros'


def test_setup_py_metadata():
    out = subprocess.run(
        [sys.executable, 'setup.py', '--name', '--version'], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ['fpmd_ros', '0.1.0']


def test_version_matches_between_package_xml_and_setup_py(package):
    with open(os.path.join(REPO_ROOT, 'setup.py')) as f:
        assert f"version='{package.version}'" in f.read()


@pytest.mark.skipif(not os.path.isdir(INSTALL), reason='no colcon install tree (run ./fpmd test)')
def test_colcon_install_tree():
    share = os.path.join(INSTALL, 'share')
    assert os.path.isfile(os.path.join(share, 'fpmd_ros', 'package.xml'))
    assert os.path.isfile(
        os.path.join(share, 'ament_index', 'resource_index', 'packages', 'fpmd_ros'))
    script = os.path.join(INSTALL, 'lib', 'fpmd_ros', 'fpmd-train')
    assert os.path.isfile(script) and os.access(script, os.X_OK), f'{script} missing'
