#!/bin/sh
# The vfiomig command as a user runs it: plan (text, JSON, table, every
# refusal rule, exit codes), --help / --version on every verb, and the demo.
# TAP output. $VFIOMIG is the binary under test.
set -u
. "$(dirname "$0")/tap.sh"

# expect NAME WANT_RC WANT_STDOUT -- ARGS...: exact stdout and exit status
expect() {
    name=$1 want_rc=$2 want_out=$3
    shift 4
    out=$("$V" "$@" 2>"$tmp/err"); rc=$?
    if [ "$rc" = "$want_rc" ] && [ "$out" = "$want_out" ]; then
        ok "$name"
    else
        not_ok "$name" "vfiomig $*" "exit $rc (want $want_rc)" "stdout: $out" "want:   $want_out" \
            "stderr: $(cat "$tmp/err")"
    fi
}

# expect_err NAME WANT_RC PATTERN -- ARGS...: exit status, and stderr matches
expect_err() {
    name=$1 want_rc=$2 pat=$3
    shift 4
    "$V" "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
    if [ "$rc" = "$want_rc" ] && grep -q -- "$pat" "$tmp/err"; then
        ok "$name"
    else
        not_ok "$name" "vfiomig $*" "exit $rc (want $want_rc)" "stderr: $(cat "$tmp/err")" \
            "want stderr matching: $pat"
    fi
}

