#!/usr/bin/env bash
# vad-edge installer: turns a Jetson (JetPack 5/6) or a Debian/Ubuntu box into a vad-edge appliance.
# Idempotent: run it again to upgrade; the previous build is kept for --rollback.
#
#   sudo ./firmware_config/install.sh [--central HOST:PORT] [--cuda-archs 87] [--torch SPEC] [--prefix DIR]
#        --central     the site's broker the box bridges its events to
#        --cuda-archs  build the CUDA kernels for these GPU architectures (87: Jetson Orin)
#        --torch       the pip requirement for torch (default: JetPack's on a Jetson, the CPU wheel elsewhere)
#        --prefix      where builds go (default /opt/vad-edge); `vad-edge` is linked into /usr/local/bin
#   sudo ./firmware_config/install.sh --rollback     # back to the build before the last install
#   sudo ./firmware_config/install.sh --uninstall [--purge]
#   ./firmware_config/install.sh --dry-run           # print what would be done, change nothing
#   DESTDIR=/tmp/root ./firmware_config/install.sh   # install into a throwaway root (no users, no systemctl)
set -Eeuo pipefail  # -E: the ERR trap that cleans up a failed build also fires inside functions

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FW="$SRC/firmware_config"
PREFIX=/opt/vad-edge
RELEASES=releases          # builds, one venv each, under $PREFIX
DESTDIR=${DESTDIR:-}
# DESTDIR is ours alone: exported, CMake's install step inside pip would honour it too and put the compiled
# kernels under $DESTDIR/tmp instead of into the wheel.
export -n DESTDIR
PYTHON=${PYTHON:-python3}
OS_RELEASE=${VAD_EDGE_OS_RELEASE:-/etc/os-release}
TEGRA_RELEASE=${VAD_EDGE_TEGRA_RELEASE:-/etc/nv_tegra_release}
ACTION=install
DRY_RUN=0
PURGE=0
CENTRAL=""
CUDA_ARCHS=""
TORCH=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a path}; shift ;;
    --central) CENTRAL=${2:?--central needs HOST:PORT}; shift ;;
    --cuda-archs) CUDA_ARCHS=${2:?--cuda-archs needs a list like 87}; shift ;;
    --torch) TORCH=${2:?--torch needs a pip requirement}; shift ;;
    --dry-run) DRY_RUN=1 ;;
    --uninstall) ACTION=uninstall ;;
    --rollback) ACTION=rollback ;;
    --purge) PURGE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

ROOT="$DESTDIR"            # where files go
LIVE=0                     # 1: this is the real system (users, systemctl)
[ -z "$DESTDIR" ] && [ "$DRY_RUN" = 0 ] && LIVE=1

# Runs a command, or prints it under --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

# System changes (users, services) happen only on the live system; elsewhere they are shown.
system() {
  if [ "$LIVE" = 1 ]; then "$@"; else printf '+ (system)'; printf ' %q' "$@"; printf '\n'; fi
}

# Services are reloaded, started and stopped only where systemd runs the machine (its runtime directory
# exists). In a chroot or an image being built (make test-aarch64's arm64 root) systemctl can only enable
# and disable units: they start at the next boot.
services() {
  if [ "$LIVE" = 0 ] || [ -d /run/systemd/system ]; then system systemctl "$@"; else say "no systemd running: skipped systemctl $*"; fi
}

# --- platform ---------------------------------------------------------------------------------------------

