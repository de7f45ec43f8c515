#!/bin/sh
# The real-kernel test: boot Debian's newest 6.12 kernel (the archive's
# linux-image-6.12.*-amd64-unsigned) under qemu-system-x86_64 with TCG, with
# an initramfs of busybox-static, the kernel's vfio, vfio_iommu_type1 and
# mdev modules, the kernel's own sample mdev driver samples/vfio-mdev/mtty.c
# (from linux-source-6.12) built out of tree against that kernel's headers,
# and a static vfiomig. In the guest: two mtty mdevs; `vfiomig conform`
# against one through the group/container path (and the cdev, when the
# kernel has it); a live migration of one into the other through the kernel
# backend (`vfiomig migrate` / `vfiomig receive` with vfio-group: devices),
# with a recognisable state put into the source's UART registers and FIFO
# through its BAR (`vfiomig region`) and read back from the destination; a
# migration from a source the kernel kept in STOP_COPY across close and
# reopen.
# The host reads the guest's serial console. Also: vfiomig's own uAPI
# definitions compiled against that kernel's vfio.h and iommufd.h.
#
# Downloads and what is built from them are cached outside the clone, in
# $VFIOMIG_KERNEL_CACHE (default ~/.cache/vfiomig-kernel), per kernel ABI.
# Skipped, with the reason, only where qemu-system-x86_64 is not installed
# (make check installs it when run as root). TAP output.
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${VFIOMIG_STATIC:?set VFIOMIG_STATIC to a statically linked vfiomig}
CACHE=${VFIOMIG_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfiomig-kernel}
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
finish() { echo "1..$n"; [ $fails = 0 ]; exit $?; }
bail() { not_ok "$@"; finish; }
t0=$(date +%s)

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    echo "1..0 # SKIP qemu-system-x86_64 is not installed (make check installs qemu-system-x86 and busybox-static when run as root)"
    exit 0