# Every multi-step path in the comment above the kernel's table
# (drivers/vfio/vfio_main.c), all features.
while read -r path; do
    from=${path%% *}
    to=${path##* }
    expect "kernel path $from .. $to" 0 "$(echo "$path" | sed 's/ / -> /g')" -- plan "$from" "$to"
done <<'PATHS'
PRE_COPY PRE_COPY_P2P STOP_COPY
PRE_COPY RUNNING RUNNING_P2P
PRE_COPY RUNNING RUNNING_P2P STOP
PRE_COPY RUNNING RUNNING_P2P STOP RESUMING
PRE_COPY_P2P RUNNING_P2P RUNNING
PRE_COPY_P2P RUNNING_P2P STOP
PRE_COPY_P2P RUNNING_P2P STOP RESUMING
RESUMING STOP RUNNING_P2P
RESUMING STOP RUNNING_P2P PRE_COPY_P2P
RESUMING STOP RUNNING_P2P RUNNING
RESUMING STOP RUNNING_P2P RUNNING PRE_COPY
RESUMING STOP STOP_COPY
RUNNING RUNNING_P2P PRE_COPY_P2P
RUNNING RUNNING_P2P STOP
RUNNING RUNNING_P2P STOP RESUMING
RUNNING RUNNING_P2P STOP STOP_COPY
RUNNING_P2P RUNNING PRE_COPY
RUNNING_P2P STOP RESUMING
RUNNING_P2P STOP STOP_COPY
STOP RUNNING_P2P PRE_COPY_P2P
STOP RUNNING_P2P RUNNING
STOP RUNNING_P2P RUNNING PRE_COPY
STOP_COPY STOP RESUMING
STOP_COPY STOP RUNNING_P2P
STOP_COPY STOP RUNNING_P2P RUNNING
PATHS

# Fewer features: the states the device lacks drop out.
expect "no P2P: RUNNING -> STOP_COPY" 0 "RUNNING -> STOP -> STOP_COPY" -- plan --flags stop-copy RUNNING STOP_COPY
expect "no P2P: STOP_COPY -> RUNNING" 0 "STOP_COPY -> STOP -> RUNNING" -- plan --flags 1 stop_copy running
expect "pre-copy, no P2P: PRE_COPY -> STOP_COPY" 0 "PRE_COPY -> STOP_COPY" -- plan --flags stop-copy,pre-copy PRE_COPY STOP_COPY
expect "pre-copy, no P2P: PRE_COPY -> STOP" 0 "PRE_COPY -> RUNNING -> STOP" -- plan --flags 5 6 1
expect "same state" 0 "RUNNING" -- plan RUNNING RUNNING
expect "numbers and prefix" 0 "RUNNING -> RUNNING_P2P" -- plan 2 VFIO_DEVICE_STATE_RUNNING_P2P
expect "json" 0 '{"flags":3,"flags_names":"STOP_COPY|P2P","from":"RUNNING","to":"STOP","ok":true,"arcs":2,"path":["RUNNING","RUNNING_P2P","STOP"]}' -- plan --json --flags stop-copy,p2p RUNNING STOP

# Refusals: exit 1 and the rule, by name.
expect_err "STOP_COPY -> PRE_COPY refused" 1 "cannot go back to pre-copy" -- plan STOP_COPY PRE_COPY
expect_err "STOP_COPY -> PRE_COPY_P2P refused" 1 "cannot go back to pre-copy" -- plan STOP_COPY PRE_COPY_P2P
expect_err "ERROR as target refused" 1 "ERROR cannot be requested" -- plan RUNNING ERROR
expect_err "from ERROR refused" 1 "only a reset leaves" -- plan ERROR RUNNING
expect_err "unsupported state refused" 1 "needs the P2P capability" -- plan --flags stop-copy RUNNING RUNNING_P2P
expect_err "flags without STOP_COPY refused" 1 "lack STOP_COPY" -- plan --flags p2p RUNNING STOP
expect "refusal in json" 1 '{"flags":1,"flags_names":"STOP_COPY","from":"RUNNING","to":"PRE_COPY","ok":false,"error":"EINVAL","reason":"PRE_COPY needs the PRE_COPY capability, which these flags lack"}' -- plan --json --flags 1 RUNNING PRE_COPY

# Usage errors: exit 2.
expect_err "unknown state" 2 "unknown state 'WALKING'" -- plan RUNNING WALKING
expect_err "out-of-range number" 2 "unknown state '8'" -- plan 8 RUNNING
expect_err "bad flags" 2 "bad --flags" -- plan --flags dirty RUNNING STOP
expect_err "one state" 2 "expected FROM and TO" -- plan RUNNING
expect_err "unknown option" 2 "Try 'vfiomig plan --help'" -- plan --frobnicate RUNNING STOP
expect_err "unknown verb" 2 "unknown verb" -- frobnicate
expect_err "no verb" 2 "Usage" --

# The table: every row and the refused cells.
"$V" plan --table >"$tmp/table" 2>&1; rc=$?
if [ $rc = 0 ] && grep -q '^RUN   | -   *| P2P>STOP  *| =  ' "$tmp/table" &&
   [ "$(grep -c '^[A-Z0-9]* *|' "$tmp/table")" = 9 ]; then
    ok "plan --table"
else
    not_ok "plan --table" "exit $rc" "$(head -n 14 "$tmp/table")"
fi
"$V" plan --table --flags 1 --json >"$tmp/tj"; rc=$?
if [ $rc = 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["flags"] == 1 and len(d["paths"]) == 64
p = {(e["from"], e["to"]): e["path"] for e in d["paths"]}
assert p[("RUNNING", "STOP_COPY")] == ["RUNNING", "STOP", "STOP_COPY"]
assert p[("RUNNING", "RUNNING_P2P")] is None
' "$tmp/tj"; then ok "plan --table --json"; else not_ok "plan --table --json" "$(head -c 300 "$tmp/tj")"; fi

# --help and --version
for verb in plan demo serve state migrate receive conform region; do
    out=$("$V" "$verb" --help); rc=$?
    case $out in
    "Usage: vfiomig $verb"*) [ $rc = 0 ] && ok "$verb --help" || not_ok "$verb --help" "exit $rc" ;;
    *) not_ok "$verb --help" "$out" ;;
    esac
