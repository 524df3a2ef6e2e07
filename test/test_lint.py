"""The code base is ruff-clean (configuration: ruff.toml at the repository root)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT_PATHS = ['fpmd_core', 'fpmd_ros', 'launch', 'test', 'bench', 'scripts', 'setup.py']


def test_ruff_clean():
    pytest.importorskip('ruff', reason='ruff is pinned in constraints.txt; run ./fpmd test')
    paths = [p for p in LINT_PATHS if os.path.exists(os.path.join(REPO_ROOT, p))]
    result = subprocess.run(
        [sys.executable, '-m', 'ruff', 'check', '--no-cache', '--output-format', 'concise',
         *paths],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, (
        f'ruff check {" ".join(paths)} found problems:\n{result.stdout}{result.stderr}')