fi
BUSYBOX=$(command -v busybox || true)
if [ -z "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then
    bail "a static busybox is installed (busybox-static)" "found: ${BUSYBOX:-none}"
fi

# --- the newest 6.12 kernel the archive offers -------------------------
newest() {
    apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' 2>/dev/null |
        awk '{print $1}' | sort -V | tail -n 1
}
pkg=$(newest)
if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null 2>&1
    pkg=$(newest)
fi
[ -n "$pkg" ] || bail "a linux-image-6.12 package in the archive" \
    "apt-cache finds none: is bookworm-security in the apt sources?"
abi=${pkg#linux-image-}
abi=${abi%-amd64-unsigned}
ver=$(apt-cache show "$pkg" | awk '/^Version:/ {print $2; exit}')
K=$CACHE/$abi
mkdir -p "$CACHE/debs" "$K"

# --- download and build (cached) -----------------------------------------
if [ ! -f "$K/ready" ]; then
    log=$K/build.log
    : >"$log"
    (
        set -e
        cd "$CACHE/debs"
        need=""
        for p in "linux-image-$abi-amd64-unsigned" "linux-headers-$abi-amd64" \
            "linux-headers-$abi-common" "linux-kbuild-$abi"; do
            ls "${p}_"*.deb >/dev/null 2>&1 || need="$need $p"
        done
        ls "linux-source-6.12_${ver}_"*.deb >/dev/null 2>&1 || need="$need linux-source-6.12=$ver"
        # shellcheck disable=SC2086
        [ -z "$need" ] || apt-get download $need
        rm -rf "$K/root" "$K/mtty" "$K/modules" "$K/uapi"
        mkdir -p "$K/root" "$K/mtty" "$K/modules" "$K/uapi/linux"
        for p in "linux-image-$abi-amd64-unsigned" "linux-headers-$abi-amd64" \
            "linux-headers-$abi-common" "linux-kbuild-$abi"; do
            dpkg-deb -x "$(ls "${p}_"*.deb | sort -V | tail -n 1)" "$K/root"
        done
        dpkg-deb --fsys-tarfile "linux-source-6.12_${ver}_all.deb" |
            tar -xO ./usr/src/linux-source-6.12.tar.xz |
            tar -xJO linux-source-6.12/samples/vfio-mdev/mtty.c >"$K/mtty/mtty.c"
        # the headers' Makefile includes the common one by an absolute path
        hdr=$K/root/usr/src/linux-headers-$abi-amd64
        echo "include $K/root/usr/src/linux-headers-$abi-common/Makefile" >"$hdr/Makefile"
        echo 'obj-m := mtty.o' >"$K/mtty/Kbuild"
        make -C "$hdr" M="$K/mtty" CONFIG_DEBUG_INFO_BTF_MODULES= modules
        mods=$K/root/lib/modules/$abi-amd64/kernel/drivers/vfio
        for m in vfio.ko vfio_iommu_type1.ko mdev/mdev.ko; do
            xz -dc "$mods/$m.xz" >"$K/modules/$(basename "$m")"
        done
        cp "$K/mtty/mtty.ko" "$K/modules/"
        cp "$K/root/boot/vmlinuz-$abi-amd64" "$K/vmlinuz"
        cp "$K/root/usr/src/linux-headers-$abi-common/include/uapi/linux/vfio.h" \
            "$K/root/usr/src/linux-headers-$abi-common/include/uapi/linux/iommufd.h" "$K/uapi/linux/"
        grep -E '^(# )?CONFIG_(IOMMUFD|VFIO_DEVICE_CDEV)[ =]' "$K/root/boot/config-$abi-amd64" >"$K/config" || true
        rm -rf "$K/root"
        touch "$K/ready"
    ) >>"$log" 2>&1 || bail "kernel $abi and mtty.ko downloaded and built" "$(tail -n 15 "$log")"
    ok "kernel $abi ($ver) downloaded, mtty.ko built out of tree ($(($(date +%s) - t0)) s; cached in $K)"
else
    ok "kernel $abi ($ver) and mtty.ko from the cache ($K)"
fi

# --- vfiomig's uAPI numbers against this kernel's headers ---------------
if out=$(cc -fsyntax-only -D__user= -DVFM_UAPI_CHECK_612 -I"$K/uapi" "$SRC/src/kernel/uapi_check.c" 2>&1); then
    ok "vfiomig's kernel uAPI definitions match $abi's vfio.h and iommufd.h"
else
    not_ok "vfiomig's kernel uAPI definitions match $abi's vfio.h and iommufd.h" "$out"
fi

# --- the initramfs ---------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
I=$work/initramfs
mkdir -p "$I/bin" "$I/lib" "$I/proc" "$I/sys" "$I/dev" "$I/tmp"
cp "$BUSYBOX" "$I/bin/busybox"
cp "$BIN" "$I/bin/vfiomig"
[ -n "${FDPASS:-}" ] && cp "$FDPASS" "$I/bin/fdpass"
cp "$K/modules/"*.ko "$I/lib/"
cat >"$I/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
echo
say() { echo "VFIOMIG: $*"; }
for m in vfio vfio_iommu_type1 mdev mtty; do
    insmod /lib/$m.ko && say "module $m" || say "insmod $m failed"
done
T=/sys/devices/virtual/mtty/mtty/mdev_supported_types/mtty-1
U1=83b8f4f2-509f-382f-3c1e-e6bfe0fa1001
U2=83b8f4f2-509f-382f-3c1e-e6bfe0fa1002
echo $U1 >$T/create && echo $U2 >$T/create && say "mdevs created"
g1=$(basename "$(readlink /sys/bus/mdev/devices/$U1/iommu_group)")
g2=$(basename "$(readlink /sys/bus/mdev/devices/$U2/iommu_group)")
say "groups $g1 $g2"
say "BEGIN conform-tap"
vfiomig conform --vfio-group /dev/vfio/$g1 --device $U1
say "END conform-tap $?"
say "BEGIN conform-json"
vfiomig conform --vfio-group /dev/vfio/$g1 --device $U1 --json --send-stop-copy-to-pre-copy
say "END conform-json $?"
if [ -d /dev/vfio/devices ]; then
    c=$(ls /dev/vfio/devices | head -n 1)
    say "BEGIN conform-cdev"
    vfiomig conform --vfio-cdev /dev/vfio/devices/$c --json
    say "END conform-cdev $?"
else
    say "no cdev"
fi
D1=vfio-group:/dev/vfio/$g1:$U1
D2=vfio-group:/dev/vfio/$g2:$U2
# a recognisable state in the source's UART (its BAR0): line control 0x1b,
# scratch 0x5a, and "VFIOMIG" in its FIFO
say "BEGIN program"
w=0
vfiomig region -d $D1 -i 0 --write 3:1b && vfiomig region -d $D1 -i 0 --write 7:5a && w=1
for b in 56 46 49 4f 4d 49 47; do vfiomig region -d $D1 -i 0 --write 0:$b || w=0; done
[ $w = 1 ] &&
    echo "lcr $(vfiomig region -d $D1 -i 0 --read 3:1) scr $(vfiomig region -d $D1 -i 0 --read 7:1) lsr $(vfiomig region -d $D1 -i 0 --read 5:1)"
say "END program $?"
# mig NAME FROM TO: migrate device FROM into device TO through a UNIX socket;
# prints both sides' JSON, sets $mrc and $rrc
mig() {
    vfiomig receive --device $3 --listen unix:/tmp/$1.sock --json >/tmp/$1.json 2>/tmp/$1.err &
    rx=$!
    sleep 1
    vfiomig migrate --device $2 --to unix:/tmp/$1.sock --json
    mrc=$?
    wait $rx
    rrc=$?
    cat /tmp/$1.json /tmp/$1.err
}
say "BEGIN migrate"
mig m1 $D1 $D2
say "END migrate $mrc $rrc"
# the same registers and bytes, read back from the destination
say "BEGIN readback"
f=""
for i in 1 2 3 4 5 6 7; do f="$f$(vfiomig region -d $D2 -i 0 --read 0:1)"; done
echo "lcr $(vfiomig region -d $D2 -i 0 --read 3:1) scr $(vfiomig region -d $D2 -i 0 --read 7:1) fifo $f lsr $(vfiomig region -d $D2 -i 0 --read 5:1)"
say "END readback $?"
# a source left in STOP_COPY by another process (the kernel keeps the state
# across close and reopen): migrate reads it first and never sends STOP_COPY
# -> PRE_COPY, which kernels before the 2026 fix loop on
say "BEGIN leftover"
vfiomig state --device $D2 --set STOP_COPY >/dev/null
echo "reopened $(vfiomig state --device $D2)"
mig m2 $D2 $D1
echo "states $(vfiomig state --device $D2) $(vfiomig state --device $D1)"
say "END leftover $mrc $rrc"
# a device fd opened by someone else (a manager, as libvirt for QEMU) and
# inherited: vfio-fd:N reads its state and moves it; a fresh open agrees
if [ -x /bin/fdpass ]; then
    say "BEGIN fdpass"
    echo "adopted $(fdpass /dev/vfio/$g1 $U1 /bin/vfiomig state --device vfio-fd:%FD)"
    fdpass /dev/vfio/$g1 $U1 /bin/vfiomig state --device vfio-fd:%FD --set RUNNING >/dev/null
    echo "set $? now $(vfiomig state --device $D1)"
    echo "bad $(vfiomig state --device vfio-fd:7 2>&1 | tail -n 1)"
    say "END fdpass 0"
fi
say "DONE"
poweroff -f
INIT
chmod +x "$I/init"
python3 "$SRC/tests/kernel/mkinitramfs.py" "$I" "$work/initrd" || bail "the initramfs is built"

# --- boot ----------------------------------------------------------------
t1=$(date +%s)
timeout 900 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 1 -nographic -no-reboot \
    -kernel "$K/vmlinuz" -initrd "$work/initrd" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3" </dev/null >"$work/serial" 2>&1
qrc=$?
# the console without carriage returns and terminal escapes (the firmware
# clears the screen, and its last words share a line with the guest's first)
tr -d '\r' <"$work/serial" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/\(.\)VFIOMIG: /\1\nVFIOMIG: /g' >"$work/console"
boot=$(($(date +%s) - t1))
section() { sed -n "/^VFIOMIG: BEGIN $1\$/,/^VFIOMIG: END $1 /p" "$work/console" | sed '1d;$d'; }
grep -q "^VFIOMIG: DONE" "$work/console" &&
    ok "the guest booted $abi under TCG, ran everything and powered off ($boot s)" ||
    not_ok "the guest booted $abi under TCG, ran everything and powered off" "qemu exit $qrc after $boot s" "$(tail -n 25 "$work/console")"
mods=$(grep -c "^VFIOMIG: module " "$work/console")
[ "$mods" = 4 ] && grep -q "^VFIOMIG: mdevs created" "$work/console" &&
    ok "vfio, vfio_iommu_type1, mdev and the out-of-tree mtty loaded; two mtty mdevs created" ||
    not_ok "vfio, vfio_iommu_type1, mdev and the out-of-tree mtty loaded; two mtty mdevs created" "$(grep '^VFIOMIG' "$work/console" | head -n 12)" "$(grep -i -E 'mtty|vfio|mdev' "$work/console" | grep -v '^VFIOMIG' | cut -c1-200 | head -n 10)"

# --- the conformance suite against mtty ------------------------------------
section conform-tap >"$work/tap"
section conform-json >"$work/json"
if python3 - "$work/tap" "$work/json" >"$work/findings" 2>&1 <<'PY'
import json, re, sys
tap = open(sys.argv[1]).read().splitlines()
lines = [l for l in tap if re.match(r"^(not )?ok \d+ ", l)]
plan = [l for l in tap if re.match(r"^1\.\.\d+$", l)]
assert plan and int(plan[0][3:]) == len(lines) > 50, (plan, len(lines))
d = json.load(open(sys.argv[2]))
assert d["checks_run"] == len(d["checks"]) == len(lines), d.get("error")
assert d["flags"].startswith("STOP_COPY"), d["flags"]
bad = [c for c in d["checks"] if c["verdict"] == "fail"]
for c in bad:
    assert c["rule"] and c["expected"] and c["seen"], c
print("mtty (%s): %d checks, %d passed, %d failed, %d skipped" % (
    d["flags"], d["checks_run"], d["passed"], d["failed"], d["skipped"]))
for c in bad:
    print("mtty breaks %s: %s: expected %s, saw %s" % (c["rule"], c["what"], c["expected"], c["seen"]))
# its four deviations, each found by its own rule: 0 instead of ENOMSG at
# pre-copy's temporary end; a state kept across close and reopen; a
# corrupted state loaded; a second DMA_LOGGING_START accepted (observed on
# 6.12: mtty's log ops accept START and STOP and answer REPORT with
# EOPNOTSUPP, so it keeps no log: the report checks are skipped)
assert {c["rule"] for c in bad} == {"precopy-enomsg", "reopen", "corrupted", "dma-log"}, bad
dl = [c for c in d["checks"] if c["rule"] == "dma-log"]
assert [c["what"] for c in dl if c["verdict"] == "fail"] == ["a second START while logging is refused"], dl
assert any(c["verdict"] == "skip" and "EOPNOTSUPP" in c["expected"] for c in dl), dl
# MIG_PRECOPY_INFOv2: not in 6.12 (ENOTTY), reported unsupported; its
# precopy info flags carry nothing (v1)
pv = [c for c in d["checks"] if c["rule"] == "precopy-v2"]
assert all(c["verdict"] != "fail" for c in pv), pv
assert any(c["verdict"] == "pass" and c["seen"] == "ENOTTY" and "unsupported" in c["what"] for c in pv), pv
assert any(c["verdict"] == "skip" and "not offered (ENOTTY)" in c["expected"] for c in pv), pv
assert any(c["verdict"] == "pass" and "flags carry nothing" in c["what"] for c in pv), pv
# STOP_COPY -> PRE_COPY[_P2P], sent on request (--send-stop-copy-to-pre-copy):
# this kernel refuses it, state unchanged
sc = [c for c in d["checks"] if c["rule"] == "refusal" and c["what"].startswith("STOP_COPY -> PRE_COPY")]
assert len(sc) == 2 and all(c["verdict"] == "pass" for c in sc), sc
PY
then
    ok "vfiomig conform ran every check against the kernel's mtty, through the group path; findings:"
    sed 's/^/# /' "$work/findings"
else
    not_ok "vfiomig conform ran every check against the kernel's mtty, through the group path" "$(cat "$work/findings")" "$(head -c 1500 "$work/tap")"
fi
if grep -q "^VFIOMIG: no cdev" "$work/console"; then
    ok "the cdev path # SKIP $abi has no VFIO device cdev ($(tr '\n' ' ' <"$K/config"))"
else
    section conform-cdev | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["checks_run"] > 50' &&
        ok "vfiomig conform against mtty through the device cdev (iommufd)" ||
        not_ok "vfiomig conform against mtty through the device cdev (iommufd)" "$(section conform-cdev | head -c 800)"
fi

# --- a live migration through the kernel backend ---------------------------
section migrate >"$work/mig"
if grep -q "^VFIOMIG: END migrate 0 0" "$work/console" &&
    python3 - "$work/mig" >"$work/migsum" <<'PY'
import json, sys
docs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
send = [d for d in docs if d["side"] == "migrate"]
recv = [d for d in docs if d["side"] == "receive"]
assert send and recv and send[0]["ok"] and recv[0]["ok"], docs
s = send[0]
assert s["bytes"] > 0 and s["bytes"] == recv[0]["bytes"], docs
# mtty's pre-copy data is a few bytes: it converges in a round or two, on
# its own MIG_DATA_SIZE, with an expected downtime (not 9.2e12 ms)
pc = s["precopy"]
assert pc["devices"] == 1 and 1 <= pc["rounds"] <= 2 and pc["converged"], pc
assert pc["estimate"] == "MIG_DATA_SIZE" and 0 <= pc["expected_downtime_ms"] < 300, pc
print("downtime %.1f ms, %d state bytes (%d in pre-copy); pre-copy converged in %d round(s), "
      "~%.1f ms expected (%s)" % (s["downtime_ms"], s["bytes"], pc["bytes"], pc["rounds"],
                                  pc["expected_downtime_ms"], pc["estimate"]))
PY
then
    ok "mtty live-migrated into a second mtty through the kernel backend: $(cat "$work/migsum")"
else
    not_ok "mtty live-migrated into a second mtty through the kernel backend" "$(cat "$work/mig" "$work/migsum")" "$(grep '^VFIOMIG: END migrate' "$work/console")"
fi
# --- what was in the source arrived in the destination ---------------------
prog=$(section program)
back=$(section readback)
if grep -q "^VFIOMIG: END program 0" "$work/console" && [ "$prog" = "lcr 1b scr 5a lsr 01" ] &&
    [ "$back" = "lcr 1b scr 5a fifo 5646494f4d4947 lsr 60" ]; then
    ok "the source mtty's UART state arrived: line control 0x1b, scratch 0x5a and \"VFIOMIG\" in its FIFO, read back from the destination"
else
    not_ok "the source mtty's UART state arrived: line control 0x1b, scratch 0x5a and \"VFIOMIG\" in its FIFO, read back from the destination" "source: $prog" "destination: $back" "$(grep '^VFIOMIG: END program' "$work/console")"
fi

# --- a source left in STOP_COPY ---------------------------------------------
section leftover >"$work/left"
if grep -q "^VFIOMIG: END leftover 0 0" "$work/console" && grep -q "^reopened STOP_COPY$" "$work/left" &&
    grep -q "^states STOP STOP$" "$work/left" && python3 - "$work/left" <<'PY'
import json, sys
docs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
send = [d for d in docs if d["side"] == "migrate"]
assert send and send[0]["ok"], docs
assert send[0]["device_initial_state"] == ["STOP_COPY"], send[0]
assert "was in STOP_COPY" in send[0]["notes"] and send[0]["precopy"]["devices"] == 0, send[0]
PY
then
    ok "a source the kernel kept in STOP_COPY across close and reopen: migrate reads it first, moves it to STOP, migrates it stopped (no pre-copy), and says so"
else
    not_ok "a source the kernel kept in STOP_COPY across close and reopen: migrate reads it first, moves it to STOP, migrates it stopped (no pre-copy), and says so" "$(cat "$work/left")" "$(grep '^VFIOMIG: END leftover' "$work/console")"
fi
# --- a device fd handed over --------------------------------------------------
section fdpass >"$work/fdpass"
if [ -z "${FDPASS:-}" ]; then
    ok "a device fd handed over (vfio-fd:N) # SKIP no fdpass helper was built"
elif grep -q "^adopted STOP$" "$work/fdpass" && grep -q "^set 0 now RUNNING$" "$work/fdpass" &&
    grep -q "^bad .*vfio-fd:7.*bad file descriptor" "$work/fdpass"; then
    ok "a device fd opened by a manager and inherited (vfio-fd:N, as libvirt hands one to QEMU): its state read (STOP) and set (RUNNING, which a fresh open through the group sees); a number that is no open fd is refused (EBADF)"
else
    not_ok "a device fd opened by a manager and inherited (vfio-fd:N)" "$(cat "$work/fdpass")" "$(grep -i 'fdpass' "$work/console" | head -n 5)"
fi
echo "# the real-kernel test took $(($(date +%s) - t0)) s (boot and guest run $boot s)"
finish