done
out=$("$V" --help); [ $? = 0 ] && echo "$out" | grep -q "plan" && ok "--help" || not_ok "--help" "$out"
out=$("$V" --version); [ $? = 0 ] && echo "$out" | grep -Eq '^vfiomig [0-9]+\.[0-9]+\.[0-9]+$' &&
    ok "--version" || not_ok "--version" "$out"

# The demo: the restored device is identical.
out=$("$V" demo --ticker --run-ms 50 2>&1); rc=$?
if [ $rc = 0 ] && echo "$out" | grep -q "identical"; then ok "demo --ticker"; else not_ok "demo --ticker" "exit $rc" "$out"; fi
"$V" demo --ticker --json --mem 64K --run-ms 20 >"$tmp/dj"; rc=$?
if [ $rc = 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] is True and d["source_digest"] == d["restored_digest"]
assert d["bytes"] == 65536 + 32 + 88, d["bytes"]
assert d["ticks_after_resume"] > d["ticks"]
' "$tmp/dj"; then ok "demo --ticker --json"; else not_ok "demo --ticker --json" "exit $rc" "$(cat "$tmp/dj")"; fi
expect_err "demo bad --mem" 2 "bad --mem" -- demo --ticker --mem 1T
expect_err "demo --mem without --ticker" 2 "goes with --ticker" -- demo --mem 1M
expect_err "demo bad --devices" 2 "bad --devices" -- demo --devices 65
expect_err "demo bad --fail-at" 2 "bad --fail-at" -- demo --fail-at sideways:1:STOP

# serve and state, with a real server process
expect_err "serve without --socket" 2 "are required" -- serve --device p2p-mailbox
expect_err "serve unknown device" 2 "unknown device" -- serve --device toaster --socket "$tmp/x.sock"
expect_err "state without a server" 1 "cannot connect" -- state --socket "$tmp/none.sock"
expect_err "state bad state name" 2 "unknown state" -- state --socket "$tmp/none.sock" --set FLYING
sock="$tmp/mb.sock"
"$V" serve --device p2p-mailbox --socket "$sock" 2>"$tmp/serve.err" &
spid=$!
for _ in $(seq 100); do [ -S "$sock" ] && "$V" state --socket "$sock" >/dev/null 2>&1 && break; sleep 0.05; done
mode=$(stat -c %a "$sock" 2>/dev/null)
[ "$mode" = 600 ] && ok "serve socket mode 0600" || not_ok "serve socket mode 0600" "mode $mode"
expect "state get" 0 "RUNNING" -- state --socket "$sock"
expect "state set prints the path" 0 "RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY" -- state --socket "$sock" --set stop_copy
expect "session ends with the connection" 0 "STOP" -- state --socket "$sock"
expect "state set json" 0 '{"device":"'"$sock"'","ok":true,"from":"STOP","to":"RUNNING","path":["STOP","RUNNING_P2P","RUNNING"],"state":"RUNNING"}' -- state --socket "$sock" --set 2 --json
expect_err "state refused names the rule" 1 "needs the PRE_COPY capability" -- state --socket "$sock" --set PRE_COPY
expect_err "a second server on the same socket" 1 "another server is serving there" -- serve --device ticker --socket "$sock"
kill -TERM $spid; wait $spid; rc=$?
[ $rc = 0 ] && [ ! -e "$sock" ] && ok "serve exits 0 on SIGTERM and removes its socket" ||
    not_ok "serve exits 0 on SIGTERM and removes its socket" "exit $rc" "$(cat "$tmp/serve.err")"
