"""fpmd_core imports, module by module, in an interpreter where ROS cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK = textwrap.dedent('''
    import importlib
    import importlib.abc
    import pkgutil
    import sys

    BLOCKED = ('rclpy', 'std_msgs', 'sensor_msgs', 'rosidl')

    def is_ros(name):
        top = name.split('.')[0]
        return top.startswith(BLOCKED)

    class BlockRos(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if is_ros(fullname):
                raise ImportError(f'ROS import blocked in fpmd_core: {fullname}')
            return None

    sys.meta_path.insert(0, BlockRos())
    sys.path.insert(0, sys.argv[1])

    import fpmd_core

    imported = ['fpmd_core']
    errors = []
    def onerror(name):
        errors.append((name, repr(sys.exc_info()[1])))
    for info in pkgutil.walk_packages(fpmd_core.__path__, 'fpmd_core.', onerror=onerror):
        try:
            importlib.import_module(info.name)
            imported.append(info.name)
        except Exception as exc:  # report every failing module, not only the first
            errors.append((info.name, repr(exc)))
    leaked = sorted(m for m in sys.modules if is_ros(m))
    print('imported:', len(imported), 'modules')
    for name, err in errors:
        print('FAILED', name, err)
    if leaked:
        print('ROS modules loaded:', leaked)
    sys.exit(1 if errors or leaked else 0)
''')


def test_fpmd_core_imports_without_ros():
    if not os.path.isfile(os.path.join(REPO_ROOT, 'fpmd_core', '__init__.py')):
        pytest.skip('fpmd_core/ does not exist in this checkout yet')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH',)}
    result = subprocess.run(
        [sys.executable, '-c', CHECK, REPO_ROOT], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f'{result.stdout}\n{result.stderr}'
    assert 'imported:' in result.stdout
