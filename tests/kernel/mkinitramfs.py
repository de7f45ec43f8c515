#!/usr/bin/env python3
# mkinitramfs.py DIR OUT: a newc cpio archive of DIR (uncompressed, as the
# kernel takes it) without the cpio program, for the tests that boot a
# Linux guest (tests/kernel/run.sh, tests/qemu/guest.sh).
import os, stat, sys
root, out = sys.argv[1], sys.argv[2]
def entry(f, name, st, data=b""):
    mode = st.st_mode
    hdr = "070701" + "".join("%08X" % v for v in (
        st.st_ino & 0xffffffff, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0))
    f.write(hdr.encode() + name.encode() + b"\0")
    f.write(b"\0" * ((4 - (110 + len(name) + 1) % 4) % 4))
    f.write(data)
    f.write(b"\0" * ((4 - len(data) % 4) % 4))
with open(out, "wb") as f:
    for d, dirs, files in os.walk(root):
        for n in sorted(dirs) + sorted(files):
            p = os.path.join(d, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            data = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else b""
            entry(f, rel, st, data)
    class E: st_ino = 0; st_mode = 0
    entry(f, "TRAILER!!!", E())