"$V" serve --device p2p-mailbox --no-p2p --socket "$sock" 2>/dev/null &
spid=$!
for _ in $(seq 100); do [ -S "$sock" ] && "$V" state --socket "$sock" >/dev/null 2>&1 && break; sleep 0.05; done
expect "no-p2p device plans without RUNNING_P2P" 0 "RUNNING -> STOP -> STOP_COPY" -- state --socket "$sock" --set STOP_COPY
# vfiomig region on the mailbox's register BAR (region 1): its magic, and a
# register written and read back
expect "region read" 0 "4d424f58" -- region -d "$sock" -i 1 --read 0:4
expect "region write" 0 "" -- region -d "$sock" -i 1 --write 0xc:2a000000 --timeout 5000
expect "region read back" 0 '{"device":"'"$sock"'","index":1,"offset":12,"hex":"2a000000"}' -- region -d "$sock" -i 1 --read 0xc:4 --json
expect_err "region outside the BAR" 1 "reading region 1 at 0x1000 failed" -- region -d "$sock" -i 1 --read 4096:4
expect_err "region without --index" 2 "are required" -- region -d "$sock" --read 0:4
expect_err "region bad bytes" 2 "bad bytes" -- region -d "$sock" -i 1 --write 0:abc
expect_err "region read and write" 2 "are required" -- region -d "$sock" -i 1 --read 0:4 --write 0:00
# a device's own inputs do not kill it (the faults issue, finding 4): an
# interval register past a second is refused, and a slot count of 0 written
# into the inbox's ring (guest-writable memory) no longer divides by zero
expect_err "an interval past 1 s is refused" 1 "writing region 1 at 0xc failed: invalid argument" -- region -d "$sock" -i 1 --write 0xc:ffffffff
"$V" state --socket "$sock" --set RUNNING >/dev/null # it consumes its inbox while running
expect "the inbox's slot count overwritten" 0 "" -- region -d "$sock" -i 0 --write 16:0000000000000000
sleep 0.3
kill -0 $spid 2>/dev/null && [ "$("$V" state --socket "$sock")" = RUNNING ] &&
    ok "the device survives a slot count of 0 in its inbox" ||
    not_ok "the device survives a slot count of 0 in its inbox" "$(cat "$tmp/err")"
kill -INT $spid; wait $spid
# files that are not ours are left alone (finding 5)
expect_err "serve refuses the abstract namespace" 1 "invalid argument" -- serve --device ticker --socket ""
"$V" serve --device ticker --socket "$tmp/own.sock" 2>/dev/null &
apid=$!
for _ in $(seq 100); do [ -S "$tmp/own.sock" ] && break; sleep 0.05; done
rm -f "$tmp/own.sock"
"$V" serve --device ticker --socket "$tmp/own.sock" 2>/dev/null &
bpid=$!
for _ in $(seq 100); do "$V" state --socket "$tmp/own.sock" >/dev/null 2>&1 && break; sleep 0.05; done
kill -TERM $apid; wait $apid
[ -S "$tmp/own.sock" ] && "$V" state --socket "$tmp/own.sock" >/dev/null 2>&1 &&
    ok "a server whose socket was replaced leaves the new owner's socket" ||
    not_ok "a server whose socket was replaced leaves the new owner's socket"
kill -TERM $bpid; wait $bpid

# migrate and receive, two real sides over UNIX and TCP streams
for i in 0 1; do
    "$V" serve --device ticker --mem 256K --socket "$tmp/s$i.sock" 2>/dev/null &
    "$V" serve --device ticker --mem 256K --socket "$tmp/d$i.sock" 2>/dev/null &
done
for f in s0 s1 d0 d1; do
    for _ in $(seq 100); do "$V" state --socket "$tmp/$f.sock" >/dev/null 2>&1 && break; sleep 0.05; done