JETSON=0
check_platform() {
  [ -r "$OS_RELEASE" ] || die "cannot read $OS_RELEASE: unsupported operating system"
  local id version
  # shellcheck source=/dev/null
  id=$(. "$OS_RELEASE"; echo "${ID:-}")
  # shellcheck source=/dev/null
  version=$(. "$OS_RELEASE"; echo "${VERSION_ID:-}")
  case "$id:$version" in
    ubuntu:20.04|ubuntu:22.04|ubuntu:24.04|debian:12|debian:13) ;;
    *) die "unsupported OS '$id $version': vad-edge installs on Ubuntu 20.04/22.04/24.04 (JetPack 5/6) or Debian 12/13" ;;
  esac
  if [ -r "$TEGRA_RELEASE" ]; then
    JETSON=1
    local release
    release=$(sed -n 's/^# R\([0-9]*\).*/\1/p' "$TEGRA_RELEASE")
    case "$release" in
      35) say "Jetson with JetPack 5 (L4T R35): CUDA 11, building for Xavier (72) and Orin (87)"
          CUDA_ARCHS=${CUDA_ARCHS:-72;87} ;;
      36) say "Jetson with JetPack 6 (L4T R36): building for Orin (87)"
          CUDA_ARCHS=${CUDA_ARCHS:-87} ;;
      *) die "unsupported JetPack (L4T R${release:-?}): vad-edge needs JetPack 5 (R35) or 6 (R36)" ;;
    esac
  else
    say "$id $version ($(uname -m))"
    if [ -z "$CUDA_ARCHS" ] && command -v nvidia-smi >/dev/null 2>&1; then
      CUDA_ARCHS=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '.') || true
    fi
  fi
  local pyver
  pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "$PYTHON not found"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "Python $pyver is too old: vad-edge needs 3.10+. JetPack 5 ships 3.8 and NVIDIA's JetPack 5 torch wheels are for 3.8 only: JetPack 5 is not supported (use JetPack 6), unless you bring a Python 3.10+ with a CUDA torch built for it (PYTHON=... --torch <wheel>; untested)"
}

# --- install ----------------------------------------------------------------------------------------------

install_files() {
  say "directories and configuration under ${ROOT:-/}"
  run install -d -m 0755 "$ROOT$PREFIX" "$ROOT$PREFIX/$RELEASES" "$ROOT$PREFIX/bin" "$ROOT$PREFIX/share" "$ROOT/etc/systemd/system" \
      "$ROOT/etc/mosquitto/conf.d" "$ROOT/etc/mosquitto/vad-edge.d"
  run install -d -m 0750 "$ROOT/etc/vad-edge" "$ROOT/var/lib/vad-edge"
  if [ -e "$ROOT/etc/vad-edge/config.yaml" ]; then
    say "keeping the existing /etc/vad-edge/config.yaml"
  else
    run install -m 0640 "$FW/etc/vad-edge/config.yaml" "$ROOT/etc/vad-edge/config.yaml"
  fi
  run install -m 0644 "$FW/etc/vad-edge/config.schema.json" "$ROOT/etc/vad-edge/config.schema.json"
  run install -m 0755 "$FW/bin/vad-edge-performance" "$ROOT$PREFIX/bin/vad-edge-performance"
  run install -m 0644 "$FW/README.md" "$ROOT$PREFIX/share/README.md"
  run install -m 0644 "$FW/systemd/vad-edge.service" "$FW/systemd/vad-edge-performance.service" \
      "$ROOT/etc/systemd/system/"
  run install -m 0644 "$FW/mosquitto/vad-edge.conf" "$ROOT/etc/mosquitto/conf.d/vad-edge.conf"
  run install -m 0644 "$FW/mosquitto/acl" "$ROOT/etc/mosquitto/vad-edge.d/acl"
  broker_credentials
  local bridge="$ROOT/etc/mosquitto/vad-edge.d/bridge.conf"
  if [ -n "$CENTRAL" ]; then
    say "bridge to the central broker $CENTRAL"
    if [ "$DRY_RUN" = 1 ]; then
      echo "+ write $bridge (address $CENTRAL)"
    else
      sed -e "s/^address .*/address $CENTRAL/" -e "s/vad-edge-bridge-BOX/vad-edge-bridge-$(hostname -s)/" \
          "$FW/mosquitto/bridge.conf" > "$bridge"
      chmod 0640 "$bridge"
    fi
  elif [ ! -e "$bridge" ]; then
    say "no --central: the box broker will not bridge until $bridge is written (see the README)"
  fi
}

