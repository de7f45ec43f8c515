#!/bin/sh
# A Linux guest drives vfiomig's PCI devices under QEMU 11.1: two
# p2p-mailbox servers and a large-state one (`vfiomig serve`) attached with
# -device vfio-user-pci to a q35 machine whose RAM is a shared memfd
# backend; the kernel the real-kernel test uses (Debian's 6.12), a busybox
# initramfs, uio_pci_generic bound to the devices (their INTx) and a static
# program (tests/qemu/guest.c) that finds them by id, checks their config
# space, programs each mailbox with the other's inbox BAR address, starts
# and stops traffic and checks that every message went device to device
# exactly once, that device 0 wrote its status record into guest RAM by
# DMA, and that interrupts reached the guest (on delivery, and from the
# large device's doorbell). The host reads the serial console
# (lines "GUEST: "), and checks on its side that the messages went through
# QEMU (the servers were given the peers' BARs with DMA_MAP without an fd:
# DMA_READ/DMA_WRITE) and that a device that ran under QEMU saves and
# restores what the guest programmed into another process, through
# vfiomig's own client once QEMU is gone.
#
# The kernel and its uio modules come from the real-kernel test's cache
# ($VFIOMIG_KERNEL_CACHE, default ~/.cache/vfiomig-kernel: its debs), or are
# downloaded the same way; what is taken from them is cached in
# $VFIOMIG_QEMU_CACHE/guest-ABI. TAP output.
set -u
. "$(dirname "$0")/../e2e/tap.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
GUEST=${QEMU_GUEST:?set QEMU_GUEST to the static guest program}
KCACHE=${VFIOMIG_KERNEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfiomig-kernel}
QCACHE=${VFIOMIG_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfiomig-qemu}
t0=$(date +%s)

skip() { echo "1..0 # SKIP $1"; exit 0; }
if ! Q=$("$HERE/env.sh" 2>"$tmp/env.err"); then
    [ "$(id -u)" != 0 ] && [ ! -x "$QCACHE/root/qemu-system-x86_64" ] &&
        skip "no QEMU 11 root (making it needs root: run make check as root once)"
    not_ok "QEMU 11 from the trixie root" "$(cat "$tmp/env.err")"
    echo "1..$n"
    exit 1
fi
BUSYBOX=$(command -v busybox || true)
if [ -z "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then
    not_ok "a static busybox is installed (busybox-static)" "found: ${BUSYBOX:-none}"
    echo "1..$n"
    exit 1
fi

# --- the guest kernel and its uio modules (cached) ------------------------
deb=$(ls "$KCACHE"/debs/linux-image-6.12.*-amd64-unsigned_*.deb 2>/dev/null | sort -V | tail -n 1)
if [ -z "$deb" ]; then
    pkg=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' 2>/dev/null |
        awk '{print $1}' | sort -V | tail -n 1)
    mkdir -p "$KCACHE/debs"
    [ -n "$pkg" ] && (cd "$KCACHE/debs" && apt-get download "$pkg" >"$tmp/apt.log" 2>&1)
    deb=$(ls "$KCACHE"/debs/linux-image-6.12.*-amd64-unsigned_*.deb 2>/dev/null | sort -V | tail -n 1)
fi
if [ -z "$deb" ]; then
    not_ok "a Debian 6.12 kernel package (the real-kernel test's)" "$(cat "$tmp/apt.log" 2>/dev/null)"
    echo "1..$n"
    exit 1
fi
abi=$(basename "$deb" | sed 's/^linux-image-\(.*\)-amd64-unsigned_.*/\1/')
G=$QCACHE/guest-$abi
if [ ! -f "$G/ready" ]; then
    rm -rf "$G" && mkdir -p "$G/x" &&
        dpkg-deb -x "$deb" "$G/x" &&
        cp "$G/x/boot/vmlinuz-$abi-amd64" "$G/vmlinuz" &&
        for m in uio uio_pci_generic; do
            xz -dc "$G/x/lib/modules/$abi-amd64/kernel/drivers/uio/$m.ko.xz" >"$G/$m.ko" || exit 1
        done &&
        rm -rf "$G/x" && touch "$G/ready" ||
        { not_ok "kernel $abi and its uio modules from $deb" "into $G"; echo "1..$n"; exit 1; }
