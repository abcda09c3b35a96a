"""test_marc_cli.py - the marc model through the command line, checked by independent readers.

- every shared MARC file is ingested in every mode; the counts of accepted, rejected and
  repaired records, the exit status and, in strict mode, the error naming file, byte offset,
  ordinal and 001 are asserted; nothing read is lost (accepted, original and rejected bytes
  put back in ordinal order give the input again);
- clean files export to ISO 2709 byte for byte (cmp);
- yaz-marcdump reads every export (ISO 2709, MARCXML, line, and MARC-in-JSON record by
  record); MARCXML equals yaz-marcdump's own conversion record for record (whitespace
  normalised) and MARC-in-JSON equals an independent ISO 2709 parse, for every record that
  has no defect and is valid UTF-8;
- control-number lookups through /marc/control_index with h5py (FNV-1a computed here);
- a live run: `h5stream tail -f FILE /marc` started before the writer sees every record
  while a slow pipe feeds `ingest marc -`;
- several sources in one run, --to-utf8, --export, and usage errors (exit 2).
"""

import json
import os
import re
import subprocess
import threading
import time

import h5py
import numpy as np

import h5s_scriptlib as lib

MODES = ("strict", "lenient", "permissive")

# file: (strict, lenient, permissive), each (exit status, accepted, rejected, repaired).
# Decided by formats/h5s_marc_check.c (docs/marc.md); strict stops at the first bad record.
EXPECTED = {
    "000-line-seperated.mrc": ((0, 20, 0, 0), (0, 20, 0, 0), (0, 20, 0, 0)),
    "008008027.mrc": ((1, 18, 1, 0), (0, 18, 1, 0), (0, 18, 1, 0)),
    "AAAP-PDF_records_2022-03.mrc": ((0, 72, 0, 0), (0, 72, 0, 0), (0, 72, 0, 0)),
    "BooksAll.2014.part01-0001.mrc": ((0, 100, 0, 0), (0, 100, 0, 0), (0, 100, 0, 0)),
    "MMA_Pubs_records_2021_07.mrc": ((0, 3804, 0, 0), (0, 3804, 0, 0), (0, 3804, 0, 0)),
    "bad_hathi_records.mrc": ((1, 3, 1, 0), (0, 4, 1, 0), (0, 5, 0, 0)),
    "bad_leaders_10_11.mrc": ((1, 0, 1, 0), (0, 1, 0, 1), (0, 1, 0, 0)),
    "bad_records.mrc": ((1, 1, 1, 0), (0, 5, 3, 3), (0, 6, 2, 0)),
    "bad_too_long_plus_2.mrc": ((1, 0, 1, 0), (0, 2, 1, 2), (0, 3, 0, 0)),
    "baddir.usmarc": ((1, 0, 1, 0), (0, 0, 1, 0), (0, 0, 1, 0)),
    "badind.usmarc": ((0, 1, 0, 0), (0, 1, 0, 0), (0, 1, 0, 0)),
    "badldr.usmarc": ((1, 2, 1, 0), (0, 6, 2, 0), (0, 6, 2, 0)),
    "brkrtest.mrc": ((0, 8, 0, 0), (0, 8, 0, 0), (0, 8, 0, 0)),
    "brkrtest_UTF8.mrc": ((0, 8, 0, 0), (0, 8, 0, 0), (0, 8, 0, 0)),
    "camel.usmarc": ((0, 10, 0, 0), (0, 10, 0, 0), (0, 10, 0, 0)),
    "cameleof.usmarc": ((1, 1, 1, 0), (0, 7, 3, 0), (0, 7, 3, 0)),
    "chinese_mangled_multibyte.mrc": ((0, 4, 0, 0), (0, 4, 0, 0), (0, 4, 0, 0)),
    "datos-20161010-slice.mrc": ((1, 0, 1, 0), (0, 0, 1, 0), (0, 0, 1, 0)),
    "incomplete_esc_seq.mrc": ((0, 1, 0, 0), (0, 1, 0, 0), (0, 1, 0, 0)),
    "marc.dat": ((0, 20, 0, 0), (0, 20, 0, 0), (0, 20, 0, 0)),
    "marc8.dat": ((0, 1, 0, 0), (0, 1, 0, 0), (0, 1, 0, 0)),
    "pride-and-prejudice-fixed.mrc": ((0, 383, 0, 0), (0, 383, 0, 0), (0, 383, 0, 0)),
    "pride-and-prejudice-with-many-errors.mrc": (
        (1, 1, 1, 0), (0, 298, 85, 0), (0, 367, 16, 0)),
    "test.dat": ((0, 10, 0, 0), (0, 10, 0, 0), (0, 10, 0, 0)),
    "unordered-directory-entries.mrc": ((0, 1, 0, 0), (0, 1, 0, 0), (0, 1, 0, 0)),
    "utf8_invalid.mrc": ((0, 1, 0, 0), (0, 1, 0, 0), (0, 1, 0, 0)),
    "yaz/marc0.marc": ((1, 0, 1, 0), (0, 0, 1, 0), (0, 1, 0, 0)),
    "yaz/marc1.marc": ((1, 0, 1, 0), (0, 0, 1, 0), (0, 1, 0, 0)),
    "yaz/marc10.marc": ((1, 0, 1, 0), (0, 1, 0, 1), (0, 1, 0, 0)),
    "yaz/marc11.marc": ((1, 0, 1, 0), (0, 1, 0, 1), (0, 1, 0, 0)),
    "yaz/marc12.marc": ((0, 1, 0, 0), (0, 1, 0, 0), (0, 1, 0, 0)),
    "yaz/marc2.marc": ((1, 0, 1, 0), (0, 0, 1, 0), (0, 1, 0, 0)),
    "yaz/marc3.marc": ((1, 0, 1, 0), (0, 0, 1, 0), (0, 1, 0, 0)),
    "yaz/marc4.marc": ((1, 0, 1, 0), (0, 0, 1, 0), (0, 0, 1, 0)),
    "yaz/marc5.marc": ((1, 0, 1, 0), (0, 0, 1, 0), (0, 1, 0, 0)),
    "yaz/marc6.marc": ((0, 1, 0, 0), (0, 1, 0, 0), (0, 1, 0, 0)),
    "yaz/marc7.marc": ((0, 1, 0, 0), (0, 1, 0, 0), (0, 1, 0, 0)),
    "yaz/marc8.marc": ((1, 0, 1, 0), (0, 1, 0, 1), (0, 1, 0, 0)),
    "yaz/marc9.marc": ((0, 1, 0, 0), (0, 1, 0, 0), (0, 1, 0, 0)),
    "yaz/marccol1.u8.marc": ((0, 19, 0, 0), (0, 19, 0, 0), (0, 19, 0, 0)),
}