# The agent's password on the box broker: generated once, kept across upgrades. The agent reads it from
# /etc/vad-edge/mqtt-password (config.yaml's mqtt.password_file); mosquitto gets its hash.
broker_credentials() {
  local secret="$ROOT/etc/vad-edge/mqtt-password" passwd="$ROOT/etc/mosquitto/vad-edge.d/passwd"
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ generate the agent's broker password: $secret (once) and its hash in $passwd"
    return
  fi
  if [ -s "$secret" ]; then
    say "keeping the agent's broker password ($secret)"
  else
    say "generating the agent's broker password ($secret)"
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$secret")
  fi
  chmod 0640 "$secret"
  if command -v mosquitto_passwd >/dev/null 2>&1 || [ -x /usr/bin/mosquitto_passwd ]; then
    # -U hashes a user:password file in place: the password never appears on a command line.
    (umask 077 && printf 'vad-edge:%s\n' "$(cat "$secret")" > "$passwd")
    PATH="$PATH:/usr/bin" mosquitto_passwd -U "$passwd"
  else
    say "mosquitto_passwd not found (apt-get install mosquitto): write $passwd before the box broker starts"
  fi
}

# Each build is a release: its own venv under $PREFIX/releases (a venv cannot be moved: its scripts name
# their interpreter by absolute path). $PREFIX/venv and $PREFIX/previous are symlinks to releases; an
# upgrade or rollback repoints them, so the switch is one rename and the old build stays intact.
current_release() { readlink "$ROOT$PREFIX/$1" 2>/dev/null || true; }

# Points the symlink $PREFIX/$1 at $2 (relative to $PREFIX), atomically: a fresh link renamed over the old.
point() {
  run ln -sfn "$2" "$ROOT$PREFIX/$1.new"
  run mv -T "$ROOT$PREFIX/$1.new" "$ROOT$PREFIX/$1"
}

