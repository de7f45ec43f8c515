#!/bin/sh
# Installs what vfiomig needs to build and test, with apt, when run as root
# on Debian; otherwise says what is missing. Quiet when nothing is missing.
set -eu

# package : what needs it
PKGS="gcc make meson ninja-build pkg-config libcmocka-dev libxxhash-dev libjson-c-dev valgrind python3 clang qemu-system-x86 busybox-static xz-utils doxygen libgnutls28-dev gnutls-bin debootstrap"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Update the package lists only when a first install attempt fails, so a
    # machine with fresh lists does not pay for it.
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends $missing >/dev/null
    }
    exit 0
fi
echo "install-deps: missing packages:$missing" >&2
echo "install-deps: run 'sudo apt-get install$missing' (or run make as root)" >&2
exit 1
