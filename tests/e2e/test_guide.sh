#!/bin/sh
# docs/device-guide.md cannot rot: every ```c block in it must appear,
# byte for byte, in the example device it describes, which is built and
# tested. TAP output.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
exec python3 - "$root/docs/device-guide.md" "$root/devices/example/ticker.c" <<'PY'
import re, sys
guide = open(sys.argv[1]).read()
src = open(sys.argv[2]).read()
blocks = re.findall(r"```c\n(.*?)\n```", guide, re.S)
print(f"1..{len(blocks) + 1}")
print(("ok" if len(blocks) >= 5 else "not ok") + f" 1 - the guide has {len(blocks)} code blocks")
bad = 0
for i, b in enumerate(blocks, 2):
    first = b.splitlines()[0] if b else ""
    if b in src:
        print(f"ok {i} - block '{first}' is in ticker.c")
    else:
        bad += 1
        print(f"not ok {i} - block '{first}' is not in ticker.c (the guide is out of date)")
sys.exit(1 if bad or len(blocks) < 5 else 0)
PY
