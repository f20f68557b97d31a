#!/usr/bin/env bash
# The real install test: deploy/install.sh run as root on a throwaway Debian bookworm root (debootstrap +
# chroot), then the installed daemon run as the service user, a second install, --uninstall and --purge.
#
#   sudo deploy/test-install.sh [--keep] [--no-cache]
#
#   --keep      leave the throwaway root in place (its path is printed; file systems are unmounted anyway)
#   --no-cache  ignore the cached debootstrap tarball (it is kept for 7 days in $TMPDIR or /var/tmp)
#
# Needs root, debootstrap (installed from apt when missing) and the network: the Debian mirror this host
# uses (or $DEBIAN_MIRROR, default deb.debian.org) and PyPI. Prints PASS or FAIL per check and the total
# time, and exits 1 when any check failed. The daemon inside talks to nothing but 127.0.0.1. It takes 4 to
# 8 minutes on a 2-core machine (debootstrap and the first install take 1 to 2.5 minutes each).
# The checks are functions called through check/fatal, which shellcheck cannot follow.
# shellcheck disable=SC2317
set -euo pipefail

SRC_DIR=$(cd "$(dirname "$0")/.." && pwd)
SUITE=bookworm
RUN_FOR=20
KEEP=0
USE_CACHE=1
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        --no-cache) USE_CACHE=0 ;;
        --help|-h) awk 'NR > 1 && /^#/ { if (/shellcheck|^# The checks/) exit; sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "test-install.sh: unknown option: $arg" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "test-install.sh: run as root (it builds a Debian root with debootstrap and chroots into it)" >&2
    exit 1
fi

TMP_BASE=${TMPDIR:-/var/tmp}
WORK=$(mktemp -d "$TMP_BASE/doorbell-edge-test-install.XXXXXX")
ROOT="$WORK/root"
LOG="$WORK/test-install.log"
CACHE_DIR="$TMP_BASE/doorbell-edge-test-install-cache"
START=$SECONDS
FAILED=0
PASSED=0

say() { printf '%s\n' "$*" | tee -a "$LOG"; }

# --- cleanup: always unmount and remove, whatever happened -----------------------------------------------

mounts_under_root() { awk -v r="$ROOT" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r; }

cleanup() {
    status=$?
    trap - EXIT INT TERM
    # Processes started inside the root (a daemon left running after a failed check) go first: they hold
    # the mounts. Only processes whose root directory is this throwaway root are touched.
    for proc in /proc/[0-9]*; do
        if [ "$(readlink "$proc/root" 2>/dev/null)" = "$ROOT" ]; then
            kill -KILL "${proc#/proc/}" 2>/dev/null || true
        fi
    done
    for mnt in $(mounts_under_root); do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
    done
    if [ -n "$(mounts_under_root)" ]; then
        echo "test-install.sh: still mounted under $ROOT, NOT removing $WORK:" >&2
        mounts_under_root >&2
        exit 1
    fi
    if [ -f "$LOG" ]; then
        cp "$LOG" "$TMP_BASE/doorbell-edge-test-install.log" 2>/dev/null || true
    fi
    if [ "$KEEP" -eq 1 ]; then
        echo "kept the throwaway root: $ROOT"
    else
        rm -rf --one-file-system "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- checks ----------------------------------------------------------------------------------------------

# check NAME CMD...: run CMD (output to the log); PASS or FAIL.
check() {
    local name=$1
    shift
    printf '\n--- check: %s\n' "$name" >>"$LOG"
    if "$@" >>"$LOG" 2>&1; then
        say "PASS  $name"
        PASSED=$((PASSED + 1))
    else
        say "FAIL  $name"
        FAILED=$((FAILED + 1))
    fi
}

# fatal NAME CMD...: like check, but nothing after it can run when it fails.
fatal() {
    check "$@"
    if [ "$FAILED" -gt 0 ]; then
        say "the remaining checks need this step; the last lines of $LOG:"
        tail -n 40 "$LOG"
        finish
    fi
}

finish() {
    local elapsed=$((SECONDS - START))
    say ""
    say "$PASSED passed, $FAILED failed"
    say "total time: $((elapsed / 60)) min $((elapsed % 60)) s (log: $TMP_BASE/doorbell-edge-test-install.log)"
    if [ "$FAILED" -gt 0 ]; then exit 1; fi
    exit 0
}

# in_root CMD...: run CMD inside the throwaway root as root, with a clean environment like a login shell's.
in_root() {
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}

# as_service CMD...: run CMD inside the root as the service user, the way an owner would (runuser keeps PATH).
as_service() { in_root runuser -u doorbell-edge -- "$@"; }

# --- building the throwaway root -------------------------------------------------------------------------

debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    # The first Debian archive this host's apt uses (deb822 .sources or one-line .list), never -security.
    local found
    found=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null |
        grep -oE '(https?)://[^ ]+/debian/?( |$)' | grep -v security | head -n 1 | tr -d ' ' || true)
    echo "${found:-http://deb.debian.org/debian}"
}

