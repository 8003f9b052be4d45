# shellcheck shell=bash
# Shared by scripts/*: installs what Runway needs on a fresh machine, idempotently.
# Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${RUNWAY_TOOLS:-$ROOT/.tools}"
UV_VERSION="0.13.9"
# shellcheck disable=SC2034 # read by scripts/emulators, which sources this file
FAKE_GCS_VERSION="0.1.1"
# shellcheck disable=SC2034 # read by scripts/emulators, which sources this file
DRONGO_VERSION="0.8.0"
CHECKOV_VERSION="3.3.30"
MACHETE_VERSION="0.9.2"
AXE_VERSION="4.14.1"
# One target dir outside the clone, shared by every checkout on the machine: CI's fresh clone
# reuses what earlier builds compiled.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/runway-target}"
# Incremental caches are kept per checkout path, so every fresh clone added ~2 GB of them to the
# shared dir until the disk filled (a CI run failed on it). A clean build gains nothing from them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

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

# axe-core, pinned, from npm (npm itself from Debian): the browser tests check every console page
# with it. Its path is exported as AXE_CORE_JS.
ensure_axe() {
  local script="$TOOLS/axe/node_modules/axe-core/axe.min.js"
  if [ ! -f "$script" ] || ! grep -q "axe v$AXE_VERSION" "$script"; then
    if ! command -v npm >/dev/null; then
      log "installing npm from Debian"
      local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq npm >/dev/null
    fi
    log "installing axe-core $AXE_VERSION into $TOOLS/axe"
    mkdir -p "$TOOLS/axe"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/axe" "axe-core@$AXE_VERSION" >/dev/null
  fi
  export AXE_CORE_JS="$script"
}

# The shell linter shellcheck, from Debian (scripts/lint runs it on every shell script).
ensure_shellcheck() {
  if ! command -v shellcheck >/dev/null; then
    log "installing shellcheck from Debian"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq shellcheck >/dev/null
  fi
}

# checkov (Terraform misconfigurations in infra/), pinned, from PyPI into the tool venv.
ensure_checkov() {
  ensure_tool_venv
  local installed # its version, read without importing checkov (that takes seconds)
  installed="$("$TOOLS/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("checkov"))' \
    2>/dev/null || true)"
  if [ "$installed" != "$CHECKOV_VERSION" ]; then
    log "installing checkov $CHECKOV_VERSION into $TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  fi
}

# cargo-machete (unused dependencies), pinned, built from crates.io into $TOOLS/cargo.
ensure_machete() {
  local installed # `cargo-machete --version` prints the bare version
  installed="$("$TOOLS/cargo/bin/cargo-machete" --version 2>/dev/null || true)"
  if [ "$installed" != "$MACHETE_VERSION" ]; then
    log "installing cargo-machete $MACHETE_VERSION into $TOOLS/cargo"
    # Without CARGO_TARGET_DIR cargo builds it in a temporary dir it removes afterwards, instead
    # of waiting on (and filling) the workspace's shared target dir.
    env -u CARGO_TARGET_DIR cargo install --quiet --locked --version "$MACHETE_VERSION" \
      --root "$TOOLS/cargo" cargo-machete
  fi
}

ensure_git() {
  command -v git >/dev/null || { echo "git is required" >&2; exit 1; }
}

# Room for a build in the shared target dir. It grows with every checkout path that builds in it
# (each clone's own crates are compiled anew), so when the disk runs low the old artifacts go:
# first the incremental caches, then everything (a full rebuild, ~15 min, beats a build that dies
# with "No space left on device" halfway).
RUNWAY_BUILD_ROOM_GB="${RUNWAY_BUILD_ROOM_GB:-12}"
free_gb() { df -Pk "$1" | awk 'NR == 2 { print int($4 / 1048576) }'; }
ensure_build_room() {
  mkdir -p "$CARGO_TARGET_DIR"
  local free
  free=$(free_gb "$CARGO_TARGET_DIR")
  [ "$free" -ge "$RUNWAY_BUILD_ROOM_GB" ] && return
  log "only $free GB free for $CARGO_TARGET_DIR; removing its incremental caches"
  rm -rf "$CARGO_TARGET_DIR"/debug/incremental "$CARGO_TARGET_DIR"/release/incremental
  free=$(free_gb "$CARGO_TARGET_DIR")
  [ "$free" -ge "$RUNWAY_BUILD_ROOM_GB" ] && return
  log "still only $free GB free; emptying $CARGO_TARGET_DIR (everything is built again)"
  rm -rf "$CARGO_TARGET_DIR"/debug "$CARGO_TARGET_DIR"/release
  free=$(free_gb "$CARGO_TARGET_DIR")
  if [ "$free" -lt "$RUNWAY_BUILD_ROOM_GB" ]; then
    echo "only $free GB free on the disk holding $CARGO_TARGET_DIR; a build needs about" \
      "$RUNWAY_BUILD_ROOM_GB GB. Make room there, or set CARGO_TARGET_DIR to a roomier disk." >&2
    exit 1
  fi
}

# The local binary alone: it links no Google client, so a fresh clone reaches the demo app fast.
build_runway() {
  ensure_build_room
  log "building runway"
  (cd "$ROOT" && cargo build --quiet --package runway-local --bin runway)
  export RUNWAY_BIN="$CARGO_TARGET_DIR/debug/runway"
}

# Every binary of the workspace: the tests also run the five Cloud Run functions.
build_all_binaries() {
  ensure_build_room
  log "building every binary"
  (cd "$ROOT" && cargo build --quiet --workspace --bins)
  export RUNWAY_BIN="$CARGO_TARGET_DIR/debug/runway"
}
