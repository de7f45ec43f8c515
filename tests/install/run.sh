#!/bin/sh
# The library as a VMM gets it: `meson install` into a temporary root, a
# program (embed.c) compiled and linked with nothing but what
# `pkg-config --cflags --libs vfiomig` says there, run against the
# installed shared library, migrating devices with the public API. TAP.
# Usage: run.sh BUILD_DIR SOURCE_DIR
set -u
build=$1
src=$2
cc=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vfiomig-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); fail=1; echo "not ok $n - $1"; [ -f "$tmp/log" ] && sed 's/^/# /' "$tmp/log"; }

echo "1..5"
if meson install -C "$build" --no-rebuild --destdir "$tmp/root" >"$tmp/log" 2>&1; then
    ok "meson install into a temporary root"
else
    notok "meson install into a temporary root"; exit 1
fi
pc=$(find "$tmp/root" -name vfiomig.pc | head -n 1)
if [ -n "$pc" ] && ! grep -q '^Libs.private:.*-l' "$pc" && grep -q '^Requires.private:' "$pc"; then
    ok "vfiomig.pc installed; its dependencies are Requires.private, not -l flags"
else
    echo "# $pc:"; [ -n "$pc" ] && sed 's/^/# /' "$pc"
    notok "vfiomig.pc installed; its dependencies are Requires.private, not -l flags"
fi
export PKG_CONFIG_PATH="$(dirname "$pc")" PKG_CONFIG_SYSROOT_DIR="$tmp/root"
flags=$(pkg-config --cflags --libs vfiomig 2>"$tmp/log")
libdir=$(pkg-config --variable=libdir vfiomig)
# nothing of the source tree: only the installed headers and library
# shellcheck disable=SC2086
if [ -n "$flags" ] && $cc -std=gnu11 -Wall -Wextra -Werror -pthread -o "$tmp/embed" \
        "$src/tests/install/embed.c" $flags >"$tmp/log" 2>&1; then
    ok "embed.c builds with: pkg-config --cflags --libs vfiomig ($flags)"
else
    notok "embed.c builds with: pkg-config --cflags --libs vfiomig"; exit 1
fi
lib=$(LD_LIBRARY_PATH="$libdir" ldd "$tmp/embed" | awk '/libvfiomig/ {print $3}')
case "$lib" in
"$tmp/root"*) ok "it runs against the installed libvfiomig ($lib)" ;;
*) echo "# libvfiomig resolved to: $lib"; notok "it runs against the installed libvfiomig" ;;
esac
if LD_LIBRARY_PATH="$libdir" timeout 60 "$tmp/embed" >"$tmp/log" 2>&1; then
    ok "$(tail -n 1 "$tmp/log")"
else
    notok "the installed library migrates two P2P devices over vfio-user"
fi
exit $fail
