#!/bin/sh
# QEMU 11.1's vfio-user-pci attaches a vfiomig device: a p2p-mailbox
# server process (`vfiomig serve`) becomes a PCI device of a q35 machine
# (guest RAM a shared memfd backend). QEMU reads its config space through
# vfio-user: its monitor's `info pci` shows the device with the ids, class,
# interrupt pin and BARs the mailbox declares, QEMU says no warning about
# it, and the server serves its next client after QEMU quits. And QEMU's
# own migration of such a VM moves no device state (observed; see the end).
# A guest driving the devices: guest.sh. TAP output.
set -u
. "$(dirname "$0")/../e2e/tap.sh"
HERE=$(cd "$(dirname "$0")" && pwd)

if ! Q=$("$HERE/env.sh" 2>"$tmp/env.err"); then
    if [ "$(id -u)" != 0 ] && [ ! -x "${VFIOMIG_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfiomig-qemu}/root/qemu-system-x86_64" ]; then
        echo "1..0 # SKIP no QEMU 11 root (making it needs root: run make check as root once)"
        exit 0
    fi
    not_ok "QEMU 11 from the trixie root" "$(cat "$tmp/env.err")"
    echo "1..$n"
    exit 1
fi
"$V" serve --device p2p-mailbox --socket "$tmp/mb.sock" 2>"$tmp/serve.err" &
spid=$!
"$V" serve --device ticker --socket "$tmp/tk.sock" 2>"$tmp/tk.err" &
tpid=$!
for s in mb tk; do
    for _ in $(seq 200); do "$V" state -s "$tmp/$s.sock" >/dev/null 2>&1 && break; sleep 0.05; done
done
(echo "info pci"; sleep 2; echo quit) | timeout 60 "$Q" -machine q35 -m 256 \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
    -device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$tmp/mb.sock\"}}" \
    -device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$tmp/tk.sock\"}}" \
    -S -nodefaults -display none -serial none -monitor stdio >"$tmp/out" 2>"$tmp/err"
rc=$?
dev=$(tr -d '\r' <"$tmp/out" | grep -A6 "PCI device 1af4:10f0")
if [ $rc = 0 ] && echo "$dev" | grep -q "Memory controller: PCI device 1af4:10f0"; then
    ok "QEMU $("$Q" --version | head -n 1 | awk '{print $4}') attaches a vfiomig p2p-mailbox: 1af4:10f0, a memory controller"
else
    not_ok "QEMU attaches a vfiomig p2p-mailbox" "exit $rc" "$(cat "$tmp/err")" "$(tail -n 20 "$tmp/out")"
fi
echo "$dev" | grep -q "IRQ [0-9]*, pin A" && echo "$dev" | grep -q "BAR0: 32 bit memory" &&
    echo "$dev" | grep -q "BAR1: 32 bit memory" && echo "$dev" | grep -q "BAR2: 32 bit memory" &&
    ok "its config space read through vfio-user: INTx pin A, BAR0-2 32-bit memory" ||
    not_ok "its config space read through vfio-user: INTx pin A, BAR0-2 32-bit memory" "$dev"
tk=$(tr -d '\r' <"$tmp/out" | grep -A5 "PCI device 1af4:10f2")
echo "$tk" | grep -q "pin A" && echo "$tk" | grep -q "BAR0: 32 bit memory" &&
    echo "$tk" | grep -q "BAR1: 32 bit memory" &&
    ok "and the device guide's ticker: 1af4:10f2, pin A, BAR0 (registers) and BAR1 (MSI-X)" ||
    not_ok "QEMU attaches the device guide's ticker as 1af4:10f2" "$tk" "$(cat "$tmp/tk.err")"
if grep -qi "warn\|error" "$tmp/err"; then
    not_ok "QEMU says nothing against the device" "$(cat "$tmp/err")"
else
    ok "QEMU says nothing against the device (no 'spurious capabilities', no error recovery warning)"
fi
"$V" state -s "$tmp/mb.sock" >/dev/null 2>&1 && ok "the server serves its next client after QEMU quits" ||
    not_ok "the server serves its next client after QEMU quits" "$(cat "$tmp/serve.err")"
kill $spid $tpid 2>/dev/null
wait $spid $tpid 2>/dev/null

# QEMU's own migration of a VM with a vfio-user device (observed with
# 11.1.3): it completes and moves no device state. QEMU's vfio-user client
# never asks the device about migration (no DEVICE_FEATURE, no
# MIG_DATA_READ): the device's state is left behind, silently. Served
# devices migrate with vfiomig's engine (vfiomig migrate / receive).
rm -f "$tmp/l.log"
"$V" serve -v --device large --mem 16M --socket "$tmp/l.sock" --name large 2>"$tmp/l.log" &
lpid=$!
for _ in $(seq 200); do "$V" state -s "$tmp/l.sock" >/dev/null 2>&1 && break; sleep 0.05; done
n_before=$(grep -c "DEVICE_FEATURE\|MIG_DATA" "$tmp/l.log")
(sleep 3; echo "migrate exec:cat>$tmp/vm.mig"; sleep 4; echo "info migrate"; sleep 1; echo quit) |
    timeout 60 "$Q" -machine q35 -m 256 \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
    -device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$tmp/l.sock\"}}" \
    -nodefaults -display none -serial none -monitor stdio >"$tmp/mout" 2>"$tmp/merr"
info=$(tr -d '\r' <"$tmp/mout")
n_after=$(grep -c "DEVICE_FEATURE\|MIG_DATA" "$tmp/l.log")
if echo "$info" | grep -q "Status:.*completed" && echo "$info" | grep -q "vfio=0 B" &&
    [ "$n_before" = "$n_after" ]; then
    ok "QEMU's own migration of the VM completes and moves no vfio-user device state (vfio=0 B; the device was never asked: no DEVICE_FEATURE, no MIG_DATA_READ)"
else
    not_ok "QEMU's own migration moves no vfio-user device state (as observed with 11.1.3)" \
        "$(echo "$info" | grep -i "status\|channels")" "device messages: $n_before -> $n_after" \
        "$(cat "$tmp/merr")"
fi
kill $lpid 2>/dev/null
wait $lpid 2>/dev/null
echo "1..$n"
[ $fails = 0 ]
