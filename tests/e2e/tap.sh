# Shared by the shell end-to-end tests: TAP counters and a scratch
# directory. Source it; $V is the vfiomig binary under test.
V=${VFIOMIG:?set VFIOMIG to the vfiomig binary}
n=0
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { n=$((n + 1)); echo "ok $n - $1"; }
# every line of every further argument is a TAP comment
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do printf '%s\n' "$l" | sed 's/^/# /'; done; }
