#!/bin/bash
# The authenticated migration stream (issue 13): TLS with certificates and
# with a pre-shared key between real migrate and receive processes, over
# loopback TCP. A wrong key, a wrong certificate (either side's), a
# replayed stream and an idle first connection are each refused, and the
# receiver then takes the real migration. The replay is sent by gnutls-cli
# (GnuTLS's own client: a peer this project did not write).
. "$(dirname "$0")/tap.sh"

command -v certtool >/dev/null && command -v gnutls-cli >/dev/null || {
    echo "1..0 # SKIP certtool/gnutls-cli missing (apt install gnutls-bin)"; exit 0; }
"$(dirname "$0")/mkcreds.sh" "$tmp/cr"
cr=$tmp/cr
port=$((30000 + $$ % 20000))

for f in s d; do
    "$V" serve --device ticker --mem 256K --socket "$tmp/$f.sock" 2>/dev/null &
done
for f in s d; do
    for _ in $(seq 100); do "$V" state --socket "$tmp/$f.sock" >/dev/null 2>&1 && break; sleep 0.05; done
done

# One receiver (expecting migration id m1, with @1's credentials), the
# attempts given as functions that must each fail, then the real sender
# with @2's credentials. Asserts the attempts failed, the receiver logged
# each refusal (@3: its patterns, one per attempt), and the real migration
# ran: destination RUNNING, source STOP.
scenario() { # NAME RXCREDS TXCREDS PATTERN ATTEMPT...
    local name=$1 rxc=$2 txc=$3 pat=$4; shift 4
    port=$((port + 1))
    "$V" state -s "$tmp/s.sock" --set RUNNING >/dev/null
    "$V" state -s "$tmp/d.sock" --set STOP >/dev/null
    timeout 60 "$V" receive -d "$tmp/d.sock" --listen "tcp:127.0.0.1:$port" --id m1 --tls-creds "$cr/$rxc" \
        --handshake-timeout 800 >"$tmp/rx.out" 2>"$tmp/rx.err" &
    local rpid=$! bad=""
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
    for a in "$@"; do
        $a >"$tmp/att.out" 2>&1 && bad="$bad; attempt '$a' succeeded"
        [ "$("$V" state -s "$tmp/s.sock" 2>/dev/null)" = RUNNING ] || bad="$bad; after '$a' the source is not RUNNING"
    done
    "$V" migrate -d "$tmp/s.sock" --to "tcp:localhost:$port" --id m1 --tls-creds "$cr/$txc" \
        >"$tmp/tx.out" 2>"$tmp/tx.err" || bad="$bad; the real migration failed: $(cat "$tmp/tx.err")"
    wait $rpid || bad="$bad; receive exited $?"
    grep -q -- "$pat" "$tmp/rx.err" || bad="$bad; receive did not say '$pat'"
    [ "$("$V" state -s "$tmp/d.sock")" = RUNNING ] || bad="$bad; the destination does not run"
    [ "$("$V" state -s "$tmp/s.sock")" = STOP ] || bad="$bad; the source is not stopped"
    if [ -z "$bad" ]; then ok "$name"; else not_ok "$name" "$bad" "receive said: $(cat "$tmp/rx.err")" "last attempt: $(cat "$tmp/att.out")"; fi
}

tx() { # CREDS [ID] [extra...]: a migrate that must be refused
    "$V" migrate -d "$tmp/s.sock" --to "tcp:localhost:$port" --id "${2:-m1}" --tls-creds "$cr/$1" "${@:3}"
}
wrong_key() { tx psk-wrong; }
rogue_client() { tx mixed-client >"$tmp/rogue.out" 2>&1; local r=$?; cat "$tmp/rogue.out"; return $r; }
rogue_all() { tx rogue; }
wrong_host() { tx good m1 --tls-hostname elsewhere.example; }
replay() { # the stream of migration m0, sent again by an authenticated client
    timeout 10 gnutls-cli --priority "NORMAL:+ECDHE-PSK:+PSK" --pskusername vfiomig \
        --pskkey "$(cut -d: -f2 "$cr/psk/keys.psk")" -p "$port" localhost <"$tmp/m0.state" >/dev/null 2>&1
    return 1 # gnutls-cli's status says nothing; the receiver's log does
}
idle() { # connects, says nothing; the real sender comes while it is held
    exec 4<>"/dev/tcp/127.0.0.1/$port"; sleep 1.2; exec 4<&-; return 1; }
plain() { # plain TCP into a TLS receiver
    "$V" migrate -d "$tmp/s.sock" --to "tcp:127.0.0.1:$port" --id m1 --timeout 2000; }

