#!/bin/sh
# The fault test: migrations of a VM of p2p-mailbox device processes over a
# real connection (`vfiomig demo --link`, the sender and the receiver each
# with its half of the commit), with faults:
#  - a relay process (tests/fault/relay.c) between the sender and the
#    receiver drops, cuts, or delays (shorter and longer than the deadline)
#    each message of the protocol: a record of the stream, LOADED, COMMIT,
#    RUNNING;
#  - a device process, source or destination, stopped (SIGSTOP, for longer
#    than the deadline) or killed (SIGKILL) at a random moment of the
#    migration (the seed is printed: FAULT_SEED=N reruns the same moments).
# The relay's runs are repeated between real `migrate` and `receive`
# processes (ticker servers), checking each side's own exit status and
# device state.
# Each run asserts: never both copies running; the exit status says the
# outcome (0 migrated, 1 failed and rolled back, 3 a side cannot know it)
# and is the one the README's failure table gives for that message; a
# clear message; and, whenever every device of the copy that holds the
# messages answers, none lost or duplicated. At the end: the table of runs,
# faults and outcomes. Loopback only; bounded (--timeout 1500 ms). TAP.
set -u
. "$(dirname "$0")/tap.sh"
R=$FAULT_RELAY
T=1500
SEED=${FAULT_SEED:-$(date +%s)}
echo "# FAULT_SEED=$SEED"
results=$tmp/results
: >"$results"
k=0

# rand N: sets $r to a number in 0..N-1 from the seeded sequence
rand() {
    SEED=$(awk -v s="$SEED" 'BEGIN { srand(s); printf "%d", rand() * 2147483647 }')
    r=$((SEED % $1))
}

# field NAME: a field of the run's JSON (empty when absent)
field() {
    python3 -c '
import json, sys
try:
    d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception:
    sys.exit(0)
v = d.get(sys.argv[2], "")
print(str(v).lower() if isinstance(v, bool) else v)' "$tmp/out" "$1"
}

# check NAME KIND WANT_RC WANT_RUNNING: the assertions every run makes
check() {
    name=$1 kind=$2 want_rc=$3 want_run=$4
    running=$(field running)
    [ "$rc" = 0 ] && running=destinations
    lost=$(field lost) dup=$(field duplicated) counted=$(field counted)
    [ "$rc" = 0 ] && counted=true
    echo "$kind $rc $running ${lost:-?}" >>"$results"
    why=""
    [ "$running" = both ] && why="BOTH COPIES RUN"
    case " $want_rc " in *" $rc "*) ;; *) why="$why exit $rc, want $want_rc" ;; esac
    [ -n "$want_run" ] && [ "$running" != "$want_run" ] && why="$why running: $running, want $want_run"
    if [ "$counted" = true ] && { [ "${lost:-0}" != 0 ] || [ "${dup:-0}" != 0 ]; }; then
        why="$why lost $lost, duplicated $dup"
    fi
    case $rc in
    1) grep -q "rolled back to RUNNING\|migration failed\|no longer answers" "$tmp/err" ||
        why="$why no failure message" ;;
    3) grep -q "outcome is unknown" "$tmp/err" || why="$why no 'outcome unknown' message" ;;
    esac
    if [ -z "$why" ]; then
        ok "$name: exit $rc, running: $running"
    else
        not_ok "$name" "$why (exit $rc)" "stdout: $(tail -n 3 "$tmp/out")" "stderr: $(tail -n 6 "$tmp/err")"
    fi
}

# relay AT DO WANT_RC WANT_RUNNING
relay() {
    at=$1 do=$2
    k=$((k + 1))
    rx=$tmp/rx-$k.sock via=$tmp/via-$k.sock
    "$R" --listen "$via" --to "$rx" --at "$at" --do "$do" 2>"$tmp/relay.err" &
    rpid=$!
    for _ in $(seq 100); do [ -S "$via" ] && break; sleep 0.02; done
    "$V" demo --json --devices 3 --run-ms 100 --link "unix:$rx" --via "unix:$via" --timeout $T \
        >"$tmp/out" 2>"$tmp/err"
    rc=$?
    kill $rpid 2>/dev/null
    wait $rpid 2>/dev/null
    if ! grep -q "relay: $at" "$tmp/relay.err"; then
        not_ok "$at $do: the fault fired" "$(cat "$tmp/relay.err")" "$(tail -n 4 "$tmp/err")"
        return
    fi
    check "$at $do" "$(echo "$do" | sed 's/:.*//')" "$3" "$4"
}

