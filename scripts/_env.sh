# Shared by scripts/test and scripts/demo: make .venv with the project installed, fixing what a fresh machine lacks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }
apt_install() {
  command -v apt-get >/dev/null || { echo "please install: $*" >&2; return 1; }
  [ -n "${_APT_UPDATED:-}" ] || { as_root apt-get update -qq; _APT_UPDATED=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" -V 2>&1))" >&2; exit 2; }
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv 2>/dev/null || { apt_install python3-venv && "$PYTHON" -m venv .venv; }
fi
# Exactly the locked versions, hash-checked, then the project itself with --no-deps: a fresh clone next month tests
# what was tested today. LOCK=test (scripts/test) takes requirements/test-linux.lock: the runtime pins + test tools.
# The build backend comes from requirements/build.lock (--no-build-isolation: nothing resolved at install time).
LOCKFILE="requirements/${LOCK:+$LOCK-}linux.lock"
# pip_or_stop WHAT ARGS…: run pip quietly; on failure show its output (without pip's notes about this machine's
# index config) and stop with "installing WHAT into .venv failed".
pip_or_stop() {
  local what="$1" log; shift; log="$(mktemp)"
  if ! .venv/bin/python -m pip --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2; rm -f "$log"
    echo "installing $what into .venv failed (pip $*)" >&2; exit 2
  fi
  rm -f "$log"
}
pip_or_stop "the locked versions" install -q --require-hashes --no-deps --only-binary=:all: -r "$LOCKFILE" \
  -r requirements/build.lock
pip_or_stop "the project" install -q --no-deps --no-build-isolation -e .
# Check what the README's commands use: the console script, run from outside the checkout (so that `import agent`
# cannot succeed just because the source folder is the working directory).
(cd / && "$OLDPWD/.venv/bin/agent" --version >/dev/null) \
  || { echo "the console script .venv/bin/agent is missing or does not run; the install failed" >&2; exit 2; }
export PATH="$PWD/.venv/bin:$PATH"
