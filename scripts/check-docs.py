#!/usr/bin/env python3
"""Every symbol libvfiomig exports is documented (make check).

Usage: check-docs.py LIBRARY.so INCLUDE_DIR [DOXYFILE]

- every symbol the shared library exports is a vfm_* one, declared with
  VFM_EXPORT in a public header, right under a kernel-doc comment
  ("/**", first line "name - what it does");
- every VFM_EXPORT declaration is exported (no stale declarations);
- every public header is a documented file (a "/** @file" comment), so
  that its functions have a page in the reference;
- with a Doxyfile: the reference builds (doxygen), Doxygen attached a
  description to every exported function (the comment is where Doxygen
  looks), and the function is on its header's page of the HTML reference.
Prints TAP, one line per rule; exit 1 on any failure.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    syms = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TDBRVW":
            syms.add(parts[2].split("@")[0])
    return syms


DECL = re.compile(r"^VFM_EXPORT\b[^;(]*?\b(\w+)\s*\(", re.M)


def declarations(incdir):
    """name -> (header, documented?, why)"""
    decls = {}
    for path in sorted(glob.glob(os.path.join(incdir, "*.h"))):
        text = open(path, encoding="utf-8").read()
        for m in DECL.finditer(text):
            name = m.group(1)
            before = text[:m.start()].rstrip()
            why = ""
            if not before.endswith("*/"):
                why = "no comment right above it"
            else:
                start = before.rfind("/*")
                comment = before[start:]
                if not comment.startswith("/**"):
                    why = "its comment is /* not /**"
                else:
                    body = comment[3:].lstrip(" \n*")
                    if not re.match(re.escape(name) + r"(\(\))?\s+-\s+\S", body):
                        why = "its comment does not begin '%s - ...'" % name
            decls[name] = (os.path.basename(path), not why, why)
    return decls


def undocumented_headers(incdir):
    bad = []
    for path in sorted(glob.glob(os.path.join(incdir, "*.h"))):
        if not re.search(r"/\*\*\s*\n?\s*\*?\s*@file", open(path, encoding="utf-8").read()):
            bad.append(os.path.basename(path))
    return bad


def html_page(header):
    """Doxygen's page for a header: vfio_user.h -> vfio__user_8h.html"""
    return header.replace("_", "__").replace(".", "_8") + ".html"


def doxygen_documented(xmldir):
    docd = set()
    for path in glob.glob(os.path.join(xmldir, "*_8h.xml")):
        root = ET.parse(path).getroot()
        for md in root.iter("memberdef"):
            if md.get("kind") != "function":
                continue
            name = md.findtext("name")
            text = "".join(md.find("briefdescription").itertext()) + \
                "".join(md.find("detaileddescription").itertext())
            if text.strip():
                docd.add(name)
    return docd


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    lib, incdir = sys.argv[1], sys.argv[2]
    doxyfile = sys.argv[3] if len(sys.argv) > 3 else None
    syms = exported(lib)
    decls = declarations(incdir)
    checks = []

    foreign = sorted(s for s in syms if not s.startswith("vfm_"))
    checks.append(("every exported symbol is a vfm_* one", foreign))
    undeclared = sorted(s for s in syms if s.startswith("vfm_") and s not in decls)
    checks.append(("every exported symbol is declared VFM_EXPORT in a public header",
                   undeclared))
    undoc = sorted("%s (%s: %s)" % (s, decls[s][0], decls[s][2])
                   for s in syms if s in decls and not decls[s][1])
    checks.append(("every exported symbol has a kernel-doc comment (%d symbols)" % len(syms),
                   undoc))
    stale = sorted(d for d in decls if d not in syms)
    checks.append(("every VFM_EXPORT declaration is exported", stale))
    checks.append(("every public header has a /** @file comment", undocumented_headers(incdir)))
    if doxyfile:
        outdir = re.search(r"^OUTPUT_DIRECTORY\s*=\s*(.*)$", open(doxyfile).read(), re.M)
        xmldir = os.path.join(outdir.group(1).strip(), "xml")
        # a page left from an earlier run must not pass for this one's
        for sub in ("html", "xml"):
            shutil.rmtree(os.path.join(outdir.group(1).strip(), sub), ignore_errors=True)
        try:
            run = subprocess.run(["doxygen", doxyfile], capture_output=True, text=True)
            err = run.stderr.strip() if run.returncode else ""
        except FileNotFoundError:
            err = "doxygen is not installed (make deps installs it)"
        checks.append(("the reference builds: doxygen %s" % doxyfile, [err] if err else []))
        docd = doxygen_documented(xmldir) if not err else set()
        missing = sorted(s for s in syms if s in decls and s not in docd)
        checks.append(("Doxygen found a description for every exported function", missing))
        htmldir = os.path.join(os.path.dirname(xmldir), "html")
        pages = {}
        absent = []
        for s in sorted(syms):
            if s not in decls:
                continue
            page = os.path.join(htmldir, html_page(decls[s][0]))
            if page not in pages:
                pages[page] = open(page, encoding="utf-8").read() if os.path.exists(page) else ""
            # the function's own heading in the detailed documentation
            if not re.search(r'class="memtitle">.*?</span>' + re.escape(s) + r'\(\)</h2>',
                             pages[page]):
                absent.append("%s (%s)" % (s, html_page(decls[s][0])))
        checks.append(("every exported function is documented on its header's page of "
                       "the HTML reference", absent if not err else []))

    print("1..%d" % len(checks))
    failed = 0
    for i, (what, bad) in enumerate(checks, 1):
        if bad:
            failed += 1
            print("not ok %d - %s" % (i, what))
            for b in bad:
                print("#   %s" % b)
        else:
            print("ok %d - %s" % (i, what))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