long=delay:$((T * 2))
# a record of the stream: the receiver finds the gap, or the end; the
# sources come back
relay stream drop 1 sources
relay stream cut 1 sources
relay stream delay:200 0 destinations
relay stream "$long" 1 sources
# a bit flipped inside a device's state on the wire: the mailboxes are
# vfiomig servers, so their state travels unhashed by the stream (spliced)
# and the destination's runtime finds the damage in its own stream's
# checksums; no destination runs on it, the sources come back
relay state flip 1 sources
if grep -q "destination dst-[0-9]*: \(writing its state in RESUMING\|moving to STOP\) failed" "$tmp/err"; then
    ok "state flip: the destination's own check refused it, and the message names the destination"
else
    not_ok "state flip: the destination's own check refused it, and the message names the destination" \
        "$(tail -n 4 "$tmp/err")"
fi
# LOADED: the sender rolls back; the receiver, loaded, cannot know
relay loaded drop 3 sources
relay loaded cut 3 sources
relay loaded delay:200 0 destinations
relay loaded "$long" 3 sources
# COMMIT: neither can know; neither runs
relay commit drop 3 none
relay commit cut 3 none
relay commit delay:200 0 destinations
relay commit "$long" 3 none
# RUNNING: the destinations run; the sender cannot know
relay running drop 3 destinations
relay running cut 3 destinations
relay running delay:200 0 destinations
relay running "$long" 3 destinations

# The same relay between the commands themselves: `migrate` and `receive`
# processes and two ticker device servers. Each side's own exit status and
# its device's state, as the README's table gives them.
"$V" serve --device ticker --mem 1M --socket "$tmp/src.sock" 2>/dev/null &
spid=$!
"$V" serve --device ticker --mem 1M --socket "$tmp/dst.sock" 2>/dev/null &
dpid_srv=$!
for s in src dst; do
    for _ in $(seq 200); do "$V" state -s "$tmp/$s.sock" >/dev/null 2>&1 && break; sleep 0.05; done
done
# commands AT DO MIGRATE_RC RECEIVE_RC SOURCE_STATE DESTINATION_STATE
commands() {
    at=$1 do=$2
    k=$((k + 1))
    rx=$tmp/rx-$k.sock via=$tmp/via-$k.sock
    "$V" state -s "$tmp/src.sock" --set RUNNING >/dev/null 2>&1
    "$V" state -s "$tmp/dst.sock" --set RUNNING >/dev/null 2>&1
    timeout 60 "$V" receive -d "$tmp/dst.sock" --listen "unix:$rx" --timeout $T >/dev/null 2>"$tmp/rx.err" &
    rpid=$!
    for _ in $(seq 100); do [ -S "$rx" ] && break; sleep 0.02; done
    "$R" --listen "$via" --to "$rx" --at "$at" --do "$do" 2>"$tmp/relay.err" &
    lpid=$!
    for _ in $(seq 100); do [ -S "$via" ] && break; sleep 0.02; done
    timeout 60 "$V" migrate -d "$tmp/src.sock" --to "unix:$via" --timeout $T >/dev/null 2>"$tmp/tx.err"
    rc=$?
    wait $rpid
    rrc=$?
    kill $lpid 2>/dev/null
    wait $lpid 2>/dev/null
    ss=$("$V" state -s "$tmp/src.sock" 2>/dev/null) ds=$("$V" state -s "$tmp/dst.sock" 2>/dev/null)
    echo "$do-cmd $rc/$rrc $ss/$ds -" >>"$results"
    why=""
    grep -q "relay: $at" "$tmp/relay.err" || why="the fault did not fire"
    [ "$rc" = "$3" ] || why="$why; migrate exit $rc, want $3"
    [ "$rrc" = "$4" ] || why="$why; receive exit $rrc, want $4"
    [ "$ss" = "$5" ] || why="$why; source $ss, want $5"
    [ "$ds" = "$6" ] || why="$why; destination $ds, want $6"
    [ "$ss" = RUNNING ] && [ "$ds" = RUNNING ] && why="$why; BOTH RUN"
    for side in tx rx; do
        case $(eval echo \$$([ $side = tx ] && echo rc || echo rrc)) in
        3) grep -q "outcome unknown" "$tmp/$side.err" || why="$why; $side: no 'outcome unknown'" ;;
        esac
    done
    if [ -z "$why" ]; then
        ok "migrate | relay ($at $do) | receive: exits $rc/$rrc, source $ss, destination $ds"
    else
        not_ok "migrate | relay ($at $do) | receive" "$why" "migrate: $(cat "$tmp/tx.err")" \
            "receive: $(cat "$tmp/rx.err")"
    fi
}
for d in drop cut; do
    commands stream $d 1 1 RUNNING STOP
    commands loaded $d 1 3 RUNNING STOP
    commands commit $d 3 3 STOP STOP
    commands running $d 3 0 STOP RUNNING