fi

# --- the initramfs -----------------------------------------------------------
I=$tmp/initramfs
mkdir -p "$I/bin" "$I/lib" "$I/proc" "$I/sys" "$I/dev" "$I/tmp"
cp "$BUSYBOX" "$I/bin/busybox"
cp "$GUEST" "$I/bin/guest"
cp "$G/uio.ko" "$G/uio_pci_generic.ko" "$I/lib/"
cat >"$I/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
echo
insmod /lib/uio.ko && insmod /lib/uio_pci_generic.ko &&
    echo "1af4 10f0" >/sys/bus/pci/drivers/uio_pci_generic/new_id &&
    echo "1af4 10f1" >/sys/bus/pci/drivers/uio_pci_generic/new_id ||
    echo "GUEST: # uio_pci_generic not bound"
/bin/guest
echo "GUEST: exit $?"
poweroff -f
INIT
chmod +x "$I/init"
python3 "$HERE/../kernel/mkinitramfs.py" "$I" "$tmp/initramfs.gz"

# --- two mailbox servers, the VM ---------------------------------------------
for d in a b; do
    rm -f "$tmp/$d.log"
    "$V" serve -v --device p2p-mailbox --socket "$tmp/$d.sock" --name "mb-$d" 2>"$tmp/$d.log" &
    eval "pid_$d=\$!"
done
rm -f "$tmp/l.log"
"$V" serve -v --device large --mem 16M --socket "$tmp/l.sock" --name large 2>"$tmp/l.log" &
pid_l=$!
for d in a b l; do
    for _ in $(seq 200); do "$V" state -s "$tmp/$d.sock" >/dev/null 2>&1 && break; sleep 0.05; done
done
dev() { echo "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$tmp/$1.sock\"}}"; }
t1=$(date +%s)
timeout 240 "$Q" -machine q35 -m 256 \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
    -device "$(dev a)" -device "$(dev b)" -device "$(dev l)" \
    -kernel "$G/vmlinuz" -initrd "$tmp/initramfs.gz" -append "console=ttyS0 panic=-1 quiet" \
    -nodefaults -display none -serial "file:$tmp/console" -monitor none -no-reboot \
    >"$tmp/qemu.out" 2>"$tmp/qemu.err"
rc=$?
t2=$(date +%s)
tr -d '\r' <"$tmp/console" | grep '^GUEST: ' | sed 's/^GUEST: //' >"$tmp/guest"
if grep -q '^done 0$' "$tmp/guest" && [ $rc = 0 ]; then
    ok "the guest booted ($abi), found and drove both mailboxes and the large device ($((t2 - t1)) s; $((t1 - t0)) s to prepare)"
else
    not_ok "the guest booted and drove both mailboxes" "QEMU exit $rc: $(cat "$tmp/qemu.err")" \
        "$(tr -d '\r' <"$tmp/console" | tail -n 40)"
fi
# the guest's own results, one line each
while IFS= read -r l; do
    case "$l" in
    "ok "*) ok "guest: ${l#ok [0-9]* - }" ;;
    "not ok "*) not_ok "guest: ${l#not ok [0-9]* - }" ;;
    "# "*) echo "$l" ;;
    esac
done <"$tmp/guest"
# QEMU gave each server the other's inbox BAR without an fd
grep -q "DMA_MAP 0x[0-9a-f]*+0x10000 rw (no fd" "$tmp/a.log" &&
    grep -q "DMA_MAP 0x[0-9a-f]*+0x10000 rw (no fd" "$tmp/b.log" &&
    ok "QEMU mapped the BARs into the devices' DMA space without an fd: messages went as DMA_READ/DMA_WRITE through QEMU" ||
    not_ok "QEMU mapped the peers' BARs without an fd" "$(grep DMA_MAP "$tmp/a.log" | head -n 12)"
if grep -qi "warn\|error" "$tmp/qemu.err"; then
    not_ok "QEMU says nothing against the devices" "$(cat "$tmp/qemu.err")"
else
    ok "QEMU says nothing against the devices"
fi