make_root() {
    command -v debootstrap >/dev/null 2>&1 || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
    } || return 1
    local mirror tarball
    mirror=$(debian_mirror)
    echo "mirror: $mirror"
    mkdir -p "$CACHE_DIR"
    tarball="$CACHE_DIR/debootstrap-$SUITE-$(dpkg --print-architecture).tgz"
    # A week-old tarball would install superseded packages; build a fresh one then.
    find "$tarball" -mtime +7 -delete 2>/dev/null || true
    if [ "$USE_CACHE" -eq 0 ] || [ ! -s "$tarball" ]; then
        rm -f "$tarball.part"
        debootstrap --variant=minbase --make-tarball="$tarball.part" "$SUITE" "$WORK/tarball-work" "$mirror" &&
            mv "$tarball.part" "$tarball" || return 1
        rm -rf --one-file-system "$WORK/tarball-work"
    fi
    debootstrap --variant=minbase --unpack-tarball="$tarball" "$SUITE" "$ROOT" "$mirror"
}

mount_root() {
    mount -t proc proc "$ROOT/proc" || return 1
    mount -t sysfs sysfs "$ROOT/sys" || return 1
    # A private /dev with only the usual pseudo-devices: nothing in the root can reach the host's disks.
    mount -t tmpfs -o mode=0755,nosuid dev "$ROOT/dev" || return 1
    local node
    for node in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
        # shellcheck disable=SC2086
        set -- $node
        mknod -m 0666 "$ROOT/dev/$1" c "$2" "$3" || return 1
    done
    mkdir "$ROOT/dev/shm" "$ROOT/dev/pts" &&
        mount -t tmpfs -o mode=1777,nosuid,nodev shm "$ROOT/dev/shm" &&
        ln -s /proc/self/fd "$ROOT/dev/fd" &&
        ln -s /proc/self/fd/0 "$ROOT/dev/stdin" &&
        ln -s /proc/self/fd/1 "$ROOT/dev/stdout" &&
        ln -s /proc/self/fd/2 "$ROOT/dev/stderr"
}