done
# (--streams N: N connections, device i's state on connection i mod N, each
# loaded on its own thread; 3 streams for 2 devices leaves one carrying only
# its header and end; the receiver follows the sender's count)
port=$((20000 + $$ % 20000))
for spec in "unix:$tmp/mig.sock 1" "tcp:127.0.0.1:$port 1" "unix:$tmp/mig.sock 2" "tcp:127.0.0.1:$((port + 1)) 3"; do
    addr=${spec% *} ns=${spec##* }
    timeout 60 "$V" receive -d "$tmp/d0.sock" -d "$tmp/d1.sock" --listen "$addr" --id vm-1 --json >"$tmp/rx.json" 2>/dev/null &
    rpid=$!
    # (until receive listens: a refused connect leaves the sources untouched)
    for _ in $(seq 100); do
        "$V" migrate -d "$tmp/s0.sock" -d "$tmp/s1.sock" --to "$addr" --id vm-1 --streams "$ns" --json >"$tmp/tx.json" 2>"$tmp/tx.err"; rc=$?
        grep -q "Connection refused\|No such file" "$tmp/tx.err" || break
        sleep 0.1
    done
    wait $rpid; rrc=$?
    if [ $rc = 0 ] && [ $rrc = 0 ] && [ "$("$V" state -s "$tmp/d1.sock")" = RUNNING ] &&
       [ "$("$V" state -s "$tmp/s1.sock")" = STOP ] &&
       python3 -c '
import json,sys
a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); n=int(sys.argv[3])
assert a["ok"] and b["ok"] and a["bytes"] == b["bytes"] > 2*262144
assert a["streams"] == b["streams"] == n and a["stream_bytes_by"] == b["stream_bytes_by"]
assert len(a["stream_bytes_by"]) == n and sum(a["stream_bytes_by"]) == a["stream_bytes"]
assert all(x > 262144 for x in a["stream_bytes_by"][:2])
# vfiomig servers: their streams are self-checked, and their data fds are
# spliced into the stream and out of it, never read by either side
assert a["spliced_bytes"] == a["bytes"] and b["spliced_bytes"] == b["bytes"]' "$tmp/tx.json" "$tmp/rx.json" "$ns"; then
        ok "migrate/receive over ${addr%%:*}, $ns stream(s)"
    else
        not_ok "migrate/receive over ${addr%%:*}, $ns stream(s)" "exit $rc/$rrc" "$(cat "$tmp/tx.err")" "$(cat "$tmp/tx.json")" "$(cat "$tmp/rx.json")"
    fi
    # and back, so the next round starts from running sources
    "$V" state -s "$tmp/s0.sock" --set RUNNING >/dev/null; "$V" state -s "$tmp/s1.sock" --set RUNNING >/dev/null
done
# a receiver with the wrong number of devices: it refuses, the sources roll back
timeout 60 "$V" receive -d "$tmp/d0.sock" --listen "unix:$tmp/mig2.sock" >/dev/null 2>&1 &
rpid=$!
sleep 0.3
"$V" migrate -d "$tmp/s0.sock" -d "$tmp/s1.sock" --to "unix:$tmp/mig2.sock" >/dev/null 2>"$tmp/tx.err"; rc=$?
wait $rpid
if [ $rc = 1 ] && grep -q "rolled back" "$tmp/tx.err" && [ "$("$V" state -s "$tmp/s0.sock")" = RUNNING ]; then
    ok "a refusing receiver: the sources roll back"
else
    not_ok "a refusing receiver: the sources roll back" "exit $rc" "$(cat "$tmp/tx.err")"
fi
echo keep >"$tmp/taken"
expect_err "receive on a path that is a file fails" 1 "unix:$tmp/taken" -- receive -d "$tmp/d0.sock" --listen "unix:$tmp/taken"
[ "$(cat "$tmp/taken")" = keep ] && ok "... and leaves the file alone" || not_ok "... and leaves the file alone"
(umask 000; timeout 60 "$V" receive -d "$tmp/d0.sock" --listen "unix:$tmp/rx600.sock" >/dev/null 2>&1) &
rpid=$!
for _ in $(seq 100); do [ -S "$tmp/rx600.sock" ] && break; sleep 0.05; done
mode=$(stat -c %a "$tmp/rx600.sock" 2>/dev/null)
# garbage is refused at the header (d0 untouched, the receiver waits on),
# then the real sender's stream is taken
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"garbage"*20); s.close()' "$tmp/rx600.sock"
sleep 0.2
kill -0 $rpid 2>/dev/null && ok "garbage on receive's socket is refused, and receive waits on" ||
    not_ok "garbage on receive's socket is refused, and receive waits on"
