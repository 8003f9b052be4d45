# Shared by scripts/*: installs what Runway needs on a fresh machine, idempotently.
# Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${RUNWAY_TOOLS:-$ROOT/.tools}"
UV_VERSION="0.13.9"
FAKE_GCS_VERSION="0.1.1"
DRONGO_VERSION="0.8.0"
# One target dir outside the clone, shared by every checkout on the machine: CI's fresh clone
# reuses what earlier builds compiled.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/runway-target}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# The project's own Python venv for its tools.
ensure_tool_venv() {
  [ -x "$TOOLS/venv/bin/pip" ] || python3 -m venv "$TOOLS/venv"
}

# uv, pinned, from PyPI into the project's own tool venv.
ensure_uv() {
  if [ ! -x "$TOOLS/venv/bin/uv" ] || ! "$TOOLS/venv/bin/uv" --version | grep -q "$UV_VERSION"; then
    log "installing uv $UV_VERSION into $TOOLS/venv"
    ensure_tool_venv
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
  export RUNWAY_UV="$TOOLS/venv/bin/uv"
}

# Headless Chromium and its WebDriver, from Debian.
ensure_chromium() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    log "installing chromium and chromium-driver from Debian"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
}

ensure_git() {
  command -v git >/dev/null || { echo "git is required" >&2; exit 1; }
}

build_runway() {
  log "building runway"
  (cd "$ROOT" && cargo build --quiet --workspace --bins)
  export RUNWAY_BIN="$CARGO_TARGET_DIR/debug/runway"
}