done
kill $spid $dpid_srv 2>/dev/null
wait $spid $dpid_srv 2>/dev/null

# signal SIG: a random device process (source or destination) gets SIG at a
# random moment of the migration (a stopped one is continued after 2 T)
signal() {
    sig=$1
    k=$((k + 1))
    rm -f "$tmp/out" "$tmp/err" # not the last run's: the demo's redirections come late
    "$V" demo --devices 3 --large 32M --no-precopy --run-ms 100 --link "unix:$tmp/rx-$k.sock" \
        --timeout $T --json >"$tmp/out" 2>"$tmp/err" &
    dpid=$!
    # the device processes, once the VM runs (the demo says so on stderr)
    for _ in $(seq 1000); do grep -q "VM running" "$tmp/err" 2>/dev/null && break; sleep 0.01; done
    kids=$(pgrep -P $dpid | tr '\n' ' ')
    nk=$(echo $kids | wc -w)
    if [ "$nk" = 0 ]; then
        wait $dpid
        not_ok "SIG$sig: the demo's device processes" "none found" "$(cat "$tmp/err")"
        return
    fi
    rand "$nk"
    victim=$(echo $kids | cut -d' ' -f$((r + 1)))
    who=$(tr '\0' ' ' </proc/"$victim"/cmdline 2>/dev/null | grep -o '\(src\|dst\)-[0-9]*' | head -n 1)
    # the VM runs 100 ms, then the stop-copy of 32 MiB (~200 ms, longer
    # under the sanitizers): aim anywhere from just before it to after
    rand 300
    sleep "0.$(printf '%03d' $((50 + r)))"
    kill -"$sig" "$victim" 2>/dev/null
    if [ "$sig" = STOP ]; then
        sleep $((T * 2 / 1000)).$((T * 2 % 1000))
        kill -CONT "$victim" 2>/dev/null
    fi
    wait $dpid
    rc=$?
    check "SIG$sig to ${who:-a device}" "SIG$sig" "0 1 3" ""
}
for _ in 1 2 3 4 5; do signal STOP; done
for _ in 1 2 3 4 5; do signal KILL; done

# the table
runs=$(wc -l <"$results")
echo "# fault test: $runs runs (seed $SEED)"
awk '
{ n[$1]++; key = $1 " exit " $2 ", running " $3; o[key]++ }
END {
    for (f in n) printf "#   %-8s %2d runs\n", f, n[f]
    for (x in o) printf "#     %-40s %2d\n", x, o[x]
}' "$results" | sort
both=$(awk '$3 == "both"' "$results" | wc -l)
[ "$both" = 0 ] && ok "in $runs runs, never both copies running" ||
    not_ok "in $runs runs, never both copies running" "$both runs had both"

echo "1..$n"
[ $fails = 0 ]
