#!/bin/sh
# One bounded libFuzzer run: FUZZER REPLAY SECONDS CORPUS_DIR. Seeds the
# corpus from the target's own valid inputs; prints one TAP line.
set -u
fz=$1 replay=$2 secs=$3 corpus=$4
mkdir -p "$corpus"
"$replay" --write-seeds "$corpus" || exit 1
echo "1..1"
if "$fz" -max_total_time="$secs" -print_final_stats=1 -detect_leaks=1 "$corpus" >"$corpus.log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$corpus.log" | grep -o '[0-9]*$')
    echo "ok 1 - $(basename "$fz"): ${runs:-?} inputs in ${secs}s, no fault"
else
    echo "not ok 1 - $(basename "$fz") found a fault"
    tail -n 40 "$corpus.log" | sed 's/^/# /'
    exit 1
fi
