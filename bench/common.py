"""Paths and child-process settings the benchmark scripts share."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a child it starts, with the repository importable there
    (the child may run from another directory), plus `overrides`."""
    env = dict(os.environ, **overrides)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env