IX_REPAIRED, IX_CONVERTED, IX_DEFECTS = 0x1, 0x2, 0x20
SUMMARY = re.compile(r"(\d+) records read, (\d+) accepted, (\d+) rejected, (\d+) repaired")
YAZ_MAX = 99999  # yaz-marcdump reads records of at most this many bytes


def run(args, **kw):
    return subprocess.run(args, capture_output=True, timeout=600, **kw)


def text_of(data, limit=600):
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def have_program(name):
    return any(os.access(os.path.join(d, name), os.X_OK)
               for d in os.environ.get("PATH", "/usr/bin").split(os.pathsep))


def count_line_records(out):
    """Records in yaz-marcdump's line output (blocks separated by a blank line)."""
    return len([b for b in out.split(b"\n\n") if b.strip()])


def fnv1a(data):
    h = 0xCBF29CE484222325
    for c in data:
        h ^= c
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h - 1 if h == 0xFFFFFFFFFFFFFFFF else h


def parse_iso(rec):
    """An independent ISO 2709 parse: (leader, [(tag, data) | (tag, ind1, ind2, [(code, value)])])."""
    leader = rec[:24]
    base = int(rec[12:17])
    directory = rec[24:base - 1]
    fields = []
    for i in range(0, len(directory) - 11, 12):
        tag = directory[i:i + 3].decode("ascii")
        length = int(directory[i + 3:i + 7])
        start = int(directory[i + 7:i + 12])
        data = rec[base + start:base + start + length]
        if data.endswith(b"\x1e"):
            data = data[:-1]
        if tag.startswith("00"):
            fields.append((tag, data))
        else:
            subs = [(s[:1], s[1:]) for s in data[2:].split(b"\x1f")[1:] if s]
            fields.append((tag, data[0:1], data[1:2], subs))
    return leader, fields


def title_of(rec):
    """245 $a as the product prints it (first 245, first $a, spaces trimmed)."""
    for f in parse_iso(rec)[1]:
        if f[0] == "245" and len(f) == 4:
            for code, value in f[3]:
                if code == b"a":
                    return value.strip(b" ")
            return b""
    return b""


def control_of(rec):
    for f in parse_iso(rec)[1]:
        if f[0] == "001" and len(f) == 2:
            return f[1].strip(b" ")
    return b""


