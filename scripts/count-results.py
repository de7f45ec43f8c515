#!/usr/bin/env python3
"""Counts test cases from meson test logs (JSON lines), by the TAP lines each
test printed, so a binary with 40 cases counts 40, and a binary that crashed
counts every case it did not report as failed. Prints a summary per suite and
ends with one line "N passed, N failed"; exits 1 if anything failed or a log
is missing.

usage: count-results.py NAME=LOG.json ...
"""
import json
import re
import sys

OK = re.compile(r"^ok\s+\d+")
NOT_OK = re.compile(r"^not ok\s+\d+")
PLAN = re.compile(r"^1\.\.(\d+)")
SKIP = re.compile(r"#\s*skip", re.IGNORECASE)


def count(entry):
    passed = failed = skipped = 0
    planned = None
    for line in (entry.get("stdout") or "").splitlines():
        m = PLAN.match(line)
        if m and planned is None:
            planned = int(m.group(1))
        elif NOT_OK.match(line):
            failed += 1
        elif OK.match(line):
            if SKIP.search(line):
                skipped += 1
            else:
                passed += 1
    seen = passed + failed + skipped
    result = entry.get("result")
    if planned is None and seen == 0:
        # not a TAP test: one case, judged by its exit status
        return (1, 0, 0) if result == "OK" else (0, 1, 0) if result != "SKIP" else (0, 0, 1)
    if planned is not None and seen < planned:
        failed += planned - seen  # crashed or hung before reporting them
    if result not in ("OK", "SKIP", "EXPECTEDFAIL") and failed == 0:
        failed += 1  # the binary failed without a TAP failure line
    return passed, failed, skipped


def main(argv):
    total_p = total_f = total_s = 0
    bad = False
    for arg in argv[1:]:
        name, _, path = arg.partition("=")
        try:
            with open(path) as f:
                entries = [json.loads(l) for l in f if l.strip()]
        except OSError as e:
            print(f"{name}: no test log ({e.strerror}: {path})")
            bad = True
            continue
        p = f_ = s = 0
        for e in entries:
            ep, ef, es = count(e)
            p, f_, s = p + ep, f_ + ef, s + es
            if ef:
                print(f"  FAILED {name}: {e['name']} ({e.get('result')}, {ef} case(s))")
                out = ((e.get("stdout") or "") + (e.get("stderr") or "")).splitlines()
                for line in out[-20:]:
                    print(f"    | {line}")
        print(f"{name}: {len(entries)} test programs, {p} passed, {f_} failed"
              + (f", {s} skipped" if s else ""))
        total_p, total_f, total_s = total_p + p, total_f + f_, total_s + s
    if total_s:
        print(f"{total_s} skipped")
    print(f"{total_p} passed, {total_f} failed")
    return 1 if (total_f or bad) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
