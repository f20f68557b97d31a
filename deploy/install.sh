#!/bin/sh
# Install doorbell-edge as a systemd service on Raspberry Pi OS (Bookworm and later) or Debian 12+.
#
#   sudo deploy/install.sh            install or upgrade (safe to run again: every step checks first)
#   deploy/install.sh --dry-run       print every step without doing anything (no root needed)
#
# What it does: apt packages (python3-venv; python3-picamera2 and python3-gpiozero where the archive has
# them), a system user in the video/gpio groups, a venv with --system-site-packages (so apt's picamera2 is
# visible) under /opt/doorbell-edge, /etc/doorbell-edge with a starting config, and the systemd unit.
set -eu

PREFIX=/opt/doorbell-edge
CONFIG_DIR=/etc/doorbell-edge
SERVICE_USER=doorbell-edge
UNIT_DIR=/etc/systemd/system
SRC_DIR=$(cd "$(dirname "$0")/.." && pwd)
DRY_RUN=0

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
}

for arg in "$@"; do
    case "$arg" in
        --dry-run|-n) DRY_RUN=1 ;;
        --help|-h) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

step() { printf '==> %s\n' "$*"; }

# run CMD...: print the command; execute it unless this is a dry run.
run() {
    printf '    $ %s\n' "$*"
    if [ "$DRY_RUN" -eq 0 ]; then
        "$@"
    fi
}

if [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo), or use --dry-run to see the steps" >&2
    exit 1
fi

step "Checking the system"
if [ -r /etc/os-release ]; then
    . /etc/os-release
    echo "    found ${PRETTY_NAME:-unknown}"
    case "${VERSION_CODENAME:-}" in
        buster|bullseye) echo "install.sh: ${VERSION_CODENAME} is too old; Bookworm (12) or later is needed" >&2; exit 1 ;;
    esac
fi
command -v apt-get >/dev/null 2>&1 || { echo "install.sh: apt-get not found; this script is for Debian-based systems" >&2; exit 1; }
[ -f "$SRC_DIR/setup.cfg" ] || { echo "install.sh: run me from a doorbell-edge checkout ($SRC_DIR has no setup.cfg)" >&2; exit 1; }

step "Installing apt packages"
PACKAGES="python3 python3-venv python3-pip"
for optional in python3-picamera2 python3-gpiozero; do
    if apt-cache show "$optional" >/dev/null 2>&1; then
        PACKAGES="$PACKAGES $optional"
    else
        echo "    $optional is not in this archive (not a Raspberry Pi OS?); skipping it"
    fi
done
missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    run apt-get update
    # shellcheck disable=SC2086
    run apt-get install -y --no-install-recommends $missing
else
    echo "    already installed: $PACKAGES"
fi

step "Creating the service user $SERVICE_USER"
if id "$SERVICE_USER" >/dev/null 2>&1; then
    echo "    user $SERVICE_USER exists"
else
    run useradd --system --home-dir /var/lib/doorbell-edge --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi
# The unit asks for both groups; plain Debian has no gpio group (Raspberry Pi OS does), so make one.
if ! getent group gpio >/dev/null 2>&1; then
    run groupadd --system gpio
fi
for group in video gpio; do
    if [ "$DRY_RUN" -eq 1 ] || getent group "$group" >/dev/null 2>&1; then
        if id -nG "$SERVICE_USER" 2>/dev/null | tr ' ' '\n' | grep -qx "$group"; then
            echo "    $SERVICE_USER is in $group"
        else
            run usermod -a -G "$group" "$SERVICE_USER"
        fi
    fi
done

step "Installing the application into $PREFIX"
run mkdir -p "$PREFIX/src"
run cp -a "$SRC_DIR/setup.cfg" "$SRC_DIR/pyproject.toml" "$SRC_DIR/README.md" "$SRC_DIR/edge" "$PREFIX/src/"
if [ -x "$PREFIX/venv/bin/python" ]; then
    echo "    venv exists"
else
    # --system-site-packages: picamera2 and libcamera come from apt and must be importable from the venv.
    run python3 -m venv --system-site-packages "$PREFIX/venv"
fi
EXTRAS=""
if apt-cache show python3-gpiozero >/dev/null 2>&1; then EXTRAS="[pi]"; fi
run "$PREFIX/venv/bin/pip" install --upgrade "$PREFIX/src$EXTRAS"

step "Configuration in $CONFIG_DIR"
run install -d -m 0750 -o root -g "$SERVICE_USER" "$CONFIG_DIR"
run install -d -m 0700 -o root -g root "$CONFIG_DIR/secrets"
# The unit loads this file as the mqtt_password credential; empty means no password.
if [ -f "$CONFIG_DIR/secrets/mqtt_password" ]; then
    echo "    keeping the existing MQTT password file"
else
    run install -m 0600 -o root -g root /dev/null "$CONFIG_DIR/secrets/mqtt_password"
fi
if [ -f "$CONFIG_DIR/config.yaml" ]; then
    echo "    keeping the existing $CONFIG_DIR/config.yaml"
else
    run install -m 0640 -o root -g "$SERVICE_USER" "$SRC_DIR/deploy/config.pi.yaml" "$CONFIG_DIR/config.yaml"
fi
if [ "$DRY_RUN" -eq 0 ]; then
    "$PREFIX/venv/bin/doorbell-edge" check-config --quiet --config "$CONFIG_DIR/config.yaml"
else
    printf '    $ %s\n' "$PREFIX/venv/bin/doorbell-edge check-config --quiet --config $CONFIG_DIR/config.yaml"
fi

step "Installing the systemd unit"
if [ -f "$UNIT_DIR/doorbell-edge.service" ] && cmp -s "$SRC_DIR/systemd/doorbell-edge.service" "$UNIT_DIR/doorbell-edge.service"; then
    echo "    unit is up to date"
else
    run install -m 0644 "$SRC_DIR/systemd/doorbell-edge.service" "$UNIT_DIR/doorbell-edge.service"
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    run systemctl daemon-reload
    run systemctl enable doorbell-edge.service
    run systemctl restart doorbell-edge.service
else
    echo "    systemd is not running here; start it later with: systemctl enable --now doorbell-edge"
fi

step "Done"
echo "    logs:    journalctl -u doorbell-edge -f"
echo "    config:  $CONFIG_DIR/config.yaml (check with: doorbell-edge check-config --config $CONFIG_DIR/config.yaml)"
