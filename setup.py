"""Build script for the fpmd_ros ament_python package (repository root)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = 'fpmd_ros'
HERE = os.path.dirname(os.path.abspath(__file__))


def _tree_data_files(src_dir, dest_prefix):
    """Map every file below ``src_dir`` to ``dest_prefix``, keeping subfolders."""
    entries = []
    root = os.path.join(HERE, src_dir)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != '__pycache__')
        files = sorted(
            os.path.relpath(os.path.join(dirpath, f), HERE)
            for f in filenames
            if f != '.gitkeep'
        )
        if files:
            rel = os.path.relpath(dirpath, root)
            dest = dest_prefix if rel == '.' else os.path.join(dest_prefix, rel)
            entries.append((dest, files))
    return entries


def _glob(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob(os.path.join(HERE, pattern)))


share = os.path.join('share', PACKAGE_NAME)
data_files = [
    ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE_NAME]),
    (share, ['package.xml']),
    (os.path.join(share, 'launch'), _glob('launch/*.launch.py')),
    (os.path.join(share, 'config'), _glob('config/*.yaml')),
    *_tree_data_files('sim', os.path.join(share, 'sim')),
]

# ---------------------------------------------------------------------------
# The ROS nodes, installed into lib/fpmd_ros (see setup.cfg), where `ros2 run fpmd_ros` finds
# and lists them. Only nodes belong here: the in-process trainer `fpmd-train` is not one; it is
# scripts/fpmd-train, which scripts/bootstrap.sh links into .venv/bin.
# ---------------------------------------------------------------------------
CONSOLE_SCRIPTS = [
    'mujoco_sim = fpmd_ros.sim_node:main',
    'policy_controller = fpmd_ros.controller_node:main',
    'trainer = fpmd_ros.trainer_node:main',
]

setup(
    name=PACKAGE_NAME,
    version='0.1.0',
    packages=find_packages(include=['fpmd_core*', 'fpmd_ros*']),
    data_files=data_files,
    install_requires=['setuptools'],
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='FPMD ROS Maintainers',
    maintainer_email='maintainer@fpmd-ros.org',
    description='Flow Policy Mirror Descent trained and deployed over ROS 2 with MuJoCo.',
    license='Apache-2.0',
    python_requires='>=3.10',
    entry_points={'console_scripts': CONSOLE_SCRIPTS},
)