# --- after QEMU: what the guest programmed, saved and restored ----------------
# (vfiomig's client connects to the server QEMU left; a third server is the
# destination, served to another client)
"$V" serve --device p2p-mailbox --socket "$tmp/c.sock" --name mb-c 2>"$tmp/c.log" &
pid_c=$!
"$V" serve --device large --mem 16M --socket "$tmp/l2.sock" --name large-2 2>"$tmp/l2.log" &
pid_l2=$!
for d in c l2; do
    for _ in $(seq 200); do "$V" state -s "$tmp/$d.sock" >/dev/null 2>&1 && break; sleep 0.05; done
done
regs() { # SOCK: the programmed registers and the config space's command and BARs
    for off in 0x8 0xc 0x48 0x50 0x508 0x500 0x10 0x18; do
        printf '%s ' "$("$V" region -d "$1" -i 1 --read "$off:8" 2>&1)"
    done
    "$V" region -d "$1" -i 7 --read 4:2 2>&1
    "$V" region -d "$1" -i 7 --read 0x10:12 2>&1
}
regs "$tmp/a.sock" >"$tmp/regs.a"
rm -f "$tmp/rx.json"
"$V" region -d "$tmp/l.sock" -i 7 --read 4:2 >"$tmp/lcmd.a" 2>&1
"$V" receive --device "$tmp/c.sock" --device "$tmp/l2.sock" --listen "unix:$tmp/mig.sock" \
    --json >"$tmp/rx.json" 2>"$tmp/rx.err" &
rpid=$!
for _ in $(seq 100); do [ -S "$tmp/mig.sock" ] && break; sleep 0.05; done
"$V" migrate --device "$tmp/a.sock" --device "$tmp/l.sock" --to "unix:$tmp/mig.sock" --json \
    >"$tmp/tx.json" 2>"$tmp/tx.err"
mrc=$?
wait $rpid
rrc=$?
regs "$tmp/c.sock" >"$tmp/regs.c"
# the guest's programming is there: device 0's peer 1 address (0x508) and
# status record address (0x50) are set, bus master (command bit 2) is on
set -- $(cat "$tmp/regs.a")
programmed=false
[ "${5:-0}" != 0000000000000000 ] && [ "${4:-0}" != 0000000000000000 ] &&
    [ $((0x${9:-00} & 4)) = 4 ] && programmed=true
if [ $mrc = 0 ] && [ $rrc = 0 ] && $programmed && cmp -s "$tmp/regs.a" "$tmp/regs.c"; then
    ok "the device that ran under QEMU migrated with what the guest programmed (registers, command, BARs): $(tr '\n' ' ' <"$tmp/regs.c")"
else
    not_ok "the device that ran under QEMU migrated with what the guest programmed" \
        "migrate $mrc receive $rrc" "$(cat "$tmp/tx.err" "$tmp/rx.err")" \
        "source: $(cat "$tmp/regs.a")" "restored: $(cat "$tmp/regs.c")"
fi
# the large device: the command register the guest set, and its memory
# (the restored device checked its digest against the source's)
"$V" region -d "$tmp/l2.sock" -i 7 --read 4:2 >"$tmp/lcmd.c" 2>&1
saved=$("$V" region -d "$tmp/l.sock" -i 0 --read 0x28:8 2>&1)
loaded=$("$V" region -d "$tmp/l2.sock" -i 0 --read 0x30:8 2>&1)
if [ $mrc = 0 ] && cmp -s "$tmp/lcmd.a" "$tmp/lcmd.c" && [ $((0x$(cut -c1-2 "$tmp/lcmd.c") & 6)) = 6 ] &&
    [ "$saved" = "$loaded" ] && [ "$saved" != 0000000000000000 ]; then
    ok "the large device that ran under QEMU migrated with its command register ($(cat "$tmp/lcmd.c")) and its memory (digest $saved)"
else
    not_ok "the large device that ran under QEMU migrated with what the guest programmed" \
        "command $(cat "$tmp/lcmd.a") -> $(cat "$tmp/lcmd.c")" "digest saved $saved, loaded $loaded"
fi
kill $pid_a $pid_b $pid_c $pid_l $pid_l2 2>/dev/null
wait $pid_a $pid_b $pid_c $pid_l $pid_l2 2>/dev/null
echo "1..$n"
[ $fails = 0 ]
