#!/bin/sh
# The QEMU that the PCI tests run: QEMU 11 from Debian trixie-backports (the
# one real vfio-user client), in a trixie root made with debootstrap and
# cached outside the clone, in $VFIOMIG_QEMU_CACHE (default
# ~/.cache/vfiomig-qemu). Nothing is mounted and the host's own packages
# are not touched: QEMU runs from the root through the root's own dynamic
# loader and libraries, with its firmware directories given by -L, from a
# wrapper script the cache keeps ($CACHE/root/qemu-system-x86_64).
#
#   env.sh          make the root on first use; print the wrapper's path
#   env.sh --tap    the same, as a test: TAP lines (made or cached, the
#                   version QEMU reports, its vfio-user-pci device)
#
# Making the root needs root (debootstrap); as another user, a root made
# before is used, else the test is skipped with the reason.
set -u
CACHE=${VFIOMIG_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfiomig-qemu}
MIRROR=${VFIOMIG_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=$CACHE/root
WRAP=$ROOT/qemu-system-x86_64
tap=false
[ "${1:-}" = --tap ] && tap=true
n=0
fails=0
ok() { n=$((n + 1)); $tap && echo "ok $n - $1"; }
not_ok() {
    n=$((n + 1)); fails=$((fails + 1))
    if $tap; then echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done
    else echo "env.sh: $1" >&2; shift; for l in "$@"; do echo "env.sh:   $l" >&2; done; fi
}
finish() { $tap && echo "1..$n"; [ $fails = 0 ]; exit $?; }

# make: a trixie root in $CACHE/root.tmp, QEMU from trixie-backports in
# it, a wrapper; renamed to $CACHE/root once whole (a run cut short leaves
# no half root behind, and the next one starts over)
make_root() {
    t0=$(date +%s)
    tmp=$CACHE/root.tmp
    rm -rf "$tmp" # ours: a run of this script that did not finish
    mkdir -p "$CACHE"
    if ! debootstrap --variant=minbase --include=ca-certificates trixie "$tmp" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1; then
        not_ok "a trixie root made with debootstrap" "$(tail -n 5 "$CACHE/debootstrap.log")"
        finish
    fi
    echo "deb $MIRROR trixie-backports main" >"$tmp/etc/apt/sources.list.d/backports.list"
    if ! chroot "$tmp" sh -c 'apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -t trixie-backports qemu-system-x86' >"$CACHE/apt.log" 2>&1; then
        not_ok "QEMU installed from trixie-backports into the root" "$(tail -n 5 "$CACHE/apt.log")"
        finish
    fi
    chroot "$tmp" apt-get clean >/dev/null 2>&1
    cat >"$tmp/qemu-system-x86_64" <<'EOF'
#!/bin/sh
# QEMU from this trixie root, run with the root's loader and libraries
# (made by vfiomig's tests/qemu/env.sh)
R=$(dirname "$(readlink -f "$0")")
exec "$R/lib64/ld-linux-x86-64.so.2" --library-path "$R/lib/x86_64-linux-gnu:$R/usr/lib/x86_64-linux-gnu" \
    "$R/usr/bin/qemu-system-x86_64" -L "$R/usr/share/qemu" -L "$R/usr/share/seabios" "$@"
EOF
    chmod 755 "$tmp/qemu-system-x86_64"
    rm -rf "$ROOT"
    mv "$tmp" "$ROOT"
    ok "a trixie root with QEMU from trixie-backports, made in $(($(date +%s) - t0)) s (cached in $ROOT)"
}

if [ -x "$WRAP" ]; then
    ok "the trixie root with QEMU, from the cache ($ROOT)"
elif [ "$(id -u)" != 0 ]; then
    if $tap; then
        echo "1..0 # SKIP making the trixie root for QEMU 11 needs root (debootstrap); run make check as root once"
        exit 0
    fi
    not_ok "a trixie root for QEMU 11" "making it needs root (debootstrap)"
    finish
elif ! command -v debootstrap >/dev/null 2>&1; then
    not_ok "debootstrap is installed (make check installs it when run as root)"
    finish
else
    # one maker at a time; the others wait for its root
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    if [ -x "$WRAP" ]; then ok "the trixie root with QEMU, from the cache ($ROOT)"; else make_root; fi
    flock -u 9
fi

ver=$("$WRAP" --version 2>&1 | head -n 1)
case $ver in
"QEMU emulator version 11."*) ok "it runs: $ver" ;;
*) not_ok "QEMU 11 runs from the root" "it says: $ver" ;;
esac
if "$WRAP" -device vfio-user-pci,help 2>&1 | grep -q "socket=<SocketAddress>"; then
    ok "it has the vfio-user-pci device"
else
    not_ok "it has the vfio-user-pci device" "$("$WRAP" -device vfio-user-pci,help 2>&1 | head -n 3)"
fi
$tap || echo "$WRAP"
finish
