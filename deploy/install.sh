#!/bin/sh
# Install, upgrade or remove doorbell-edge as a systemd service on Raspberry Pi OS (Bookworm and later) or
# Debian 12+. Every step checks first and changes only what differs, so a second run changes nothing (it
# ends with "nothing changed"). deploy/test-install.sh runs this script for real on a throwaway Debian root.
set -eu
# The venv and the config are read by the service user: never inherit a tight umask from the caller.
umask 022

PREFIX=/opt/doorbell-edge
CONFIG_DIR=/etc/doorbell-edge
STATE_DIR=/var/lib/doorbell-edge
SERVICE_USER=doorbell-edge
UNIT_DIR=/etc/systemd/system
UNIT=doorbell-edge.service
BIN_LINK=/usr/local/bin/doorbell-edge
SRC_DIR=$(cd "$(dirname "$0")/.." && pwd)
# Written after a successful pip install: the digest of the installed source and the extras.
STAMP="$PREFIX/.installed"
# Present when this script created the gpio group (plain Debian has none), so --uninstall removes only that.
GPIO_MARK="$PREFIX/.created-gpio-group"

usage() {
    cat <<EOF
Usage: deploy/install.sh [--dry-run] [--uninstall [--purge]]

Install doorbell-edge as a systemd service on Raspberry Pi OS (Bookworm and later) or Debian 12+.

  sudo deploy/install.sh                install or upgrade; a second run changes nothing
  sudo deploy/install.sh --uninstall    stop and remove the service, $PREFIX, the command
                                        $BIN_LINK and the $SERVICE_USER user; keep
                                        $STATE_DIR (clips, faces, audit log) and
                                        $CONFIG_DIR (config, secrets)
  sudo deploy/install.sh --purge        the same as --uninstall, and delete those two as well
  deploy/install.sh --dry-run [...]     print every step without doing anything (no root needed)
  deploy/install.sh --help              this text

An install puts in: apt packages (python3-venv; python3-picamera2 and python3-gpiozero where the archive
has them), a system user in the video and gpio groups, a venv with --system-site-packages (so apt's
picamera2 is visible) under $PREFIX, the command $BIN_LINK, the state directory
$STATE_DIR (mode 0750, owned by $SERVICE_USER), $CONFIG_DIR with a starting config, and the
systemd unit (enabled and started where systemd runs).
EOF
}

MODE=install
PURGE=0
DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run|-n) DRY_RUN=1 ;;
        --uninstall) MODE=uninstall ;;
        --purge) MODE=uninstall; PURGE=1 ;;
        --help|-h) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

CHANGES=0
# run CMD...: print the command and count it as a change; execute it unless this is a dry run.
run() {
    printf '    $ %s\n' "$*"
    CHANGES=$((CHANGES + 1))
    if [ "$DRY_RUN" -eq 0 ]; then
        "$@"
    fi
}

systemd_running() { command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }

# ensure_dir PATH MODE OWNER GROUP: create PATH, or fix its mode and owner, unless it is already right.
ensure_dir() {
    if [ -d "$1" ] && [ "$(stat -c '%a %U %G' "$1")" = "${2#0} $3 $4" ]; then
        note "unchanged: $1 ($2 $3:$4)"
    else
        run install -d -m "$2" -o "$3" -g "$4" "$1"
    fi
}

# ensure_meta PATH MODE OWNER GROUP: fix the mode and owner of an existing file (one kept from an earlier
# install may have a stale group, e.g. after --uninstall removed the user and its group).
ensure_meta() {
    if [ "$(stat -c '%a %U %G' "$1")" = "${2#0} $3 $4" ]; then
        note "unchanged: $1 ($2 $3:$4)"
    else
        run chown "$3:$4" "$1"
        run chmod "$2" "$1"
    fi
}

