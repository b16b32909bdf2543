#!/usr/bin/env bash
# Make a machine able to run `launch`'s agent and the bundled trainers.
#
#   bash bootstrap.sh ROOT                 install what is missing from the package index
#   bash bootstrap.sh ROOT --probe         install nothing; print one line `LAUNCH_PROBE {json}`
#                                          (with "ready": true when nothing was missing)
#   bash bootstrap.sh ROOT --wheels DIR    install what is missing from the wheels in DIR only
#
# ROOT/code holds the synced `launcher` and `trainers` packages and constraints.txt. This script
# creates ROOT/venv and makes it see:
#   - a PyTorch the machine already has: $LAUNCH_PYTHON, else python3, else a conda Python, when
#     it imports torch (rented GPU images ship one built for their driver). Its site-packages are
#     added to the venv through a .pth file, which works even when that Python is itself a venv;
#   - the pinned torch/torchvision from constraints.txt, installed only when no Python has torch;
#   - boto3 and the trainers' small dependencies, installed only when they do not import;
#   - ROOT/code, first on sys.path, so `python -m launcher.agent` runs the synced code.
# Hosts with no route to a package index (air-gapped clusters, firewalled nodes) get what they
# lack as wheels: --probe tells the launching machine the venv's Python version, its wheel tags,
# the packages missing and whether an index answers ("index": null when nothing is missing); the
# launching machine then sends wheels for exactly those and runs this script with --wheels, which
# installs with `pip --no-index`.
# The caller records this script's hash on the machine afterwards, so a second job skips it.
# Safe to run twice: every step checks before it acts.
set -euo pipefail

ROOT=${1:?usage: bootstrap.sh ROOT [--probe | --wheels DIR]}
MODE=${2:-install}
WHEELS=${3:-}
case "$MODE" in
  install|--probe) ;;
  --wheels) [ -d "$WHEELS" ] || { echo "[bootstrap] --wheels: no folder ${WHEELS:-given}" >&2; exit 2; } ;;
  *) echo "[bootstrap] unknown option $MODE" >&2; exit 2 ;;
esac
CODE="$ROOT/code"
VENV="$ROOT/venv"
CONSTRAINTS="$CODE/constraints.txt"
# module to import -> package to install when it does not
SMALL_DEPS="boto3:boto3 numpy:numpy PIL:pillow matplotlib:matplotlib rich:rich pynvml:nvidia-ml-py"

log() { echo "[bootstrap] $*"; }

# Checks look packages up without importing them (importing torch takes seconds).
py_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; }
has() { "$1" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))' "${@:2}"; }
has_torch() { py_ok "$1" && has "$1" torch >/dev/null 2>&1; }

candidates() {
  [ -n "${LAUNCH_PYTHON:-}" ] && echo "$LAUNCH_PYTHON"
  command -v python3 || true
  [ -n "${CONDA_PREFIX:-}" ] && echo "$CONDA_PREFIX/bin/python"
  for c in /opt/conda/bin/python "$HOME/miniconda3/bin/python" "$HOME/anaconda3/bin/python" \
           python3.13 python3.12 python3.11 python3.10; do
    command -v "$c" 2>/dev/null || true
  done
}

find_python() {
  local c
  for c in $(candidates); do [ -x "$c" ] && has_torch "$c" && { echo "$c"; return 0; }; done
  for c in $(candidates); do [ -x "$c" ] && py_ok "$c" && { echo "$c"; return 0; }; done
  return 1
}

BASE=$(find_python) || { echo "[bootstrap] no Python >= 3.10 on this machine" >&2; exit 3; }
log "image python: $BASE ($("$BASE" -c 'import sys; print(sys.version.split()[0])'))"

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$BASE" -m venv --without-pip "$VENV"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# The venv sees the image Python's packages (its site-packages and their own .pth files).
"$BASE" - "$SITE/_launch_image.pth" <<'EOF'
import os, site, sys
dirs = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]
with open(sys.argv[1], "w") as f:
    for d in dirs:
        f.write(f"import site; site.addsitedir({d!r})\n")
EOF
# The synced code comes first ("00" sorts before every other .pth file).
echo "$CODE" > "$SITE/00_launch_code.pth"

ensure_pip() {
  "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --upgrade >/dev/null
}

pip_install() {
  ensure_pip
  if [ "$MODE" = --wheels ]; then
    log "installing $* from the wheels in $WHEELS (no index)"
    "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$WHEELS" -c "$CONSTRAINTS" "$@"
  else
    log "installing $*"
    "$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" "$@"
  fi
}

# What to install: torch/torchvision when no Python has torch, and the small deps that do not import.
missing=()
if has "$VENV/bin/python" torch; then
  log "reusing the image's torch"
  # Never pull a torchvision that would replace the image's torch: say so and go on.
  has "$VENV/bin/python" torchvision || log "warning: torchvision is missing"
else
  missing+=(torch torchvision)
fi
for dep in $SMALL_DEPS; do
  has "$VENV/bin/python" "${dep%%:*}" || missing+=("${dep##*:}")
done

if [ "$MODE" = --probe ] && [ ${#missing[@]} -gt 0 ]; then
  ensure_pip
  # One look at the index page of one missing package: fails at once without a route, within
  # 5 s behind a firewall that drops packets.
  index=false
  "$VENV/bin/python" -m pip index versions "${missing[-1]}" --retries 0 --timeout 5 >/dev/null 2>&1 && index=true
  # The wheel tags this Python accepts, best first, as pip itself computes them.
  "$VENV/bin/python" - "$index" "${missing[@]}" <<'EOF'
import json, sys
from pip._vendor.packaging import tags
found = list(tags.sys_tags())
unique = lambda xs: list(dict.fromkeys(xs))
print("LAUNCH_PROBE " + json.dumps({
    "python": "%d.%d" % sys.version_info[:2], "implementation": tags.interpreter_name(),
    "abis": unique(t.abi for t in found), "platforms": unique(t.platform for t in found if t.platform != "any"),
    "missing": sys.argv[2:], "index": json.loads(sys.argv[1])}))
EOF
  exit 0
fi

[ ${#missing[@]} -eq 0 ] || pip_install "${missing[@]}"

"$VENV/bin/python" -c 'import launcher.agent, launcher.store'
log "ready: $VENV/bin/python"
if [ "$MODE" = --probe ]; then  # nothing was missing: no pip needed, no index asked
  "$VENV/bin/python" -c 'import sys; print("LAUNCH_PROBE {\"python\": \"%d.%d\", \"missing\": [], \"index\": null, \"ready\": true}" % sys.version_info[:2])'
fi
