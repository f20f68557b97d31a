#!/bin/sh
# Developer entry point on a fresh Debian / Raspberry Pi OS machine (Python 3.11+):
#
#   deploy/dev.sh run  [ARGS...]   run the daemon (default config: demo camera; no camera or broker needed)
#   deploy/dev.sh test [ARGS...]   run the test suite (pytest ARGS...)
#
# Creates ./.venv on first use and keeps it in step with setup.cfg. The tests need the mosquitto binary
# (they start their own brokers on free ports); it is installed from apt when missing.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv"
cd "$ROOT"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        echo "dev.sh: need root to run: $*" >&2; exit 1
    fi
}

apt_install() {
    echo "dev.sh: installing $* from apt" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

ensure_venv() {
    extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; rm -rf "$VENV"; python3 -m venv "$VENV"; }
    fi
    stamp="$VENV/.installed$extras"
    if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT$extras" >&2
        touch "$stamp"
    fi
}

usage() {  # the usage block of the header comment (the lines that name a command), nothing else
    echo "usage:"
    sed -n 's/^#   \(deploy\/dev\.sh .*\)$/  \1/p' "$0"
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
    run)
        ensure_venv ""
        exec "$VENV/bin/doorbell-edge" run "$@"
        ;;
    test)
        ensure_venv "[dev]"
        # Debian tools the tests use for real: a broker, shellcheck for the deploy scripts, minisign and age, setpriv/useradd for the
        # tests that act as a second user (util-linux and passwd are in every Debian base install).
        missing=""
        command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
        command -v shellcheck >/dev/null 2>&1 || missing="$missing shellcheck"
        # the agency side is checked with the standard tools an agency would use
        command -v minisign >/dev/null 2>&1 || missing="$missing minisign"
        command -v age >/dev/null 2>&1 || missing="$missing age"
        # the owner's page is tested in Debian's Chromium through Playwright (tests/web; never `playwright install`)
        command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
        # shellcheck disable=SC2086
        [ -z "$missing" ] || apt_install $missing
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    -h|--help|help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        exit 2
        ;;
esac