scenario "psk: a migration over TLS with a pre-shared key" psk psk "authenticated (psk identity vfiomig)"
scenario "psk: a wrong key is refused, then the real sender migrates" psk psk "refused a connection .*the client's pre-shared key is not this side's" wrong_key
scenario "x509: both peers verified; the migration runs" good good "authenticated (CN=migrate-client)"
scenario "x509: a client certificate of another authority is refused" good good "refused a connection" rogue_client rogue_all
# TLS 1.3: that sender's handshake ended before the receiver refused it;
# the receiver's alert tells it why (GnuTLS sends none unless asked)
grep -q "the peer ended the TLS session: Certificate" "$tmp/rogue.out" &&
    ok "... and the refused sender says why (the receiver's alert), not \"broken pipe\"" ||
    not_ok "... and the refused sender says why (the receiver's alert), not \"broken pipe\"" "$(cat "$tmp/rogue.out")"
another_id() { # an authenticated sender of another migration: it is told why
    tx good m0 >"$tmp/id.out" 2>&1; local r=$?; cat "$tmp/id.out"; return $r; }
scenario "x509: an authenticated sender of another migration is refused" good good "not the expected 'm1'" another_id
grep -q "the receiving side refused the stream: .*another migration id" "$tmp/id.out" &&
    ok "... and it reads the receiver's answer through TLS" ||
    not_ok "... and it reads the receiver's answer through TLS" "$(cat "$tmp/id.out")"
scenario "x509: the sender refuses a receiver certificate for another host" good good "authenticated" wrong_host
grep -q "does not match the expected" "$tmp/att.out" && ok "... and says the name does not match" ||
    not_ok "... and says the name does not match" "$(cat "$tmp/att.out")"
# the recorded stream of another migration (m0), played in over TLS
"$V" state -s "$tmp/s.sock" --set RUNNING >/dev/null
"$V" migrate -d "$tmp/s.sock" --to "file:$tmp/m0.state" --id m0 >/dev/null 2>&1
scenario "a replayed stream (another migration's id) is refused before any device is touched" psk psk \
    "refused the stream from .*: the migration stream is of migration 'm0', not the expected 'm1'" replay
scenario "a plain-TCP peer is refused by a TLS receiver" psk psk "refused a connection" plain
scenario "an idle first connection is dropped at the handshake deadline; the real sender migrates" psk psk \
    "dropped a connection from .*: nothing completed the TLS handshake within 800 ms" idle

# plain TCP on loopback: the id is checked all the same
port=$((port + 1))
"$V" state -s "$tmp/s.sock" --set RUNNING >/dev/null; "$V" state -s "$tmp/d.sock" --set STOP >/dev/null
timeout 60 "$V" receive -d "$tmp/d.sock" --listen "tcp:$port" --id m1 --handshake-timeout 500 >/dev/null 2>"$tmp/rx.err" &
rpid=$!
sleep 0.3
exec 4<>"/dev/tcp/127.0.0.1/$port"
"$V" migrate -d "$tmp/s.sock" --to "tcp:127.0.0.1:$port" --id m0 >/dev/null 2>"$tmp/tx0.err"; rc0=$?
"$V" migrate -d "$tmp/s.sock" --to "tcp:127.0.0.1:$port" --id m1 >/dev/null 2>"$tmp/tx.err"; rc1=$?
wait $rpid; rrc=$?
exec 4<&-
# the refused sender says why (the receiver's answer), not "broken pipe"
[ $rc0 = 1 ] && [ $rc1 = 0 ] && [ $rrc = 0 ] && grep -q "not the expected 'm1'" "$tmp/rx.err" &&
    grep -q "the receiving side refused the stream: .*another migration id" "$tmp/tx0.err" &&
    ok "plain loopback TCP: another id is refused, an idle peer does not block the real sender" ||
    not_ok "plain loopback TCP: another id is refused, an idle peer does not block the real sender" \
        "exit $rc0/$rc1/$rrc" "$(cat "$tmp/rx.err" "$tmp/tx0.err" "$tmp/tx.err")"

# many streams, each connection its own TLS session (the demo's key), the
# mailboxes' traffic and guest RAM checked at the destination
"$V" demo --json --devices 4 --run-ms 100 --tls --streams 3 >"$tmp/ds.json" 2>"$tmp/ds.err"; rc=$?
[ $rc = 0 ] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] and d["streams"] == 3 and d["lost"] == 0 and d["ram"]["equal"]' "$tmp/ds.json" &&
    ok "3 streams, each its own TLS session: nothing lost" ||
    not_ok "3 streams, each its own TLS session: nothing lost" "exit $rc" "$(cat "$tmp/ds.json" "$tmp/ds.err")"

pkill -f "serve --device ticker --mem 256K --socket $tmp/" 2>/dev/null
wait 2>/dev/null
echo "1..$n"
[ $fails = 0 ]