"$V" migrate -d "$tmp/s0.sock" --to "unix:$tmp/rx600.sock" >/dev/null 2>&1
wait $rpid; rrc=$?
[ "$mode" = 600 ] && [ $rrc = 0 ] && [ ! -e "$tmp/rx600.sock" ] && ok "receive's socket is 0600 whatever the umask, and removed at its end" ||
    not_ok "receive's socket is 0600 whatever the umask, and removed at its end" "mode $mode, exit $rrc"
"$V" state -s "$tmp/s0.sock" --set RUNNING >/dev/null
# a receive ended by a signal removes its socket too (and only its own)
for sig in TERM INT; do
    "$V" receive -d "$tmp/d0.sock" --listen "unix:$tmp/rxsig.sock" >/dev/null 2>&1 &
    rpid=$!
    for _ in $(seq 100); do [ -S "$tmp/rxsig.sock" ] && break; sleep 0.05; done
    kill -$sig $rpid
    wait $rpid; rrc=$?
    [ $rrc -gt 128 ] && [ ! -e "$tmp/rxsig.sock" ] && ok "receive ended by SIG$sig removes its socket" ||
        not_ok "receive ended by SIG$sig removes its socket" "exit $rrc" "$(ls -l "$tmp/rxsig.sock" 2>&1)"
done
"$V" receive -d "$tmp/d0.sock" --listen "unix:$tmp/rxsig.sock" >/dev/null 2>&1 &
rpid=$!
for _ in $(seq 100); do [ -S "$tmp/rxsig.sock" ] && break; sleep 0.05; done
rm -f "$tmp/rxsig.sock"
echo other >"$tmp/rxsig.sock" # someone else's file at the path now
kill -TERM $rpid
wait $rpid
[ "$(cat "$tmp/rxsig.sock" 2>/dev/null)" = other ] && ok "... but not a file that replaced it" ||
    not_ok "... but not a file that replaced it"
# --accept-timeout: a receive no sender reaches gives up (exit 1, the
# devices left stopped, its socket removed); a silent peer does not hold it
# past the bound (its own handshake deadline is a minute here), and a
# sender within the bound is taken
"$V" state -s "$tmp/d0.sock" --set RUNNING >/dev/null
timeout 20 "$V" receive -d "$tmp/d0.sock" --listen "unix:$tmp/rxat.sock" --accept-timeout 1500 \
    --handshake-timeout 60000 --json >"$tmp/rx.json" 2>"$tmp/rx.err" &
rpid=$!
for _ in $(seq 100); do [ -S "$tmp/rxat.sock" ] && break; sleep 0.05; done
python3 -c 'import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(4)' "$tmp/rxat.sock" &
ppid=$!
wait $rpid; rrc=$?
kill $ppid 2>/dev/null; wait $ppid 2>/dev/null
if [ $rrc = 1 ] && grep -q "no sender's stream began on unix:$tmp/rxat.sock within 1500 ms" "$tmp/rx.err" &&
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert not r["ok"] and "accept-timeout" in r["error"]' "$tmp/rx.json" &&
    [ "$("$V" state -s "$tmp/d0.sock")" = STOP ] && [ ! -e "$tmp/rxat.sock" ]; then
    ok "receive --accept-timeout: no sender (a silent peer meanwhile), exit 1, devices stopped, socket removed"
else
    not_ok "receive --accept-timeout: no sender (a silent peer meanwhile), exit 1, devices stopped, socket removed" \
        "exit $rrc" "$(cat "$tmp/rx.err")" "$(cat "$tmp/rx.json")" "d0: $("$V" state -s "$tmp/d0.sock")"
