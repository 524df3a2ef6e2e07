"""Paths and child-process settings the benchmark scripts share."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a child it starts, with the repository importable there
    (the child may run from another directory), plus `overrides`."""
    env = dict(os.environ, **overrides)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env



def command_line() -> str:
    """How this run was started, as the command that repeats it from the repository root
    (recorded in every result file, so each number there names the command behind it)."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    script = ["-m", spec.name] if spec is not None else [sys.argv[0]]
    return shlex.join(["python", *script, *sys.argv[1:]])


def require_checkpoints(parser, paths: list[Path]) -> None:
    """parser.error naming every path in `paths` that is not a file."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such checkpoint: {', '.join(missing)}")


def write_results(path: Path, results: list) -> None:
    """`results` as JSON at `path` with the command that made them (`command_line`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command_line(), "results": results}, indent=2))
    print(f"written: {path}")


def json_text(data, indent: int = 2, _level: int = 0) -> str:
    """JSON as json.dumps(indent=2) writes it, but with a list of numbers (or of a few short
    strings) on one line: curves of hundreds of points stay readable and small in a summary."""
    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(data, dict) and data:
        items = [f"{inner}{json.dumps(str(key))}: {json_text(value, indent, _level + 1)}"
                 for key, value in data.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(data, (list, tuple)) and (
            any(isinstance(v, (dict, list, tuple)) for v in data)
            or (any(isinstance(v, str) for v in data) and len(json.dumps(data)) > 100)):
        items = [f"{inner}{json_text(value, indent, _level + 1)}" for value in data]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(data)
