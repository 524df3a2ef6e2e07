"""Package metadata, the colcon install tree, and the `fpmd-train` command."""

from __future__ import annotations

import ast
import configparser
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL = os.path.join(REPO_ROOT, 'install', 'fpmd_ros')
NODES = ['mujoco_sim', 'policy_controller', 'trainer']

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
    lib = os.path.join(INSTALL, 'lib', 'fpmd_ros')
    for node in NODES:
        script = os.path.join(lib, node)
        assert os.path.isfile(script) and os.access(script, os.X_OK), f'{script} missing'
    # `ros2 run fpmd_ros` lists what is here as the package's nodes: fpmd-train is not one.
    assert not os.path.exists(os.path.join(lib, 'fpmd-train'))


def test_setup_py_installs_only_the_ros_nodes():
    with open(os.path.join(REPO_ROOT, 'setup.py')) as f:
        tree = ast.parse(f.read())
    scripts = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                   if isinstance(node, ast.Assign) and
                   getattr(node.targets[0], 'id', '') == 'CONSOLE_SCRIPTS')
    assert sorted(entry.split(' = ')[0] for entry in scripts) == NODES


# --- fpmd-train on the venv's PATH ---------------------------------------------------------------

@pytest.fixture
def venv_bin(tmp_path):
    """A stand-in for .venv/bin: `python` runs this test's interpreter (its packages)."""
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    python = venv / 'bin' / 'python'
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return venv / 'bin'


def install_fpmd_train(venv_bin):
    return subprocess.run(
        ['bash', os.path.join(REPO_ROOT, 'scripts', 'install_fpmd_train.sh'),
         str(venv_bin.parent)], capture_output=True, text=True, timeout=60)


def render_libraries_present() -> bool:
    """What bootstrap.sh checks first: as root, with some missing, it would apt-get them."""
    import ctypes.util
    import glob

    libraries = ('OSMesa', 'EGL', 'EGL_mesa', 'GL', 'gbm')
    return all(ctypes.util.find_library(name) for name in libraries) and bool(
        glob.glob('/usr/lib/*/dri/swrast_dri.so') or glob.glob('/usr/lib*/dri/swrast_dri.so'))


@pytest.mark.skipif(os.geteuid() == 0 and not render_libraries_present(),
                    reason='bootstrap.sh would install the rendering libraries (root, missing)')
def test_bootstrap_of_an_up_to_date_venv_links_fpmd_train(venv_bin, tmp_path):
    """The venv of an earlier bootstrap gets the command on the next one (./fpmd shell runs it),
    without a reinstall: a copy of the checkout's scripts with a venv whose stamp matches."""
    import hashlib
    import platform
    import shutil

    root = venv_bin.parent.parent / 'checkout'
    (root / 'scripts').mkdir(parents=True)
    for name in ('bootstrap.sh', 'install_fpmd_train.sh', 'fpmd-train'):
        shutil.copy2(os.path.join(REPO_ROOT, 'scripts', name), root / 'scripts' / name)
    shutil.copy2(os.path.join(REPO_ROOT, 'constraints.txt'), root / 'constraints.txt')
    venv_bin.parent.rename(root / '.venv')
    venv_bin = root / '.venv' / 'bin'
    # bootstrap.sh's stamp: constraints.txt, the interpreter, the mode (pip: no ROS distro)
    with open(root / 'constraints.txt', 'rb') as f:
        stamp = f.read() + (f'python={platform.python_implementation()} '
                            f'{platform.python_version()}\nmode=pip\n').encode()
    (root / '.venv' / '.fpmd-stamp').write_text(hashlib.sha256(stamp).hexdigest() + '\n')
    env = {k: v for k, v in os.environ.items() if k not in ('ROS_DISTRO', 'PYTHONPATH')}
    env['FPMD_PYTHON'] = sys.executable
    done = subprocess.run(['bash', str(root / 'scripts' / 'bootstrap.sh')], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'installing' not in done.stderr and 'rebuilding' not in done.stderr, done.stderr
    assert os.readlink(venv_bin / 'fpmd-train') == str(root / 'scripts' / 'fpmd-train')


def test_fpmd_train_runs_from_an_activated_venv_anywhere(venv_bin, tmp_path):
    done = install_fpmd_train(venv_bin)
    assert done.returncode == 0, done.stderr
    link = venv_bin / 'fpmd-train'
    assert os.readlink(link) == os.path.join(REPO_ROOT, 'scripts', 'fpmd-train')
    assert install_fpmd_train(venv_bin).returncode == 0  # again: nothing changes
    assert os.readlink(link) == os.path.join(REPO_ROOT, 'scripts', 'fpmd-train')
    # As after `source .venv/bin/activate`: the venv's bin first on PATH, no PYTHONPATH, in a
    # folder outside the checkout; the command is found by name.
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['PATH'] = f'{venv_bin}{os.pathsep}{env.get("PATH", "")}'
    work = tmp_path / 'elsewhere'
    work.mkdir()
    shown = subprocess.run(['fpmd-train', '--help'], cwd=work, env=env, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith('usage: fpmd-train ')
    assert '--profile {cpu,cpu_pixels,paper,paper_pixels}' in shown.stdout
    refused = subprocess.run(['fpmd-train', '--profile', 'cpu', '--set', 'agent.particle=8'],
                             cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr == ('fpmd-train: configuration error: agent.particle: unknown field '
                              '(did you mean agent.particles?)\n')
    assert not list(work.iterdir())  # nothing written where it ran