fi
timeout 60 "$V" receive -d "$tmp/d0.sock" --listen "unix:$tmp/rxat.sock" --accept-timeout 30000 >/dev/null 2>"$tmp/rx.err" &
rpid=$!
for _ in $(seq 100); do [ -S "$tmp/rxat.sock" ] && break; sleep 0.05; done
"$V" migrate -d "$tmp/s0.sock" --to "unix:$tmp/rxat.sock" >/dev/null 2>"$tmp/tx.err"; rc=$?
wait $rpid; rrc=$?
[ $rc = 0 ] && [ $rrc = 0 ] && [ "$("$V" state -s "$tmp/d0.sock")" = RUNNING ] &&
    ok "receive --accept-timeout: a sender within it is taken" ||
    not_ok "receive --accept-timeout: a sender within it is taken" "exit $rc/$rrc" "$(cat "$tmp/tx.err" "$tmp/rx.err")"
"$V" state -s "$tmp/s0.sock" --set RUNNING >/dev/null
expect_err "--accept-timeout is the receiver's" 2 "is an option of vfiomig receive" -- migrate -d x --to unix:y --accept-timeout 5
expect_err "--accept-timeout 0" 2 "bad --accept-timeout" -- receive -d x --listen unix:y --accept-timeout 0
expect_err "--accept-timeout with a file" 2 "for unix: and tcp: addresses" -- receive -d x --listen file:y --accept-timeout 5
# one-way streams: a file, and a pipe
"$V" migrate -d "$tmp/s0.sock" -d "$tmp/s1.sock" --to "file:$tmp/vm.state" >/dev/null 2>"$tmp/tx.err"; rc=$?
"$V" receive -d "$tmp/d0.sock" -d "$tmp/d1.sock" --listen "file:$tmp/vm.state" >/dev/null 2>"$tmp/rx.err"; rrc=$?
[ $rc = 0 ] && [ $rrc = 0 ] && [ "$("$V" state -s "$tmp/s0.sock")" = STOP ] && [ "$("$V" state -s "$tmp/d0.sock")" = RUNNING ] &&
    ok "migrate to a file, receive from it" || not_ok "migrate to a file, receive from it" "$rc/$rrc" "$(cat "$tmp/tx.err" "$tmp/rx.err")"
"$V" state -s "$tmp/s0.sock" --set RUNNING >/dev/null; "$V" state -s "$tmp/s1.sock" --set RUNNING >/dev/null
"$V" migrate -d "$tmp/s0.sock" -d "$tmp/s1.sock" --to file:- 2>/dev/null |
    "$V" receive -d "$tmp/d0.sock" -d "$tmp/d1.sock" --listen file:- >/dev/null 2>&1 &&
    ok "migrate through a pipe" || not_ok "migrate through a pipe"
head -c 5000 "$tmp/vm.state" >"$tmp/cut.state"
"$V" receive -d "$tmp/d0.sock" -d "$tmp/d1.sock" --listen "file:$tmp/cut.state" >/dev/null 2>"$tmp/rx.err"; rrc=$?
[ $rrc = 1 ] && grep -q "ended" "$tmp/rx.err" && ok "a truncated state file is refused" ||
    not_ok "a truncated state file is refused" "exit $rrc" "$(cat "$tmp/rx.err")"
