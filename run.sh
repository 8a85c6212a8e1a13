#!/usr/bin/env bash
# Sote Studio: install everything on the first run, then start the app.
#
#   ./run.sh [--dry-run] [--reinstall] [app.py flags...]
#
#   --dry-run     print what was detected and the exact commands it would run; install nothing
#   --reinstall   delete .venv and install everything again
#   --help        this text, then app.py's own flags once installed
#   Every other flag goes to app.py: ./run.sh --demo, ./run.sh --mode offload-fp8 --port 7861
#
# Environment:
#   TORCH_COMMAND  how to install PyTorch, run as `python -m $TORCH_COMMAND` inside .venv, e.g.
#                  TORCH_COMMAND="pip install torch --index-url https://download.pytorch.org/whl/cu126"
#   PYTHON         the Python 3.10+ that creates .venv (default: the first one found on PATH)
#
# Steps: 1 find Python, 2 detect the GPU and pick the PyTorch build, 3 create .venv, 4 install
# PyTorch, 5 install requirements.txt; then start app.py. A stamp file in .venv records what was
# installed, so a later start installs nothing unless requirements.txt or the PyTorch choice changed.
# run.bat does the same on Windows, step for step: change both together.

set -u
cd "$(dirname "$0")" || exit 1

VENV=.venv
VENV_PY=$VENV/bin/python
STAMP=$VENV/sote-install.stamp
TORCH_INDEX=https://download.pytorch.org/whl
ROCM_INDEX=rocm6.4
# The driver's highest CUDA version (the "CUDA Version" in nvidia-smi's header) -> the newest
# PyTorch CUDA index not above it. cu121 is left out: its newest torch (2.5.1) is older than
# optimum-quanto's floor (2.6); a 12.1-12.3 driver runs the cu118 build.
CUDA_INDEXES="13.0:cu130 12.8:cu128 12.6:cu126 12.4:cu124 11.8:cu118"
# AMD GPUs that PyTorch's ROCm builds do not target, and the target they run as.
GFX_OVERRIDES="gfx1031:10.3.0 gfx1032:10.3.0 gfx1033:10.3.0 gfx1034:10.3.0 gfx1035:10.3.0 gfx1036:10.3.0 gfx1103:11.0.0 gfx1150:11.0.0 gfx1151:11.0.0"

say() { printf '%s\n' "$*"; }
step() { printf '[%s/5] %-12s %s\n' "$1" "$2" "$3"; }
note() { printf '      %s\n' "$*"; }
fail() {  # step, name, what went wrong, what to do
  printf 'error: step %s/5 (%s) failed: %s\n       %s\n' "$1" "$2" "$3" "$4" >&2
  exit 1
}

DRY_RUN=0 REINSTALL=0 HELP=0
APP_ARGS=()
for arg in "$@"; do
  case $arg in
    --dry-run) DRY_RUN=1 ;;
    --reinstall) REINSTALL=1 ;;
    -h | --help) HELP=1 ;;
    *) APP_ARGS+=("$arg") ;;
  esac
done

if [ "$HELP" = 1 ]; then
  sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
  if [ -x "$VENV_PY" ]; then "$VENV_PY" app.py --help; else say "(app.py's flags are listed once it is installed: run ./run.sh)"; fi
  exit 0
fi

# Run a command line, or only show it with --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then note "would run: $1"; return 0; fi
  note "running: $1"
  eval "$1"
}
quote() { case $1 in *[[:space:]]*) printf '"%s"' "$1" ;; *) printf '%s' "$1" ;; esac; }

# ---- 1. Python -----------------------------------------------------------------------------------
python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; }
python_version() { "$1" -c 'import platform; print(platform.python_version())' 2>/dev/null; }

if [ "$REINSTALL" = 0 ] && [ -e "$VENV" ] && ! python_ok "$VENV_PY"; then
  say "      .venv is broken or too old: it will be made again"
  REINSTALL=1
fi

if [ "$REINSTALL" = 0 ] && [ -e "$VENV" ]; then
  PY=$VENV_PY
  step 1 Python "$VENV_PY ($(python_version "$VENV_PY"), in .venv)"
