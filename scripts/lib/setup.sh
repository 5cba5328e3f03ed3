# Shared set-up for scripts/test, scripts/demo and scripts/bench (sourced, not run).
# Creates .venv, installs the package with its dev extras when pyproject.toml changed, and
# installs system packages with apt-get when their command is missing.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.moments-installed"
export PATH="$PATH:/usr/sbin:/sbin"

say() { printf '==> %s\n' "$*" >&2; }

_apt_updated=0
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "apt-get is not available: install $* by hand"; return 1
  fi
  say "installing $* with apt-get"
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null; then
    if [ "$_apt_updated" -eq 0 ]; then
      $sudo apt-get update -qq >/dev/null
      _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
  fi
}

ensure_command() {  # ensure_command COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

python_for_venv() {
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  say "Python 3.11 or newer is needed"; return 1
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    local py; py="$(python_for_venv)"
    say "creating .venv with $py"
    if ! "$py" -m venv "$VENV" 2>/dev/null; then
      apt_install python3-venv
      "$py" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
  local want; want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    say "installing the package and its dev and bench extras into .venv"
    "$VENV/bin/python" -m pip install -q -e "$ROOT[dev,bench]"
    echo "$want" > "$STAMP"
  fi
}

ensure_mosquitto() {
  command -v mosquitto >/dev/null 2>&1 || apt_install mosquitto
}

ensure_chromium() {
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ||
    apt_install chromium
}

ensure_systemd_analyze() {  # tests/deploy/test_systemd.py verifies the unit with it
  command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
}