"$V" state -s "$tmp/s0.sock" --set RUNNING >/dev/null; "$V" state -s "$tmp/s1.sock" --set RUNNING >/dev/null
expect_err "--streams is the sender's" 2 "the receiver follows the sender's count" -- receive -d x --listen unix:y --streams 2
expect_err "--streams 0" 2 "bad --streams" -- migrate -d x --to unix:y --streams 0
expect_err "--streams 17" 2 "bad --streams" -- migrate -d x --to unix:y --streams 17
expect_err "--streams with a file" 2 "a file is one stream" -- migrate -d x --to file:y --streams 2
expect_err "migrate without --to" 2 "are required" -- migrate -d "$tmp/s0.sock"
expect_err "migrate bad address" 2 "bad address" -- migrate -d "$tmp/s0.sock" --to ftp:x
# addresses are what they say (finding 6)
expect_err "--max-downtime is the sender's" 2 "is an option of vfiomig migrate" -- receive -d x --listen unix:y --max-downtime 5
expect_err "a port past 65535" 2 "bad address" -- migrate -d "$tmp/s0.sock" --to tcp:127.0.0.1:99999
expect_err "tcp: with no port" 2 "bad address" -- receive -d "$tmp/d0.sock" --listen tcp: --id x
expect_err "receive over TCP needs --id" 2 "needs --id" -- receive -d "$tmp/d0.sock" --listen tcp:127.0.0.1:4000
expect_err "a bad --id" 2 "bad --id" -- migrate -d "$tmp/s0.sock" --to tcp:127.0.0.1:4000 --id "a b"
expect_err "plain TCP to another host needs --insecure" 2 "not a loopback address" -- migrate -d "$tmp/s0.sock" --to tcp:192.0.2.1:4000
expect_err "plain TCP on every address needs --insecure" 2 "not a loopback address" -- receive -d "$tmp/d0.sock" --listen tcp:0.0.0.0:4000 --id x
expect_err "--tls-creds on a UNIX stream" 2 "for tcp: streams" -- migrate -d "$tmp/s0.sock" --to unix:/x --tls-creds /tmp
expect_err "--tls-creds from a missing directory" 1 "tls-creds" -- migrate -d "$tmp/s0.sock" --to tcp:127.0.0.1:4000 --tls-creds "$tmp/nocreds"
expect_err "a v6 address without brackets" 2 "bad address" -- migrate -d "$tmp/s0.sock" --to tcp:::1:4000
expect_err "a v6 address in brackets is an address" 1 "tcp:\[::1\]:1" -- migrate -d "$tmp/s0.sock" --to "tcp:[::1]:1"
expect_err "demo --fail-at a negative device" 2 "past --devices" -- demo --fail-at source:-1:STOP
expect_err "a trace into a missing directory fails first" 1 "cannot write the trace" -- demo --trace "$tmp/no/such/dir/t.json" --run-ms 0
# a failed save to a file leaves nothing behind (a stopped device server,
# a short timeout: nothing partial at the path, no temporary file)
kill -STOP $(pgrep -f "serve --device ticker --mem 256K --socket $tmp/s1.sock")
"$V" migrate -d "$tmp/s0.sock" -d "$tmp/s1.sock" --to "file:$tmp/failed.state" --timeout 500 >/dev/null 2>"$tmp/tx.err"; rc=$?
kill -CONT $(pgrep -f "serve --device ticker --mem 256K --socket $tmp/s1.sock")
[ $rc = 1 ] && [ ! -e "$tmp/failed.state" ] && [ -z "$(ls "$tmp" | grep 'failed.state')" ] &&
    ok "a failed save to a file leaves no file" ||
    not_ok "a failed save to a file leaves no file" "exit $rc" "$(ls "$tmp")" "$(cat "$tmp/tx.err")"
expect_err "receive --to" 2 "is an option of vfiomig migrate" -- receive -d x --to unix:y
expect_err "migrate to nobody" 1 "migrate" -- migrate -d "$tmp/s0.sock" --to "unix:$tmp/nobody.sock"
[ "$("$V" state -s "$tmp/s0.sock")" = RUNNING ] && ok "a failed connect leaves the source running" ||
    not_ok "a failed connect leaves the source running"
for f in s0 s1 d0 d1; do pkill -f "serve --device ticker --mem 256K --socket $tmp/$f.sock"; done
wait 2>/dev/null

echo "1..$n"
[ $fails = 0 ]