copy_in() {
    # Name resolution for apt and pip; the local CA certificates of this host too, so a network that
    # inspects TLS with its own CA works inside as it does outside (ca-certificates, which python3-pip
    # pulls in, adds them to the bundle pip uses).
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf" || return 1
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        mkdir -p "$ROOT/usr/local/share/ca-certificates" &&
            cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/" || return 1
    fi
    # The checkout as git sees it (tracked and new files, no .venv or build output), else all but those.
    mkdir -p "$ROOT/root/doorbell-edge"
    if git -C "$SRC_DIR" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$SRC_DIR" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) |
            tar -xf - -C "$ROOT/root/doorbell-edge"
    else
        tar -C "$SRC_DIR" --exclude=.git --exclude=.venv --exclude=__pycache__ --exclude='*.egg-info' -cf - . |
            tar -xf - -C "$ROOT/root/doorbell-edge"
    fi
    test -x "$ROOT/root/doorbell-edge/deploy/install.sh"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

write_demo_config() {
    local port
    port=$(free_port)
    # The demo camera, the state directory the install made, and a broker port nobody listens on
    # (the daemon must run calmly without a broker; events wait in the outbox).
    cat >"$ROOT/etc/doorbell-edge/demo.yaml" <<EOF
cameras:
  front_door:
    source: demo
storage:
  state_dir: /var/lib/doorbell-edge
mqtt:
  host: 127.0.0.1
  port: $port
EOF
    in_root chown root:doorbell-edge /etc/doorbell-edge/demo.yaml
    in_root chmod 0640 /etc/doorbell-edge/demo.yaml
}

# --- what is checked -------------------------------------------------------------------------------------

INSTALL=/root/doorbell-edge/deploy/install.sh

help_prints_only_usage() {
    local out
    out=$("$SRC_DIR/deploy/install.sh" --help)
    echo "$out"
    [ "$(echo "$out" | head -n 1 | cut -c1-6)" = "Usage:" ] && ! echo "$out" | grep -qE '^(set |#|[A-Z_]+=)'
}

install_runs() { in_root "$INSTALL" >"$WORK/$1.log" 2>&1; local rc=$?; cat "$WORK/$1.log"; return "$rc"; }

on_path() {
    [ "$(in_root sh -c 'command -v doorbell-edge')" = /usr/local/bin/doorbell-edge ] &&
        [ "$(in_root readlink /usr/local/bin/doorbell-edge)" = /opt/doorbell-edge/venv/bin/doorbell-edge ] &&
        as_service doorbell-edge --version
}

service_user_is_right() {
    in_root getent passwd doorbell-edge
    in_root id doorbell-edge
    in_root getent passwd doorbell-edge | grep -q ':/var/lib/doorbell-edge:/usr/sbin/nologin$' &&
        in_root id -nG doorbell-edge | tr ' ' '\n' | grep -qx video &&
        in_root id -nG doorbell-edge | tr ' ' '\n' | grep -qx gpio
}

state_dir_is_right() {
    local got
    got=$(in_root stat -c '%a %U %G' /var/lib/doorbell-edge)
    echo "/var/lib/doorbell-edge: $got"
    [ "$got" = "750 doorbell-edge doorbell-edge" ]
}

unit_points_at_real_files() {
    local unit=/etc/systemd/system/doorbell-edge.service ok=0 path
    in_root test -f "$unit" || { echo "no $unit"; return 1; }
    for path in $(grep -E '^(ExecStart|ExecStartPre)=' "$ROOT$unit" | cut -d= -f2 | cut -d' ' -f1) \
                $(grep -E '^Documentation=file://' "$ROOT$unit" | sed 's|^Documentation=file://||'); do
        if in_root test -e "$path"; then echo "exists: $path"; else echo "MISSING: $path (named in $unit)"; ok=1; fi
    done
    return "$ok"
}

check_config_as_service_user() { as_service doorbell-edge check-config --config "$1"; }

daemon_runs() {
    as_service doorbell-edge run --config /etc/doorbell-edge/demo.yaml --for "$RUN_FOR" \
        >"$WORK/events.jsonl" 2>"$WORK/daemon.log"
    local rc=$?
    echo "exit status $rc; stderr:"
    cat "$WORK/daemon.log"
    echo "event types on stdout:"
    python3 -c 'import collections, json, sys
print(dict(collections.Counter(json.loads(line)["type"] for line in open(sys.argv[1]) if line.strip())))' \
        "$WORK/events.jsonl" | tee "$WORK/event-types.txt"
    [ "$rc" -eq 0 ] && grep -q '"type":"motion_start"' "$WORK/events.jsonl" && ! grep -q 'Traceback' "$WORK/daemon.log"
}

daemon_recorded_a_clip() {
    in_root find /var/lib/doorbell-edge -type f \( -name '*.mp4' -o -name '*.webm' \) -size +1k -printf '%p %s bytes\n' |
        tee "$WORK/clips.txt"
    [ -s "$WORK/clips.txt" ]
}

no_foreign_files_in_state() {
    local foreign
    in_root find /var/lib/doorbell-edge -printf '%M %u:%g %p\n'
    foreign=$(in_root find /var/lib/doorbell-edge \( ! -user doorbell-edge -o ! -group doorbell-edge \) -print)
    [ -z "$foreign" ] || { echo "not owned by doorbell-edge:doorbell-edge:"; echo "$foreign"; return 1; }
    # The daemon did write there (the outbox at least), so an empty directory cannot pass by accident.
    [ -n "$(in_root find /var/lib/doorbell-edge -mindepth 1 -print -quit)" ]
}

# Everything an install makes, with content hashes, owners, modes and times, and the user database lines.
manifest() {
    # shellcheck disable=SC2016
    in_root sh -c '
        find /opt/doorbell-edge /etc/doorbell-edge /etc/systemd/system/doorbell-edge.service \
             /usr/local/bin/doorbell-edge /var/lib/doorbell-edge \
             -printf "%p %y %m %u %g %s %T@ %l\n" | LC_ALL=C sort
        find /opt/doorbell-edge /etc/doorbell-edge /etc/systemd/system/doorbell-edge.service -type f -print0 |
            xargs -0 sha256sum | LC_ALL=C sort -k 2
        grep -hE "^(doorbell-edge|gpio|video):" /etc/passwd /etc/group /etc/shadow /etc/gshadow
        dpkg-query -W -f "\${Package} \${Version} \${Status}\n"'
}

second_install_changes_nothing() {
    manifest >"$WORK/manifest-before"
    install_runs install2 || return 1
    manifest >"$WORK/manifest-after"
    echo "manifest: $(wc -l <"$WORK/manifest-before") lines"
    diff "$WORK/manifest-before" "$WORK/manifest-after" || return 1
    grep -q '^    nothing changed$' "$WORK/install2.log" && ! grep -q '^    \$ ' "$WORK/install2.log"
}

uninstall_keeps_state() {
    in_root find /var/lib/doorbell-edge /etc/doorbell-edge -printf '%p %s\n' | LC_ALL=C sort >"$WORK/kept-before"
    in_root "$INSTALL" --uninstall || return 1
    local ok=0 path
    for path in /etc/systemd/system/doorbell-edge.service /opt/doorbell-edge /usr/local/bin/doorbell-edge; do
        if in_root test -e "$path" || in_root test -L "$path"; then echo "still there: $path"; ok=1; fi
    done
    if in_root id doorbell-edge; then echo "user doorbell-edge still exists"; ok=1; fi
    if in_root getent group doorbell-edge; then echo "group doorbell-edge still exists"; ok=1; fi
    # Plain Debian has no gpio group: the install made it, so the uninstall takes it away again.
    if in_root getent group gpio; then echo "group gpio (made by the install) still exists"; ok=1; fi
    in_root find /var/lib/doorbell-edge /etc/doorbell-edge -printf '%p %s\n' | LC_ALL=C sort >"$WORK/kept-after"
    diff "$WORK/kept-before" "$WORK/kept-after" || { echo "state or config changed by --uninstall"; ok=1; }
    return "$ok"
}

reinstall_adopts_kept_state() {
    # The kept files belong to a user id that no longer exists. A system user made in between (another
    # package) takes that id, so the kept clips would be its files; the new install must give them back.
    in_root useradd --system --no-create-home --shell /usr/sbin/nologin squatter || return 1
    in_root ls -ln /var/lib/doorbell-edge
    [ "$(in_root stat -c %U /var/lib/doorbell-edge/events.sqlite3)" = squatter ] ||
        echo "note: squatter did not get the old user id; the ownership repair is not exercised"
    install_runs install3 || return 1
    in_root userdel squatter
    grep -q 'chown -R doorbell-edge:doorbell-edge /var/lib/doorbell-edge' "$WORK/install3.log" &&
        grep -q 'chown root:doorbell-edge /etc/doorbell-edge/config.yaml' "$WORK/install3.log" &&
        grep -q 'chgrp doorbell-edge /etc/doorbell-edge/demo.yaml' "$WORK/install3.log" &&
        no_foreign_files_in_state && check_config_as_service_user /etc/doorbell-edge/demo.yaml &&
        [ "$(in_root stat -c '%a %U %G' /etc/doorbell-edge/config.yaml)" = "640 root doorbell-edge" ]
}

purge_removes_everything() {
    in_root "$INSTALL" --purge || return 1
    local ok=0 path
    for path in /etc/systemd/system/doorbell-edge.service /opt/doorbell-edge /usr/local/bin/doorbell-edge \
                /var/lib/doorbell-edge /etc/doorbell-edge; do
        if in_root test -e "$path" || in_root test -L "$path"; then echo "still there: $path"; ok=1; fi
    done
    if in_root id doorbell-edge; then echo "user doorbell-edge still exists"; ok=1; fi
    # A second purge finds nothing to do.
    in_root "$INSTALL" --purge | tee "$WORK/purge2.log"
    grep -q '^    nothing changed$' "$WORK/purge2.log" || ok=1
    return "$ok"
}

# --- the run ---------------------------------------------------------------------------------------------

say "test-install: $SUITE root in $ROOT, checkout $SRC_DIR"
fatal "debootstrap a minimal $SUITE root" make_root
say "      (root ready after $((SECONDS - START)) s)"
fatal "mount /proc, /sys and a private /dev in the root" mount_root
fatal "copy the checkout, resolv.conf and local CA certificates in" copy_in
check "install.sh --help prints only the usage text" help_prints_only_usage
fatal "install.sh installs as root in the root" install_runs install1
say "      (installed after $((SECONDS - START)) s)"
check "doorbell-edge is on PATH (/usr/local/bin -> the venv) and runs as the service user" on_path
check "service user: home /var/lib/doorbell-edge, nologin, groups video and gpio" service_user_is_right
check "state directory /var/lib/doorbell-edge: 0750 doorbell-edge:doorbell-edge" state_dir_is_right
check "the unit's ExecStart, ExecStartPre and Documentation files exist" unit_points_at_real_files
write_demo_config
check "check-config as the service user: the installed /etc/doorbell-edge/config.yaml" \
    check_config_as_service_user /etc/doorbell-edge/config.yaml
check "check-config as the service user: a demo camera config" check_config_as_service_user /etc/doorbell-edge/demo.yaml
check "the installed daemon runs ${RUN_FOR} s as the service user and prints motion_start" daemon_runs
say "      (events: $(cat "$WORK/event-types.txt" 2>/dev/null || echo none))"
check "the daemon recorded a clip in /var/lib/doorbell-edge" daemon_recorded_a_clip
check "no file in /var/lib/doorbell-edge is owned by anyone but doorbell-edge" no_foreign_files_in_state
check "a second install.sh run changes nothing (manifest with sha256 of every file, user db lines)" \
    second_install_changes_nothing
check "--uninstall removes unit, venv, link, user and groups; keeps /var/lib and /etc" uninstall_keeps_state
check "install after --uninstall (another user took the old uid) gives the kept state and config back" \
    reinstall_adopts_kept_state
check "--purge removes everything, /var/lib/doorbell-edge and /etc/doorbell-edge too; a second --purge changes nothing" \
    purge_removes_everything
finish