install_venv() {
  local release new
  release="$RELEASES/$(date -u +%Y%m%dT%H%M%SZ)-$$"
  new="$ROOT$PREFIX/$release"
  say "Python environment in $PREFIX/$release (CUDA architectures: ${CUDA_ARCHS:-none, CPU kernels only})"
  local flags=()
  # On a Jetson, torch comes with JetPack (CUDA-enabled): the venv sees the system's packages.
  [ "$JETSON" = 1 ] && flags+=(--system-site-packages)
  [ "$DRY_RUN" = 1 ] || trap 'rm -rf "$new"; echo "install.sh: build failed; the installed version is unchanged" >&2' ERR
  run "$PYTHON" -m venv "${flags[@]}" "$new"
  run "$new/bin/python" -m pip install --quiet --upgrade pip
  if [ -n "$TORCH" ]; then
    run "$new/bin/python" -m pip install --quiet "$TORCH"
  elif [ "$JETSON" = 0 ] && [ -z "$CUDA_ARCHS" ]; then
    say "no NVIDIA GPU: the CPU build of torch (PyPI's default wheel carries gigabytes of CUDA libraries)"
    run "$new/bin/python" -m pip install --quiet --index-url https://download.pytorch.org/whl/cpu torch
  elif ! "$PYTHON" -c 'import torch' 2>/dev/null || [ "$JETSON" = 0 ]; then
    run "$new/bin/python" -m pip install --quiet torch
  fi
  local cuda=AUTO
  [ -z "$CUDA_ARCHS" ] && cuda=OFF
  # On an x86-64 CPU the agent scores with OpenVINO (model.runtime auto): in the CPU's bfloat16 where it has
  # it, 3-4x torch on a 2-core box (docs/runtimes.md).
  local package="$SRC"
  [ "$(uname -m)" = x86_64 ] && [ "$JETSON" = 0 ] && package="${SRC}[openvino]"
  # A fresh build directory: the checkout's build/ belongs to its developer's editable install.
  run env VAD_EDGE_CUDA="$cuda" VAD_EDGE_CUDA_ARCHS="$CUDA_ARCHS" "$new/bin/python" -m pip install --quiet \
      --config-settings=build-dir= "$package"
  run "$new/bin/vad-edge" info
  trap - ERR
  # On PATH for the technician (sudo's secure_path includes /usr/local/bin); through $PREFIX/venv, so an
  # upgrade or rollback moves it too.
  run mkdir -p "$ROOT/usr/local/bin"
  run ln -sfn "$PREFIX/venv/bin/vad-edge" "$ROOT/usr/local/bin/vad-edge"
  # The running build becomes the rollback target; builds older than that are removed.
  local running
  running=$(current_release venv)
  [ -n "$running" ] && point previous "$running"
  point venv "$release"
  local dir
  for dir in "$ROOT$PREFIX/$RELEASES"/*; do
    case "$dir" in
      "$ROOT$PREFIX/$release"|"$ROOT$PREFIX/$running"|"$ROOT$PREFIX/$RELEASES/*") ;;
      *) run rm -rf "$dir" ;;
    esac
  done
}

install_system() {
  say "system user and services"
  if ! id vad-edge >/dev/null 2>&1; then
    system useradd --system --home-dir /var/lib/vad-edge --shell /usr/sbin/nologin vad-edge
  fi
  for group in video render; do
    if getent group "$group" >/dev/null 2>&1; then system usermod -aG "$group" vad-edge; fi
  done
  system chown root:vad-edge /etc/vad-edge /etc/vad-edge/config.yaml /etc/vad-edge/mqtt-password
  if getent group mosquitto >/dev/null 2>&1; then
    system chown root:mosquitto /etc/mosquitto/vad-edge.d/passwd
    system chmod 0640 /etc/mosquitto/vad-edge.d/passwd
  fi
  system chown vad-edge:vad-edge /var/lib/vad-edge
  services daemon-reload
  system systemctl enable vad-edge-performance.service vad-edge.service
  if systemctl list-unit-files mosquitto.service >/dev/null 2>&1; then
    services restart mosquitto.service
  else
    say "mosquitto is not installed: apt-get install mosquitto for the local store-and-forward broker"
  fi
  services restart vad-edge-performance.service vad-edge.service
}

do_install() {
  check_platform
  install_files
  install_venv
  install_system
  say "done. Edit /etc/vad-edge/config.yaml, then: vad-edge doctor; journalctl -u vad-edge -f"
}

do_rollback() {
  local running previous
  running=$(current_release venv)
  previous=$(current_release previous)
  if [ -z "$previous" ] || [ ! -d "$ROOT$PREFIX/$previous" ]; then
    die "nothing to roll back to ($PREFIX/previous does not point at a kept build)"
  fi
  say "rolling back from $running to $previous"
  point venv "$previous"
  point previous "$running"
  services restart vad-edge.service
}

do_uninstall() {
  say "removing vad-edge (configuration and state are kept unless --purge)"
  services stop vad-edge.service vad-edge-performance.service
  system systemctl disable vad-edge.service vad-edge-performance.service
  run rm -f "$ROOT/etc/systemd/system/vad-edge.service" "$ROOT/etc/systemd/system/vad-edge-performance.service" \
      "$ROOT/etc/mosquitto/conf.d/vad-edge.conf"
  run rm -rf "$ROOT$PREFIX" "$ROOT/etc/mosquitto/vad-edge.d" "$ROOT/usr/local/bin/vad-edge"
  services daemon-reload
  if [ "$PURGE" = 1 ]; then
    run rm -rf "$ROOT/etc/vad-edge" "$ROOT/var/lib/vad-edge"
    if id vad-edge >/dev/null 2>&1; then system userdel vad-edge; fi
  fi
}

case "$ACTION" in
  install) do_install ;;
  rollback) do_rollback ;;
  uninstall) do_uninstall ;;
esac