else
  PY=""
  if [ -n "${PYTHON:-}" ]; then
    python_ok "$PYTHON" || fail 1 Python "PYTHON=$PYTHON is not a Python 3.10 or newer" \
      "Set PYTHON to a python3.10 (or newer) executable, or unset it."
    PY=$PYTHON
  else
    for candidate in python3 python python3.13 python3.12 python3.11 python3.10; do
      if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then PY=$(command -v "$candidate"); break; fi
    done
  fi
  [ -n "$PY" ] || fail 1 Python "no Python 3.10 or newer found on PATH" \
    "Install one (Debian/Ubuntu: sudo apt install python3 python3-venv; Fedora: sudo dnf install python3; macOS: https://www.python.org or brew install python@3.12), or set PYTHON=/path/to/python3."
  "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || fail 1 Python "$PY cannot create virtual environments (no venv/ensurepip module)" \
    "Install the venv package (Debian/Ubuntu: sudo apt install python3-venv, or python3.X-venv for your version), then run ./run.sh again."
  step 1 Python "$PY ($(python_version "$PY"))"
fi

# ---- 2. Accelerator -> PyTorch build -------------------------------------------------------------
version_number() { local major=${1%%.*} minor=${1#*.}; minor=${minor%%.*}; echo $((10#$major * 100 + 10#$minor)); }

cuda_index() {  # 12.8 -> cu128: the first (newest) index in CUDA_INDEXES the driver can run
  local have pair
  have=$(version_number "$1")
  for pair in $CUDA_INDEXES; do
    if [ "$have" -ge "$(version_number "${pair%%:*}")" ]; then say "${pair#*:}"; return 0; fi
  done
  return 1
}

gfx_override() {  # gfx1031 -> 10.3.0 when PyTorch's ROCm builds need HSA_OVERRIDE_GFX_VERSION for it
  local pair
  for pair in $GFX_OVERRIDES; do
    if [ "${pair%%:*}" = "$1" ]; then say "${pair#*:}"; return 0; fi
  done
  return 1
}

# The display adapters lspci lists ("VGA compatible controller", "3D controller", "Display controller").
gpus_lspci() { command -v lspci >/dev/null 2>&1 && lspci 2>/dev/null | grep -iE 'vga|3d controller|display' | sed 's/^[^:]*:[^:]*: //'; }

intel_arc() {  # the name of an Intel Arc / data-center GPU, from sycl-ls, clinfo or lspci
  local found=""
  if command -v sycl-ls >/dev/null 2>&1; then
    found=$(sycl-ls 2>/dev/null | grep -i ':gpu' | grep -iE '\barc|data center gpu' | head -n 1 \
      | sed 's/^\[[^]]*\]\[[^]]*\] [^,]*, //; s/ [0-9][0-9.]* \[.*$//')
  fi
  if [ -z "$found" ] && command -v clinfo >/dev/null 2>&1; then
    found=$(clinfo 2>/dev/null | grep -i 'device name' | grep -i intel | grep -iE '\barc|data center gpu' | head -n 1 \
      | sed 's/^[[:space:]]*Device Name[[:space:]]*//')
  fi
  if [ -z "$found" ]; then
    found=$(gpus_lspci | grep -i intel | grep -iE '\barc\b|dg2|battlemage|alchemist|data center gpu' | head -n 1)
  fi
  [ -n "$found" ] && say "$found"
}

KIND="" TORCH_CMD="" GPU="" HSA_HINT=""
OS=$(uname -s 2>/dev/null) ARCH=$(uname -m 2>/dev/null)
ROCM=${ROCM_PATH:-/opt/rocm}

if [ -n "${TORCH_COMMAND:-}" ]; then
  KIND=custom TORCH_CMD=$TORCH_COMMAND
  step 2 Accelerator "TORCH_COMMAND is set: python -m $TORCH_COMMAND"
fi

if [ -z "$KIND" ] && command -v nvidia-smi >/dev/null 2>&1; then
  smi=$(nvidia-smi 2>&1)
  cuda=$(say "$smi" | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)
  GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  if [ -z "$cuda" ]; then
    step 2 Accelerator "nvidia-smi is installed but reports no driver: $(say "$smi" | head -n 1)"
    note "Check the NVIDIA driver (after a driver update, reboot). Looking for other GPUs."
  elif tag=$(cuda_index "$cuda"); then
    KIND=cuda TORCH_CMD="pip install torch --index-url $TORCH_INDEX/$tag"
    step 2 Accelerator "NVIDIA ${GPU:-GPU}, driver supports CUDA $cuda -> PyTorch $tag build"
  else
    step 2 Accelerator "NVIDIA ${GPU:-GPU}, but its driver supports only CUDA $cuda"
    note "PyTorch needs a driver for CUDA 11.8 or newer: update the NVIDIA driver, then run ./run.sh again."
  fi
fi

if [ -z "$KIND" ] && [ "$OS" = Linux ]; then
  rocminfo_cmd=""
  if command -v rocminfo >/dev/null 2>&1; then rocminfo_cmd=rocminfo; elif [ -x "$ROCM/bin/rocminfo" ]; then rocminfo_cmd=$ROCM/bin/rocminfo; fi
  if [ -n "$rocminfo_cmd" ] || [ -d "$ROCM" ]; then
    gfx="" GPU=""
    if [ -n "$rocminfo_cmd" ]; then
      # The first GPU agent: its "Name: gfx..." line, then its "Marketing Name:" line.
      agent=$("$rocminfo_cmd" 2>/dev/null | awk '
        /^[ \t]*Name:[ \t]*gfx/ && !gfx { gfx = $2; next }
        gfx && /Marketing Name:/ { sub(/^[^:]*:[ \t]*/, ""); sub(/[ \t]+$/, ""); name = $0; exit }
        END { if (gfx) print gfx "|" name }')
      gfx=${agent%%|*} GPU=${agent#*|}
    fi
    [ -n "$GPU" ] || GPU=$(gpus_lspci | grep -E 'AMD|ATI|Radeon' | head -n 1)
    KIND=rocm TORCH_CMD="pip install torch --index-url $TORCH_INDEX/$ROCM_INDEX"
    step 2 Accelerator "AMD ${GPU:-GPU}${gfx:+ ($gfx)}, ROCm found -> PyTorch $ROCM_INDEX build"
    if [ -z "$gfx" ]; then
      note "rocminfo lists no GPU: check that your user is in the 'render' and 'video' groups (then log in again)."
    elif HSA_HINT=$(gfx_override "$gfx"); then
      if [ -n "${HSA_OVERRIDE_GFX_VERSION:-}" ]; then
        note "$gfx needs HSA_OVERRIDE_GFX_VERSION ($HSA_HINT usually); yours is set to $HSA_OVERRIDE_GFX_VERSION."
      else
        note "$gfx is not a target of PyTorch's ROCm builds: the app runs with HSA_OVERRIDE_GFX_VERSION=$HSA_HINT (set it yourself to change)."
      fi
    fi
  fi
fi

if [ -z "$KIND" ] && [ "$OS" = Linux ] && GPU=$(intel_arc); then
  KIND=xpu TORCH_CMD="pip install torch --index-url $TORCH_INDEX/xpu"
  step 2 Accelerator "Intel $GPU -> PyTorch xpu build"
fi

if [ -z "$KIND" ] && [ "$OS" = Darwin ]; then
  if [ "$ARCH" = arm64 ]; then
    KIND=mps TORCH_CMD="pip install torch"
    step 2 Accelerator "Apple silicon (Metal) -> PyTorch from PyPI, with MPS"
  else
    fail 2 Accelerator "this Mac reports an Intel CPU ($ARCH): PyTorch has had no build for Intel Macs since 2.2" \
      "On Apple silicon, run ./run.sh from a native arm64 terminal, not under Rosetta."
  fi
fi

if [ -z "$KIND" ]; then
  KIND=cpu TORCH_CMD="pip install torch --index-url $TORCH_INDEX/cpu"
  step 2 Accelerator "no supported GPU found -> PyTorch CPU build"
  if [ "$OS" = Linux ]; then
    other=$(gpus_lspci | grep -E 'NVIDIA|AMD|ATI|Radeon' | head -n 1)
    case $other in
      *[Nn][Vv][Ii][Dd][Ii][Aa]*) note "lspci shows $other: install the NVIDIA driver (it brings nvidia-smi), then run ./run.sh again." ;;
      ?*) note "lspci shows $other: install ROCm (https://rocm.docs.amd.com) to use it, then run ./run.sh again." ;;
    esac
  fi
  note "Generation on the CPU is slow (minutes per image). ./run.sh --demo tries the whole UI on a tiny model, with no download."
fi

# ---- 3. .venv ------------------------------------------------------------------------------------
FRESH=0
if [ "$REINSTALL" = 1 ] || [ ! -e "$VENV" ]; then
  FRESH=1
  if [ -e "$VENV" ]; then
    step 3 Environment "starting over: .venv is removed and made again"
    run "rm -rf $VENV"
  else
    step 3 Environment "creating .venv"
  fi
  if ! run "$(quote "$PY") -m venv $VENV"; then
    rm -rf "$VENV"  # half a venv would pass for a whole one next time
    fail 3 Environment "$PY could not create .venv" "Read the message above; on Debian/Ubuntu install python3-venv. Then run ./run.sh again."
  fi
else
  step 3 Environment ".venv exists"
fi

# ---- 4. PyTorch ----------------------------------------------------------------------------------
stamp_get() { [ "$FRESH" = 0 ] && [ -f "$STAMP" ] && sed -n "s/^$1=//p" "$STAMP" | head -n 1; }
stamp_write() {  # torch command, its kind, the requirements' hash
  [ "$DRY_RUN" = 1 ] || printf 'torch_command=%s\ntorch_kind=%s\nrequirements=%s\n' "$1" "$2" "$3" >"$STAMP"
}
OLD_TORCH=$(stamp_get torch_command) OLD_KIND=$(stamp_get torch_kind) OLD_REQ=$(stamp_get requirements)
REQ=$("$PY" -c 'import hashlib, pathlib, sys; print(hashlib.sha256(pathlib.Path(sys.argv[1]).read_bytes()).hexdigest())' requirements.txt) \
  || fail 5 Packages "requirements.txt cannot be read" "Run ./run.sh from a complete copy of Sote Studio."
TORCH_FAIL="Check your network and disk space (PyTorch takes 1 to 5 GB), then run ./run.sh again. If pip found no matching torch, that build has none for Python $(python_version "$PY"): run PYTHON=python3.12 ./run.sh --reinstall. TORCH_COMMAND chooses another build."

if [ -z "$OLD_TORCH" ]; then
  step 4 PyTorch "installing: python -m $TORCH_CMD"
  run "$VENV_PY -m $TORCH_CMD" || fail 4 PyTorch "python -m $TORCH_CMD did not succeed" "$TORCH_FAIL"
  stamp_write "$TORCH_CMD" "$KIND" ""
elif [ "$OLD_TORCH" = "$TORCH_CMD" ]; then
  step 4 PyTorch "up to date (python -m $TORCH_CMD)"
elif [ "$KIND" != custom ] && [ "$OLD_KIND" = custom ]; then
  step 4 PyTorch "keeping the build installed with TORCH_COMMAND (python -m $OLD_TORCH)"
  note "./run.sh --reinstall installs the detected build instead."
  TORCH_CMD=$OLD_TORCH KIND=$OLD_KIND
elif [ "$KIND" = cpu ] && [ "$OLD_KIND" != cpu ]; then
  step 4 PyTorch "no GPU found now: keeping the installed build (python -m $OLD_TORCH)"
  note "./run.sh --reinstall installs the CPU build instead."
  TORCH_CMD=$OLD_TORCH KIND=$OLD_KIND
else
  step 4 PyTorch "the choice changed from python -m $OLD_TORCH: replacing it"
  run "$VENV_PY -m pip uninstall -y torch torchvision torchaudio" \
    || fail 4 PyTorch "the old PyTorch could not be removed" "Run ./run.sh --reinstall to start over."
  run "$VENV_PY -m $TORCH_CMD" || fail 4 PyTorch "python -m $TORCH_CMD did not succeed" "$TORCH_FAIL"
  stamp_write "$TORCH_CMD" "$KIND" "$OLD_REQ"
fi

# ---- 5. requirements.txt -------------------------------------------------------------------------
if [ "$OLD_REQ" = "$REQ" ]; then
  step 5 Packages "up to date (requirements.txt unchanged)"
else
  step 5 Packages "installing requirements.txt"
  run "$VENV_PY -m pip install -r requirements.txt" || fail 5 Packages "a package from requirements.txt did not install" \
    "Read pip's message above, then run ./run.sh again (./run.sh --reinstall starts over)."
  stamp_write "$TORCH_CMD" "$KIND" "$REQ"
fi

# ---- start ---------------------------------------------------------------------------------------
START="$VENV_PY app.py${APP_ARGS[*]+ ${APP_ARGS[*]}}"
if [ "$KIND" = rocm ] && [ -n "$HSA_HINT" ] && [ -z "${HSA_OVERRIDE_GFX_VERSION:-}" ]; then
  export HSA_OVERRIDE_GFX_VERSION=$HSA_HINT
  START="HSA_OVERRIDE_GFX_VERSION=$HSA_HINT $START"
fi
if [ "$DRY_RUN" = 1 ]; then
  say "Would start: $START"
  say "Dry run: nothing was installed or started."
  exit 0
fi
say "Starting: $START"
exec "$VENV_PY" app.py ${APP_ARGS[@]+"${APP_ARGS[@]}"}