# The installed application's identity: every source file pip builds from, and the extras.
source_digest() {
    (cd "$SRC_DIR" && find setup.cfg pyproject.toml README.md edge -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

if [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo), or use --dry-run to see the steps" >&2
    exit 1
fi

# --- uninstall -----------------------------------------------------------------------------------------

uninstall() {
    step "Stopping the service"
    if systemd_running; then
        if systemctl is-active --quiet "$UNIT"; then run systemctl stop "$UNIT"; else note "not running"; fi
        if systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then run systemctl disable "$UNIT"; else note "not enabled"; fi
    else
        note "systemd is not running here; nothing to stop"
    fi

    step "Removing the systemd unit"
    if [ -e "$UNIT_DIR/$UNIT" ]; then
        run rm -f "$UNIT_DIR/$UNIT"
        if systemd_running; then run systemctl daemon-reload; fi
    else
        note "already gone: $UNIT_DIR/$UNIT"
    fi

    step "Removing the command $BIN_LINK"
    if [ -L "$BIN_LINK" ] && [ "$(readlink "$BIN_LINK")" = "$PREFIX/venv/bin/doorbell-edge" ]; then
        run rm -f "$BIN_LINK"
    elif [ -e "$BIN_LINK" ] || [ -L "$BIN_LINK" ]; then
        note "leaving $BIN_LINK: it does not point into $PREFIX, so this script did not make it"
    else
        note "already gone: $BIN_LINK"
    fi

    step "Removing the application in $PREFIX"
    created_gpio=0
    [ -e "$GPIO_MARK" ] && created_gpio=1
    if [ -e "$PREFIX" ]; then run rm -rf "$PREFIX"; else note "already gone: $PREFIX"; fi

    step "Removing the service user $SERVICE_USER"
    if id "$SERVICE_USER" >/dev/null 2>&1; then
        run userdel "$SERVICE_USER"
    else
        note "already gone: user $SERVICE_USER"
    fi
    # userdel removes the user's own group on Debian; one left behind (USERGROUPS_ENAB no) goes too.
    if getent group "$SERVICE_USER" >/dev/null 2>&1 && ! id "$SERVICE_USER" >/dev/null 2>&1; then
        run groupdel "$SERVICE_USER"
    fi
    if [ "$created_gpio" -eq 1 ] && getent group gpio >/dev/null 2>&1; then
        if [ -z "$(getent group gpio | cut -d: -f4)" ] || [ "$DRY_RUN" -eq 1 ]; then
            run groupdel gpio
        else
            note "keeping the gpio group this script created: other users are in it now"
        fi
    fi

    step "State and configuration"
    if [ "$PURGE" -eq 1 ]; then
        for dir in "$STATE_DIR" "$CONFIG_DIR"; do
            if [ -e "$dir" ]; then run rm -rf "$dir"; else note "already gone: $dir"; fi
        done
    else
        for dir in "$STATE_DIR" "$CONFIG_DIR"; do
            if [ -e "$dir" ]; then note "kept: $dir (delete it with --purge)"; fi
        done
    fi
}

# --- install -------------------------------------------------------------------------------------------

install_all() {
    step "Checking the system"
    if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        pretty=$(. /etc/os-release && echo "${PRETTY_NAME:-unknown}")
        # shellcheck disable=SC1091
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
        note "found $pretty"
        case "$codename" in
            buster|bullseye) echo "install.sh: $codename is too old; Bookworm (12) or later is needed" >&2; exit 1 ;;
        esac
    fi
    command -v apt-get >/dev/null 2>&1 || { echo "install.sh: apt-get not found; this script is for Debian-based systems" >&2; exit 1; }
    [ -f "$SRC_DIR/setup.cfg" ] || { echo "install.sh: run me from a doorbell-edge checkout ($SRC_DIR has no setup.cfg)" >&2; exit 1; }
    if [ -e "$BIN_LINK" ] && ! [ -L "$BIN_LINK" ]; then
        echo "install.sh: $BIN_LINK exists and is not a link (another doorbell-edge installed with pip?); remove it first" >&2
        exit 1
    fi

    step "Installing apt packages"
    packages="python3 python3-venv python3-pip"
    for optional in python3-picamera2 python3-gpiozero; do
        if apt-cache show "$optional" >/dev/null 2>&1; then
            packages="$packages $optional"
        else
            note "$optional is not in this archive (not a Raspberry Pi OS?); skipping it"
        fi
    done
    missing=""
    for pkg in $packages; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        run apt-get update
        # shellcheck disable=SC2086
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    else
        note "unchanged: already installed: $packages"
    fi

    step "Creating the service user $SERVICE_USER"
    if id "$SERVICE_USER" >/dev/null 2>&1; then
        note "unchanged: user $SERVICE_USER exists"
    else
        run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
    # The unit asks for both groups; plain Debian has no gpio group (Raspberry Pi OS does), so make one.
    if ! getent group gpio >/dev/null 2>&1; then
        run groupadd --system gpio
        run mkdir -p "$PREFIX"
        run touch "$GPIO_MARK"
    fi
    for group in video gpio; do
        if [ "$DRY_RUN" -eq 1 ] || getent group "$group" >/dev/null 2>&1; then
            if id -nG "$SERVICE_USER" 2>/dev/null | tr ' ' '\n' | grep -qx "$group"; then
                note "unchanged: $SERVICE_USER is in $group"
            else
                run usermod -a -G "$group" "$SERVICE_USER"
            fi
        fi
    done

    step "Installing the application into $PREFIX"
    extras=""
    if apt-cache show python3-gpiozero >/dev/null 2>&1; then extras="[pi]"; fi
    wanted="source $(source_digest) extras $extras"
    if [ -x "$PREFIX/venv/bin/python" ]; then
        note "unchanged: venv exists"
    else
        # --system-site-packages: picamera2 and libcamera come from apt and must be importable from the venv.
        run python3 -m venv --system-site-packages "$PREFIX/venv"
    fi
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ] && [ -x "$PREFIX/venv/bin/doorbell-edge" ]; then
        note "unchanged: $PREFIX/src and the venv already hold this checkout ($(cut -d' ' -f2 "$STAMP" | cut -c1-12))"
    else
        run rm -rf "$PREFIX/src" "$STAMP"
        run mkdir -p "$PREFIX/src"
        run cp -a "$SRC_DIR/setup.cfg" "$SRC_DIR/pyproject.toml" "$SRC_DIR/README.md" "$SRC_DIR/edge" "$PREFIX/src/"
        run "$PREFIX/venv/bin/pip" install --disable-pip-version-check --progress-bar off --upgrade "$PREFIX/src$extras"
        printf '    $ echo "%s" > %s\n' "$wanted" "$STAMP"
        if [ "$DRY_RUN" -eq 0 ]; then echo "$wanted" > "$STAMP"; fi
    fi

    step "The doorbell-edge command on PATH"
    if [ -L "$BIN_LINK" ] && [ "$(readlink "$BIN_LINK")" = "$PREFIX/venv/bin/doorbell-edge" ]; then
        note "unchanged: $BIN_LINK -> $PREFIX/venv/bin/doorbell-edge"
    else
        run mkdir -p "$(dirname "$BIN_LINK")"
        run ln -sfn "$PREFIX/venv/bin/doorbell-edge" "$BIN_LINK"
    fi

    step "State directory $STATE_DIR"
    # The unit's StateDirectory= makes it too, but owner commands and a first check-config run before the
    # service ever starts (and on a machine without systemd it never does).
    ensure_dir "$STATE_DIR" 0750 "$SERVICE_USER" "$SERVICE_USER"
    if [ -d "$STATE_DIR" ] && [ -n "$(find "$STATE_DIR" \( ! -user "$SERVICE_USER" -o ! -group "$SERVICE_USER" \) -print -quit 2>/dev/null)" ]; then
        note "some files there are not owned by $SERVICE_USER (a root-run command, or a user removed by --uninstall):"
        run chown -R "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
    fi

    step "Configuration in $CONFIG_DIR"
    ensure_dir "$CONFIG_DIR" 0750 root "$SERVICE_USER"
    ensure_dir "$CONFIG_DIR/secrets" 0700 root root
    # The unit loads this file as the mqtt_password credential; empty means no password.
    if [ -f "$CONFIG_DIR/secrets/mqtt_password" ]; then
        ensure_meta "$CONFIG_DIR/secrets/mqtt_password" 0600 root root
    else
        run install -m 0600 -o root -g root /dev/null "$CONFIG_DIR/secrets/mqtt_password"
    fi
    if [ -f "$CONFIG_DIR/config.yaml" ]; then
        note "keeping the existing $CONFIG_DIR/config.yaml"
        ensure_meta "$CONFIG_DIR/config.yaml" 0640 root "$SERVICE_USER"
    else
        run install -m 0640 -o root -g "$SERVICE_USER" "$SRC_DIR/deploy/config.pi.yaml" "$CONFIG_DIR/config.yaml"
    fi
    # Other files the owner put here for the service (a CA file, a second config) kept across --uninstall
    # carry the old group id, which may now belong to another group: give them to the service group again.
    stray=$(find "$CONFIG_DIR" -path "$CONFIG_DIR/secrets" -prune -o \( ! -group root ! -group "$SERVICE_USER" \) -print 2>/dev/null || true)
    if [ -n "$stray" ]; then
        set -f
        old_ifs=$IFS
        IFS='
'
        # The list is split once, at the start of the loop; run prints with the ordinary IFS.
        for path in $stray; do
            IFS=$old_ifs
            run chgrp "$SERVICE_USER" "$path"
        done
        IFS=$old_ifs
        set +f
    fi
    # Checked as the service user: that is who must be able to read the file and what it points at.
    printf '    checking: %s\n' "runuser -u $SERVICE_USER -- $PREFIX/venv/bin/doorbell-edge check-config --quiet --config $CONFIG_DIR/config.yaml"
    if [ "$DRY_RUN" -eq 0 ]; then
        runuser -u "$SERVICE_USER" -- "$PREFIX/venv/bin/doorbell-edge" check-config --quiet --config "$CONFIG_DIR/config.yaml"
    fi

    step "Installing the systemd unit"
    unit_changed=0
    if [ -f "$UNIT_DIR/$UNIT" ] && cmp -s "$SRC_DIR/systemd/$UNIT" "$UNIT_DIR/$UNIT"; then
        note "unchanged: $UNIT_DIR/$UNIT"
    else
        run install -m 0644 "$SRC_DIR/systemd/$UNIT" "$UNIT_DIR/$UNIT"
        unit_changed=1
    fi
    if systemd_running; then
        if [ "$unit_changed" -eq 1 ]; then run systemctl daemon-reload; fi
        if systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then note "unchanged: enabled"; else run systemctl enable "$UNIT"; fi
        # Restart only when something above changed (a new version, unit or ownership) or it is not running.
        if [ "$CHANGES" -gt 0 ] || ! systemctl is-active --quiet "$UNIT"; then
            run systemctl restart "$UNIT"
        else
            note "unchanged: running"
        fi
    else
        note "systemd is not running here; start it later with: systemctl enable --now doorbell-edge"
    fi

    step "Done"
    note "logs:    journalctl -u doorbell-edge -f"
    note "config:  $CONFIG_DIR/config.yaml (check with: doorbell-edge check-config --config $CONFIG_DIR/config.yaml)"
}

if [ "$MODE" = uninstall ]; then
    uninstall
    step "Done"
else
    install_all
fi
if [ "$DRY_RUN" -eq 1 ]; then
    note "dry run: $CHANGES command(s) would run; nothing was changed"
elif [ "$CHANGES" -eq 0 ]; then
    note "nothing changed"
else
    note "$CHANGES change(s) made"
fi