def is_utf8(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def text_clean(rec):
    """1 when every piece of the record (leader, control data, indicators, subfield codes
    and values) is valid UTF-8 on its own: such records have one right MARCXML and JSON."""
    try:
        leader, fields = parse_iso(rec)
    except ValueError:
        return False
    pieces = [leader]
    for f in fields:
        pieces += [f[1]] if len(f) == 2 else [f[1], f[2]] + [x for cv in f[3] for x in cv]
    return all(is_utf8(x) for x in pieces)


def records(h5, group):
    """The records of a group, as bytes, with the index table."""
    g = h5[group]
    data = g["records"][()].tobytes()
    off = g["offsets"][()]
    index = g["index"][()]
    n = len(index)
    return [data[off[i]:off[i + 1]] for i in range(n)], index


def norm_xml(text):
    text = re.sub("\ufffd+", "\ufffd", text)
    return re.sub(r">\s+<", "><", re.sub(r"\s+", " ", text)).strip()


def xml_records(raw):
    return [norm_xml(r) for r in
            re.findall(r"<record.*?</record>", raw.decode("utf-8", "replace"), re.S)]


def check_nothing_lost(checks, name, src_bytes, h5):
    """Accepted (their input bytes) and rejected records, by ordinal, are the input less the
    newlines the scanner skips between records."""
    acc, aidx = records(h5, "/marc")
    rej, ridx = records(h5, "/marc/rejected")
    originals = h5["/marc/originals"][()].tobytes()
    repairs = h5["/marc/repairs"][()]
    by_row = {int(r["row"]): r for r in repairs}
    pieces = []
    for i, rec in enumerate(acc):
        if i in by_row:
            r = by_row[i]
            o = int(r["original_offset"])
            rec = originals[o:o + int(r["original_length"])]
        pieces.append((int(aidx["ordinal"][i]), rec))
    pieces += [(int(ridx["ordinal"][i]), rec) for i, rec in enumerate(rej)]
    pieces.sort()
    ok = [p[0] for p in pieces] == list(range(len(pieces)))
    pos = 0
    for _, rec in pieces:
        while pos < len(src_bytes) and src_bytes[pos:pos + 1] in (b"\n", b"\r"):
            pos += 1
        ok = ok and src_bytes[pos:pos + len(rec)] == rec
        pos += len(rec)
    ok = ok and src_bytes[pos:].strip(b"\r\n") == b""
    checks.check("%s: nothing lost" % name, ok,
                 "%d records put back in ordinal order give the input" % len(pieces)
                 if ok else "the stored bytes do not give the input back")


def test_modes(checks, p, work):
    data = p.shared_data + "/marc"
    for rel, expected in sorted(EXPECTED.items()):
        src = os.path.join(data, rel)
        if not os.path.exists(src):
            checks.check("%s exists" % rel, False, src)
            continue
        with open(src, "rb") as f:
            src_bytes = f.read()
        for mode, (want_rc, want_acc, want_rej, want_rep) in zip(MODES, expected):
            name = "%s --mode %s" % (rel, mode)
            out = os.path.join(work, "modes.h5")
            r = run([p.bin, "ingest", "marc", src, "-o", out, "--mode", mode])
            m = SUMMARY.search(r.stdout.decode())
            seen = (r.returncode,) + (tuple(int(x) for x in m.groups()[1:]) if m else ())
            if not checks.equal(name + ": exit, accepted, rejected, repaired", seen,
                                (want_rc, want_acc, want_rej, want_rep),
                                text_of(r.stderr)):
                continue
            with h5py.File(out, "r") as h5:
                n_acc = len(h5["/marc/index"])
                n_rej = len(h5["/marc/rejected/index"])
                checks.equal(name + ": rows in the file", (n_acc, n_rej), (want_acc, want_rej))
                if mode != "strict":
                    check_nothing_lost(checks, name, src_bytes, h5)
                elif want_rc == 1:
                    err = r.stderr.decode("utf-8", "replace")
                    rej, ridx = records(h5, "/marc/rejected")
                    ordinal = int(ridx["ordinal"][0])
                    offset = int(ridx["source_offset"][0])
                    ctl = bytes(ridx["control"][0]).decode("utf-8", "replace")
                    ok = (src in err and ("record %d " % ordinal) in err and "at byte" in err
                          and ("(001 %s)" % (ctl or "?")) in err and ordinal == want_acc
                          and src_bytes[offset:offset + len(rej[0])] == rej[0])
                    checks.check(name + ": the error names file, byte, ordinal and 001", ok,
                                 err.strip()[:300])


def test_clean_roundtrip_and_yaz(checks, p, work):
    """Lenient ingest of every file (every stored record then validates); its exports are
    read by yaz-marcdump and compared with yaz-marcdump's own conversions."""
    data = p.shared_data + "/marc"
    for rel in sorted(EXPECTED):
        src = os.path.join(data, rel)
        out = os.path.join(work, "x.h5")
        run([p.bin, "ingest", "marc", src, "-o", out, "--mode", "lenient", "-q"])
        exports = {}
        for fmt, ext in (("iso2709", "mrc"), ("marcxml", "xml"), ("marc-json", "json"),
                         ("line", "txt")):
            path = os.path.join(work, "x." + ext)
            r = run([p.bin, "export", out, "--to", fmt, "-o", path])
            checks.equal("%s: export --to %s exits 0" % (rel, fmt), r.returncode, 0,
                         text_of(r.stderr))
            exports[fmt] = path
        with h5py.File(out, "r") as h5:
            recs, index = records(h5, "/marc")
        flags = index["flags"] if len(index) else []
        with open(exports["iso2709"], "rb") as f:
            iso = f.read()
        checks.check("%s: ISO 2709 export is the stored bytes" % rel, iso == b"".join(recs))
        if EXPECTED[rel][0][0] == 0:  # strict accepts all: a clean file
            with open(src, "rb") as f:
                src_bytes = f.read()
            if b"\x1d\n" in src_bytes or b"\x1d\r" in src_bytes:
                src_bytes = re.sub(rb"\x1d[\r\n]+", b"\x1d", src_bytes).rstrip(b"\r\n")
            checks.check("%s: ISO 2709 export is cmp-identical to the input" % rel,
                         iso == src_bytes, "%d vs %d bytes" % (len(iso), len(src_bytes)))
        if not recs:
            continue
        # yaz-marcdump reads every export, and the line format is its own.
        readable = [r for r in recs if len(r) <= YAZ_MAX]
        yaz_line = run(["yaz-marcdump", "-o", "line", exports["iso2709"]])
        for fmt, yaz_in in (("iso2709", "marc"), ("marcxml", "marcxml")):
            y = run(["yaz-marcdump", "-i", yaz_in, "-o", "line", exports[fmt]])
            n = count_line_records(y.stdout)
            ok = y.returncode == 0 and n == len(readable)
            checks.check("%s: yaz-marcdump -i %s reads the %s export" % (rel, yaz_in, fmt), ok,
                         "rc %d, %d records (%d expected)%s" % (
                             y.returncode, n, len(readable),
                             "" if ok else ": " + text_of(y.stderr, 200)))
        with open(exports["line"], "rb") as f:
            line = f.read()
        y = run(["yaz-marcdump", "-i", "line", "-o", "marc", exports["line"]])
        # (Same bytes when every record has one right text form: see text_clean.)
        comparable = len(readable) == len(recs) and all(text_clean(r) for r in recs)
        checks.check("%s: the line export is yaz-marcdump -o line's, and yaz reads it" % rel,
                     y.returncode == 0 and (not comparable or line == yaz_line.stdout),
                     "%d vs %d bytes" % (len(line), len(yaz_line.stdout)))
        with open(exports["marc-json"], "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
        checks.equal("%s: MARC-in-JSON parses with json, one object per record" % rel,
                      len(doc), len(recs))
        # yaz reads MARC-in-JSON one record at a time: a sample of them, each read as yaz
        # reads the same record in ISO 2709 (when it has no defect and is valid UTF-8).
        sample = list(range(len(doc)))[:: max(1, len(doc) // 5)][:5]
        bad_json = []
        for i in sample:
            one, iso1 = os.path.join(work, "one.json"), os.path.join(work, "one.mrc")
            with open(one, "w") as f:
                json.dump(doc[i], f)
            with open(iso1, "wb") as f:
                f.write(recs[i])
            y = run(["yaz-marcdump", "-i", "json", "-o", "line", one])
            ok = y.returncode == 0 and count_line_records(y.stdout) == 1
            if ok and text_clean(recs[i]) and len(recs[i]) <= YAZ_MAX:
                yi = run(["yaz-marcdump", "-o", "line", iso1])
                ok = y.stdout.split(b"\n")[1:] == yi.stdout.split(b"\n")[1:]
            if not ok:
                bad_json.append(i)
        checks.check("%s: yaz-marcdump -i json reads exported records" % rel, not bad_json,
                     "%d sampled%s" % (len(sample), ", differ: %r" % bad_json if bad_json else ""))
        # Records without defects and with valid UTF-8: MARCXML as yaz converts them,
        # MARC-in-JSON as an independent parse reads them.
        eligible = [i for i, r in enumerate(recs)
                    if not (flags[i] & IX_DEFECTS) and text_clean(r) and len(r) <= YAZ_MAX]
        if not eligible:
            continue
        sub = os.path.join(work, "eligible.mrc")
        with open(sub, "wb") as f:
            f.write(b"".join(recs[i] for i in eligible))
        y = run(["yaz-marcdump", "-o", "marcxml", sub])
        theirs = xml_records(y.stdout)
        with open(exports["marcxml"], "rb") as f:
            ours_all = xml_records(f.read())
        ours = [ours_all[i] for i in eligible] if len(ours_all) == len(recs) else []
        same = sum(1 for a, b in zip(ours, theirs) if a == b)
        checks.check("%s: MARCXML equals yaz-marcdump's, record for record" % rel,
                     len(ours) == len(theirs) == same,
                     "%d of %d records equal" % (same, len(eligible)))
        bad = 0
        for i in eligible:
            leader, fields = parse_iso(recs[i])
            want = {"leader": leader.decode(), "fields": []}
            for fl in fields:
                if len(fl) == 2:
                    want["fields"].append({fl[0]: fl[1].decode()})
                else:
                    want["fields"].append({fl[0]: {
                        "ind1": fl[1].decode() or " ", "ind2": fl[2].decode() or " ",
                        "subfields": [{c.decode(): v.decode()} for c, v in fl[3]]}})
            if doc[i] != want:
                bad += 1
        checks.check("%s: MARC-in-JSON equals an independent ISO 2709 parse" % rel, bad == 0,
                      "%d of %d records differ" % (bad, len(eligible)))


def test_control_index(checks, p, work):
    src = p.shared_data + "/marc/MMA_Pubs_records_2021_07.mrc"
    out = os.path.join(work, "ctl.h5")
    run([p.bin, "ingest", "marc", src, "-o", out, "-q"])
    with h5py.File(out, "r") as h5:
        ci = h5["/marc/control_index"][()]
        index = h5["/marc/index"][()]
        checks.equal("control_index ends with its sentinel",
                     (int(ci["hash"][-1]), int(ci["row"][-1])), (2**64 - 1, len(index)))
        body = ci[:-1]
        checks.check("control_index is sorted by hash",
                     bool(np.all(body["hash"][1:] >= body["hash"][:-1])))
        controls = [c for c in index["control"]]
        with_ctl = sum(1 for c in controls if c)
        checks.equal("control_index has a row per record with a 001", len(body), with_ctl)
        misses = 0
        for row in range(0, len(index), 37):
            c = controls[row]
            if not c:
                continue
            h = np.uint64(fnv1a(c))
            k = int(np.searchsorted(body["hash"], h))
            found = None
            while k < len(body) and body["hash"][k] == h:
                if controls[int(body["row"][k])] == c:
                    found = int(body["row"][k])
                    break
                k += 1
            first = controls.index(c)
            misses += found != first
        checks.equal("h5py finds records by 001 through control_index (FNV-1a)", misses, 0)


def test_live_tail(checks, p, work):
    src = p.shared_data + "/marc/BooksAll.2014.part01-0001.mrc"
    with open(src, "rb") as f:
        src_bytes = f.read()
    recs = []
    pos = 0
    while pos < len(src_bytes):
        n = int(src_bytes[pos:pos + 5])
        recs.append(src_bytes[pos:pos + n])
        pos += n
    out = os.path.join(work, "live.h5")
    if os.path.exists(out):
        os.remove(out)
    tail = subprocess.Popen([p.bin, "tail", out, "/marc", "-f", "--interval", "20",
                             "--timeout", "60000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    lines, stamps = [], []

    def reader():
        for line in tail.stdout:
            lines.append(line)
            stamps.append(time.monotonic())

    th = threading.Thread(target=reader)
    th.start()
    ingest = subprocess.Popen([p.bin, "ingest", "marc", "-", "-o", out, "--flush-ms", "50",
                               "-q"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for k in range(0, len(recs), 10):
            ingest.stdin.write(b"".join(recs[k:k + 10]))
            ingest.stdin.flush()
            time.sleep(0.15)
        seen_while_writing = len(lines)
        ingest.stdin.close()
        rc = ingest.wait(timeout=120)
        tail.wait(timeout=120)
        th.join(timeout=10)
    finally:
        lib.stop_process(ingest)
        lib.stop_process(tail)
    checks.equal("live: ingest from a slow pipe exits 0", rc, 0)
    checks.equal("live: tail -f exits 0 when the writer closes", tail.returncode, 0,
                 tail.stderr.read().decode(errors="replace")[:300] if tail.stderr else "")
    checks.check("live: tail printed records while the writer was still writing",
                 seen_while_writing > 0, "%d lines before the pipe closed" % seen_while_writing)
    want = [b"%d\t%s\t%s\n" % (i, control_of(r), title_of(r)) for i, r in enumerate(recs)]
    checks.equal("live: tail saw every record once, in order (ordinal, 001, 245 $a)",
                 len(lines), len(want))
    checks.check("live: every line is the record's ordinal, 001 and title", lines == want,
                 "first difference at %s" % next(
                     (i for i, (a, b) in enumerate(zip(lines, want)) if a != b), None))


def test_killed_writer(checks, p, work):
    """kill -9 while a pipe feeds the writer: the committed records are a prefix of the
    input, readable before and after `h5stream recover`."""
    with open(p.shared_data + "/marc/MMA_Pubs_records_2021_07.mrc", "rb") as f:
        src = f.read()
    out = os.path.join(work, "killed.h5")
    ingest = subprocess.Popen([p.bin, "ingest", "marc", "-", "-o", out, "--flush-ms", "30",
                               "-q"], stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for k in range(0, len(src) // 2, 256 << 10):
            ingest.stdin.write(src[k:k + (256 << 10)])
            ingest.stdin.flush()
            time.sleep(0.05)
        time.sleep(0.5)
        ingest.kill()
        ingest.wait(timeout=60)
    finally:
        lib.stop_process(ingest)
    exported = os.path.join(work, "killed.mrc")
    for when in ("before recover", "after recover"):
        r = run([p.bin, "export", out, "--to", "iso2709", "-o", exported])
        with open(exported, "rb") as f:
            got = f.read()
        checks.check("killed writer, %s: the committed records are a prefix of the input" % when,
                     r.returncode == 0 and 0 < len(got) <= len(src) and src.startswith(got),
                     "%d of %d bytes, exit %d %s" % (len(got), len(src), r.returncode,
                                                      text_of(r.stderr)))
        if when == "before recover":
            r = run([p.bin, "recover", out])
            checks.equal("h5stream recover on the killed marc file exits 0", r.returncode, 0,
                         text_of(r.stderr))


def test_sources_utf8_export_usage(checks, p, work):
    data = p.shared_data + "/marc"
    srcs = [data + "/camel.usmarc", data + "/test.dat", data + "/brkrtest.mrc"]
    out = os.path.join(work, "multi.h5")
    xml = os.path.join(work, "multi.xml")
    r = run([p.bin, "ingest", "marc"] + srcs + ["-o", out, "--to-utf8", "--threads", "3",
                                               "--export", "marcxml:" + xml])
    checks.equal("several sources, --to-utf8, --export: exit 0", r.returncode, 0,
                 text_of(r.stderr))
    with h5py.File(out, "r") as h5:
        names = [s.decode() for s in h5["/marc/sources"][()]]
        index = h5["/marc/index"][()]
        recs, _ = records(h5, "/marc")
        repairs = h5["/marc/repairs"][()]
        originals = h5["/marc/originals"][()].tobytes()
    checks.equal("the sources table names the files in order", names, srcs)
    checks.equal("ordinals run on across sources",
                 [int(x) for x in index["ordinal"]], list(range(28)))
    checks.equal("each record names its source",
                 [int(x) for x in index["source"]], [0] * 10 + [1] * 10 + [2] * 8)
    conv = [bool(f & IX_CONVERTED) for f in index["flags"]]
    checks.equal("--to-utf8 converts the MARC-8 records only", sum(conv[20:]), 8)
    with open(srcs[2], "rb") as f:
        marc8 = f.read()
    ok = len(repairs) >= 8 and all(
        originals[int(r["original_offset"]):int(r["original_offset"]) + int(r["original_length"])]
        in marc8 for r in repairs[-8:])
    checks.check("converted records keep their input bytes in /marc/originals", ok)
    checks.check("converted records say UTF-8 in leader/09",
                 all(recs[i][9:10] == b"a" for i in range(20, 28)))
    y = run(["yaz-marcdump", "-f", "marc8", "-t", "utf8", "-o", "marcxml", srcs[2]])
    theirs = [re.sub(r"<leader>\d{5}", "<leader>", x) for x in xml_records(y.stdout)]
    with open(xml, "rb") as f:
        ours = [re.sub(r"<leader>\d{5}", "<leader>", x) for x in xml_records(f.read())[20:]]
    checks.check("converted records: MARCXML as yaz-marcdump -f marc8 -t utf8 (but for the "
                 "record length, which we recompute)", ours == theirs,
                 "%d vs %d records" % (len(ours), len(theirs)))
    # Converting at export time gives the same bytes as converting at ingest.
    plain = os.path.join(work, "plain.h5")
    run([p.bin, "ingest", "marc", srcs[2], "-o", plain, "-q"])
    conv_export = os.path.join(work, "conv.mrc")
    r = run([p.bin, "export", plain, "--to", "iso2709", "--to-utf8", "-o", conv_export])
    with open(conv_export, "rb") as f:
        converted = f.read()
    checks.check("export --to iso2709 --to-utf8 equals ingest --to-utf8's records",
                 r.returncode == 0 and converted == b"".join(recs[20:28]),
                 "%d vs %d bytes" % (len(converted), len(b"".join(recs[20:28]))))
    # Usage errors.
    for args, what in (([], "no source and no -o"),
                       ([srcs[0]], "no -o"),
                       ([srcs[0], "-o", out, "--mode", "lax"], "a bad --mode"),
                       ([srcs[0], "-o", out, "--bogus"], "an unknown option"),
                       ([srcs[0], "-o", out, "--export", "pdf:x"], "a bad --export"),
                       (["-", "-", "-o", out], "stdin twice")):
        r = run([p.bin, "ingest", "marc"] + args)
        checks.equal("ingest marc with %s exits 2" % what, r.returncode, 2)
    r = run([p.bin, "export", out, "--to", "marcxml"])
    checks.equal("export without -o exits 2", r.returncode, 2)
    r = run([p.bin, "tail", out, "/marc/nothing"])
    checks.equal("tail of an unknown marc path exits 2", r.returncode, 2)
    r = run([p.bin, "ingest", "marc", os.path.join(work, "missing.mrc"), "-o", out])
    checks.check("a missing source exits 1 naming it", r.returncode == 1 and
                 b"missing.mrc" in r.stderr, text_of(r.stderr))
    r = run([p.bin, "tail", out, "/marc/rejected", "--json"])
    checks.check("tail --json of the rejected group: valid (empty) output",
                 r.returncode == 0 and r.stdout == b"", text_of(r.stderr))
    bad = os.path.join(work, "bad.h5")
    run([p.bin, "ingest", "marc", data + "/bad_records.mrc", "-o", bad, "--mode", "permissive",
         "-q"])
    r = run([p.bin, "tail", bad, "/marc/rejected", "--json"])
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    checks.check("tail --json /marc/rejected gives each rejected record with its error",
                 r.returncode == 0 and len(rows) == 2 and all(
                     "bad_records.mrc" in x["error"] for x in rows), repr(rows)[:300])


def test_shard_export(checks, p, work):
    """Several files of one run (shards, docs/shards.md) exported as one output."""
    parts = ["marc.dat", "test.dat", "BooksAll.2014.part01-0001.mrc"]
    shards = []
    src = b""
    for i, name in enumerate(parts):
        path = os.path.join(p.shared_data, "marc", name)
        with open(path, "rb") as f:
            src += f.read()
        h5 = os.path.join(work, "shard_%d.h5" % i)
        if os.path.exists(h5):
            os.remove(h5)
        r = run([p.bin, "ingest", "marc", path, "-o", h5, "-q"])
        checks.equal("shards: ingest %s" % name, r.returncode, 0, text_of(r.stderr))
        shards.append(h5)
    out = os.path.join(work, "shards.mrc")
    r = run([p.bin, "export"] + shards + ["--to", "iso2709", "-o", out])
    checks.equal("shards: ISO 2709 export of 3 files exits 0", r.returncode, 0, text_of(r.stderr))
    with open(out, "rb") as f:
        checks.check("shards: the ISO 2709 export is the 3 sources back to back, byte for byte",
                     f.read() == src)
    both = os.path.join(work, "shards_src.mrc")
    with open(both, "wb") as f:
        f.write(src)
    xml = os.path.join(work, "shards.xml")
    r = run([p.bin, "export"] + shards + ["--to", "marcxml", "-o", xml])
    y = run(["yaz-marcdump", "-i", "marc", "-o", "marcxml", both])
    with open(xml, "rb") as f:
        ours = f.read()
    checks.check("shards: one MARCXML collection equal to yaz-marcdump's of the sources",
                 r.returncode == 0 and ours.count(b"<collection") == 1
                 and norm_xml(ours.decode("utf-8", "replace"))
                 == norm_xml(y.stdout.decode("utf-8", "replace")), text_of(r.stderr))
    js = os.path.join(work, "shards.json")
    r = run([p.bin, "export"] + shards + ["--to", "marc-json", "-o", js])
    n = len(xml_records(ours))
    try:
        with open(js, "rb") as f:
            arr = json.loads(f.read().decode("utf-8"))
        ok = r.returncode == 0 and isinstance(arr, list) and len(arr) == n
    except ValueError as e:
        ok, arr = False, str(e)
    checks.check("shards: one MARC-in-JSON array with every record (%d)" % n, ok,
                 text_of(r.stderr))


def test_source_shrinks(checks, p, work):
    """A source truncated while it is ingested (tests/scripts/shrink_shim.c truncates it
    once it is mapped): exit 1 with an error naming the file, the byte offset and the new
    size, and a closed file holding, byte for byte, every record that ends before the cut.
    'map': the reader meets the cut first; 'signal': the parsers do, in records the reader
    had already cut."""
    shim = os.environ.get("H5S_SHRINK_SHIM", os.path.join(
        os.path.dirname(os.path.dirname(p.bin)), "tests", "libh5s_shrink_shim.so"))
    with open(p.shared_data + "/marc/MMA_Pubs_records_2021_07.mrc", "rb") as f:
        full = f.read() * 3
    cut = 2 << 20  # a page boundary inside a record, in the first 4 MiB window
    want = b"".join(rec for at, rec in lib.iso2709_split(full) if at + len(rec) <= cut)
    for when in ("map", "signal"):
        src = os.path.join(work, "shrinks-%s.mrc" % when)
        out = os.path.join(work, "shrinks-%s.h5" % when)
        report = os.path.join(work, "shrinks-%s.txt" % when)
        with open(src, "wb") as f:
            f.write(full)
        env = lib.preload_env(p.bin, shim)
        env.update({"H5S_SHRINK_PATH": src, "H5S_SHRINK_TO": str(cut),
                    "H5S_SHRINK_WHEN": when, "H5S_SHRINK_REPORT": report})
        r = run([p.bin, "ingest", "marc", src, "-o", out], env=env)
        acted = os.path.exists(report) and "truncated" in open(report).read()
        checks.check("source shrinks (%s): the shim truncated it to %d bytes" % (when, cut),
                     acted and os.path.getsize(src) == cut, "size %d" % os.path.getsize(src))
        m = re.search(r"(\S+): the file shrank while it was read: byte (\d+) is past its end "
                      r"\((\d+) bytes now, (\d+) when opened\)",
                      r.stderr.decode("utf-8", "replace"))
        checks.check("source shrinks (%s): exit 1, naming the file, the offset and both sizes"
                     % when, r.returncode == 1 and m is not None and m.group(1) == src and
                     cut <= int(m.group(2)) < cut + 100000 and int(m.group(3)) == cut and
                     int(m.group(4)) == len(full), "exit %d %s" % (r.returncode,
                                                                   text_of(r.stderr)))
        exported = os.path.join(work, "shrinks-%s-out.mrc" % when)
        e = run([p.bin, "export", out, "--to", "iso2709", "-o", exported])
        got = open(exported, "rb").read() if e.returncode == 0 else b""
        checks.check("source shrinks (%s): the %d records that end before the cut are stored "
                     "byte for byte" % (when, len(lib.iso2709_split(want))), got == want,
                     "%d of %d bytes, export exit %d %s" % (len(got), len(want), e.returncode,
                                                            text_of(e.stderr)))
        i = run([p.bin, "info", out])
        checks.check("source shrinks (%s): the file is closed" % when,
                     i.returncode == 0 and b"writer: closed" in i.stdout, text_of(i.stdout))


def main(checks, p):
    work = p.fresh_dir("marc_cli")
    if not have_program("yaz-marcdump"):
        checks.check("yaz-marcdump is installed (Debian package yaz)", False)
        return
    test_modes(checks, p, work)
    test_clean_roundtrip_and_yaz(checks, p, work)
    test_control_index(checks, p, work)
    test_live_tail(checks, p, work)
    test_killed_writer(checks, p, work)
    test_source_shrinks(checks, p, work)
    test_sources_utf8_export_usage(checks, p, work)
    test_shard_export(checks, p, work)


if __name__ == "__main__":
    lib.run_main(main)
