#!/usr/bin/env bash
# Put the `fpmd-train` command into a virtual environment: VENV/bin/fpmd-train, a symbolic link to
# this checkout's scripts/fpmd-train. Run by scripts/bootstrap.sh on every call (cheap, idempotent).
#   usage: scripts/install_fpmd_train.sh VENV
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 VENV" >&2; exit 2; }
venv_bin="$1/bin"
launcher="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/fpmd-train"
[[ -d "$venv_bin" ]] || { echo "install_fpmd_train: ERROR: $venv_bin is not a folder" >&2; exit 1; }
[[ -x "$launcher" ]] || { echo "install_fpmd_train: ERROR: $launcher is not executable" >&2; exit 1; }
if [[ "$(readlink "$venv_bin/fpmd-train" 2>/dev/null || true)" != "$launcher" ]]; then
    ln -sfn "$launcher" "$venv_bin/fpmd-train"
fi
