"""Differential reading of layer tars: strata's unpacker against Go's
archive/tar, and a seeded mutation fuzzer around the comparison.

Used by tests/integration/test_tar_differential.py (the seeds and a bounded
fuzz run) and tests/gotar/fuzz.py (an unbounded run): one implementation.

Go's side: tests/gotar/main.go prints the headers Go's reader returns;
go_model() applies them in order the way Go-based unpackers (moby,
containerd, umoci) apply a layer, with the OCI rules of
/work/shared/OCI-RULES.md: later entries replace earlier ones of the same
path (last wins, R16), whiteouts and opaque markers apply to lower layers
only (W6, W7), missing parents are implied (P8). The result is the tree
those tools build, or the reason they refuse the layer.

strata's side: tests/tools/lxdump runs strata_unpack_layer, the unpacker
`strata import` uses, and prints the index it wrote.

compare() says how the two differ; an empty list means they agree.
"""
import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# ---- building and running the two readers -------------------------------


def build_gotar(workdir):
    """go build tests/gotar/main.go offline into @workdir; return the
    binary. Standard library only: GO111MODULE=off, a private GOCACHE."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "gotar"
    env = dict(os.environ, GOCACHE=str(workdir / "gocache"),
               GOPATH=str(workdir / "gopath"), GO111MODULE="off", GOFLAGS="",
               CGO_ENABLED="0", GOPROXY="off")
    subprocess.run(["go", "build", "-o", str(out), str(HERE / "main.go")],
                   env=env, check=True, capture_output=True, cwd=workdir)
    return out


def lxdump_path(build=None):
    build = Path(build or os.environ.get("STRATA_BUILD", REPO / "build"))
    return build / "tests" / "lxdump"


def is_gzip(data):
    return data[:2] == b"\x1f\x8b"


def read_go(gotar, path, gz):
    """Go's reading: (list of header dicts, end dict)."""
    r = subprocess.run([str(gotar)] + (["-gzip"] if gz else []) + [str(path)],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"gotar failed ({r.returncode}): {r.stderr}")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    return [x for x in lines if x["kind"] == "entry"], lines[-1]


def read_strata(lxdump, path, gz, tmpdir, lazy=False):
    """strata's reading: {"ok": True, "entries": [...]} or {"ok": False,
    "errno": N, "message": str}. A crash or sanitizer report is raised.
    With @lazy, the metadata pass of a lazy layer (lxdump --lazy)."""
    env = dict(os.environ, TMPDIR=str(tmpdir))
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    r = subprocess.run([str(lxdump)] + (["--gzip"] if gz else []) +
                       (["--lazy"] if lazy else []) + [str(path)],
                       capture_output=True, text=True, timeout=120, env=env)
    if r.returncode not in (0, 1) or "Sanitizer" in r.stderr or \
            "runtime error" in r.stderr:
        raise RuntimeError(f"lxdump crashed ({r.returncode}) on {path}:\n"
                           f"{r.stderr[-3000:]}")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    if r.returncode == 1:
        assert len(lines) == 1 and lines[0]["kind"] == "error", r.stdout
        return {"ok": False, "errno": lines[0]["errno"],
                "message": lines[0]["message"]}
    return {"ok": True, "entries": lines}


# ---- escaped byte strings (as both tools print them) ---------------------

_ESC = re.compile(r"\\x([0-9a-f]{2})")


def unesc(s):
    out = bytearray()
    i = 0
    for m in _ESC.finditer(s):
        out += s[i:m.start()].encode()
        out.append(int(m.group(1), 16))
        i = m.end()
    out += s[i:].encode()
    return bytes(out)


def blen(s):
    return len(unesc(s))


# ---- Go's tree: the layer as Go-based unpackers apply it ----------------

# Layers Go reads cleanly that strata refuses, each with its reason. A
# "strict" reason is one Go-based unpackers refuse too (so strata must
# refuse); the others are strata's own documented policy, where refusing is
# allowed (the error must name that entry) but accepting must give Go's
# tree. Keep this list small.
REFUSALS = {
    "dotdot": (True, "a \"..\" component leaves the layer (P1; moby, ggcr "
               "refuse)"),
    "root-nondir": (True, "non-directory entry for the root (P4; umoci "
                    "refuses)"),
    "too-long": (True, "path >= 4096 bytes or a component > 255 (P6; the "
                 "kernel cannot hold it)"),
    "bad-whiteout": (True, "whiteout \".wh.\" without a name, or of \".\" "
                     "/ \"..\" (W1, W2; umoci, containerd refuse)"),
    "wh-dir-component": (False, "\".wh.\" prefix on a directory component "
                         "(W5: no filesystem can hold it)"),
    "through-symlink": (True, "a path through a symlink of the same layer "
                        "(L1-L3: extractors follow it out of the root)"),
    "parent-not-dir": (True, "a parent is a non-directory (extractors fail "
                       "with ENOTDIR)"),
    "bad-hardlink": (True, "hardlink to a missing path, a directory, itself, "
                     "the root or outside the layer (L7, L10)"),
    "hardlink-data": (False, "hardlink entry claiming data of another size "
                      "than its target (L12)"),
    "unknown-type": (True, "type flag a layer may not hold (T9; umoci, "
                     "containerd refuse)"),
    "owner-range": (True, "uid/gid beyond 32 bits (no Linux id holds it)"),
    "device-range": (True, "device number beyond Linux's 12/20 bits (T2)"),
    "symlink-target": (True, "empty symlink target or >= 4096 bytes "
                       "(symlink(2) refuses it)"),
    "xattr": (True, "xattr with an empty or > 255-byte name or a value over "
              "64 KiB (setxattr(2) refuses it)"),
    "sparse": (False, "GNU sparse file (layer.md: SHOULD NOT be used)"),
    "too-big": (True, "file over 256 TiB"),
}

LINUX_XATTR_NS = ("security.", "system.", "trusted.", "user.")
MTIME_MIN, MTIME_MAX = -(1 << 33), (1 << 33) - 1


class Refused(Exception):
    def __init__(self, key, entry):
        super().__init__(key)
        self.key = key
        self.entry = entry


class Inode:
    def __init__(self, kind, **attrs):
        self.kind = kind
        self.attrs = attrs


def _clean(name):
    """Components of a tar name (P2, P3), refusing ".." (P1)."""
    comps = [c for c in name.split("/") if c not in ("", ".")]
    if ".." in comps:
        raise Refused("dotdot", name)
    if blen(name) >= 4096 or any(blen(c) > 255 for c in comps):
        raise Refused("too-long", name)
    return comps


def _xattrs(h):
    out = {}
    for k, v in h["pax"].items():
        if not k.startswith("SCHILY.xattr."):
            continue
        name = k[len("SCHILY.xattr."):]
        if blen(name) == 0 or blen(name) > 255 or blen(v) > 65536:
            raise Refused("xattr", h["name"])
        # Linux has four namespaces; setxattr(2) refuses others, and
        # overlay bookkeeping is never content (T5)
        if not name.startswith(LINUX_XATTR_NS) or \
                name.startswith(("trusted.overlay.", "user.overlay.")):
            continue
        out[name] = v
    return out


TYPES = {"0": "reg", "7": "reg", "S": "reg", "\\x00": "reg", "1": "link",
         "2": "symlink", "3": "chr", "4": "blk", "5": "dir", "6": "fifo"}


def _inode(h):
    t = TYPES[h["typeflag"]]
    if not (0 <= h["uid"] <= 0xfffffffe and 0 <= h["gid"] <= 0xfffffffe):
        raise Refused("owner-range", h["name"])
    attrs = dict(mode=(0o777 if t == "symlink" else h["mode"] & 0o7777),
                 uid=h["uid"], gid=h["gid"],
                 mtime_sec=min(max(h["mtime_sec"], MTIME_MIN), MTIME_MAX),
                 mtime_nsec=h["mtime_nsec"], xattrs=_xattrs(h))
    if t == "reg":
        if h["size"] > (1 << 48) - 1:
            raise Refused("too-big", h["name"])
        attrs.update(size=h["size"], sha256=h["sha256"])
    elif t == "symlink":
        if not h["linkname"] or blen(h["linkname"]) >= 4096:
            raise Refused("symlink-target", h["name"])
        attrs.update(link=h["linkname"])
    elif t in ("chr", "blk"):
        if not (0 <= h["devmajor"] <= 4095 and 0 <= h["devminor"] <= 1048575):
            raise Refused("device-range", h["name"])
        attrs.update(devmajor=h["devmajor"], devminor=h["devminor"])
    return Inode(t, **attrs)


def _implied():
    return Inode("dir", mode=0o755, uid=0, gid=0, xattrs={}, implied=True)


def go_model(headers):
    """Apply Go's headers in order. Return (tree, whiteouts, opaque,
    may_refuse): tree maps a path tuple to an Inode (() is the root),
    whiteouts and opaque are sets of path tuples, may_refuse lists (key of
    REFUSALS, entry name) strata may refuse the layer for, naming that
    entry. Raise Refused when Go-based unpackers refuse the layer."""
    tree = {(): _implied()}
    whiteouts, opaque, may = [], set(), []

    def kind_at(p):
        return tree[p].kind if p in tree else None

    def remove(p):
        for k in [k for k in tree if k[:len(p)] == p]:
            del tree[k]

    for h in headers:
        tf = h["typeflag"]
        if tf == "g":
            continue        # PAX global header (T7)
        if tf not in TYPES:
            raise Refused("unknown-type", h["name"])
        if tf == "S" or any(k.startswith("GNU.sparse.") for k in h["pax"]):
            may.append(("sparse", h["name"]))
        comps = tuple(_clean(h["name"]))
        if any(c.startswith(".wh..wh.") for c in comps[:-1]):
            continue        # AUFS metadata (W11)
        base = comps[-1] if comps else ""
        is_wh = base.startswith(".wh.")
        if not comps:
            if TYPES[tf] != "dir":
                raise Refused("root-nondir", h["name"])
        elif is_wh and any(kind_at(comps[:i]) not in (None, "dir")
                           for i in range(1, len(comps))):
            continue        # nothing below a same-layer file to delete
        for i in range(1, len(comps)):
            p = comps[:i]
            if comps[i - 1].startswith(".wh."):
                may.append(("wh-dir-component", h["name"]))
            k = kind_at(p)
            if k is None:
                tree[p] = _implied()
            elif k == "symlink":
                raise Refused("through-symlink", h["name"])
            elif k != "dir":
                raise Refused("parent-not-dir", h["name"])
        if is_wh:
            target = base[4:]
            if base == ".wh..wh..opq":
                opaque.add(comps[:-1])
            elif target in ("", ".", ".."):
                raise Refused("bad-whiteout", h["name"])
            elif not target.startswith(".wh."):
                whiteouts.append(comps[:-1] + (target,))
            continue
        if TYPES[tf] == "link":
            try:
                lcomps = tuple(_clean(h["linkname"]))
            except Refused as r:
                raise Refused(r.key, h["name"])
            t = tree.get(lcomps)
            if not lcomps or t is None or t.kind == "dir" or \
                    lcomps == comps or t.attrs.get("implied"):
                raise Refused("bad-hardlink", h["name"])
            if h["size"] > 0 and t.kind == "reg" and \
                    h["size"] != t.attrs["size"]:
                may.append(("hardlink-data", h["name"]))
            ino = t
        else:
            ino = _inode(h)
        old = tree.get(comps)
        if old is not None and old.kind == "dir" and ino.kind == "dir":
            old.attrs = ino.attrs       # attributes replaced, children kept
            continue
        if old is not None:
            remove(comps)               # last entry wins (R16)
            if ino.kind == "dir":
                # the non-directory before it replaced whatever lay
                # below in lower layers (an unpacker removed it): the
                # directory starts empty, as over an opaque marker
                opaque.add(comps)
        tree[comps] = ino
    # whiteouts never hide their own layer's entries: a dir of the layer
    # that is also whited out hides what is below it (W6, W7)
    wset = set()
    for w in whiteouts:
        if any(kind_at(w[:i]) not in (None, "dir") for i in range(1, len(w))):
            continue
        if w in tree and not _ghost(tree, w):
            if tree[w].kind == "dir":
                opaque.add(w)
        else:
            wset.add(w)
    return tree, wset, opaque, may


def _ghost(tree, p):
    """An implied dir with no real entry below: invisible (W4, W8)."""
    if not tree[p].attrs.get("implied") or not p:
        return False
    return not any(k[:len(p)] == p and len(k) > len(p) and
                   not tree[k].attrs.get("implied") for k in tree)


def canon_go(tree, whiteouts, opaque):
    """The model in the shape canon_strata() gives."""
    view, groups = {}, {}
    for p, ino in tree.items():
        if _ghost(tree, p) or any(_ghost(tree, p[:i])
                                  for i in range(1, len(p))):
            continue
        view[p] = _canon_attrs(ino.kind, ino.attrs)
        groups.setdefault(id(ino), []).append(p)
    links = {frozenset(g) for g in groups.values() if len(g) > 1}
    ghosts = {p for p in tree if _ghost(tree, p)}
    vis_opaque = {p for p in opaque if p in view or p in ghosts}
    return view, _minimal(whiteouts), vis_opaque & set(view), links


def _minimal(paths):
    return {p for p in paths if not any(p[:i] in paths
                                        for i in range(1, len(p)))}


def _canon_attrs(kind, a):
    c = {"type": kind, "mode": a["mode"], "uid": a["uid"], "gid": a["gid"],
         "xattrs": a.get("xattrs", {})}
    if a.get("implied"):
        c["implied"] = True
    else:
        c["mtime"] = (a["mtime_sec"], a["mtime_nsec"])
    for k in ("size", "sha256", "link", "devmajor", "devminor"):
        if k in a and a[k] != "skipped":
            c[k] = a[k]
    return c


def canon_strata(entries):
    view, whiteouts, opaque, groups = {}, set(), set(), {}
    ghosts = set()
    for e in entries:
        p = tuple(e["path"].split("/")) if e["path"] else ()
        if e["type"] == "whiteout":
            whiteouts.add(p)
            continue
        if {"ghost", "replaced"} <= set(e["flags"]):
            # `.wh.d` then `d/.wh.x`: moby and containerd re-create d
            # empty, strata keeps an opaque ghost; over a lower d both
            # show it empty, over none both show nothing: d deleted
            whiteouts.add(p)
        if "ghost" in e["flags"] or any(p[:i] in ghosts
                                        for i in range(1, len(p))):
            ghosts.add(p)
            continue
        a = dict(e, implied="implied" in e["flags"])
        view[p] = _canon_attrs(e["type"], a)
        if "opaque" in e["flags"]:
            opaque.add(p)
        if "group" in e:
            groups.setdefault(e["group"], []).append(p)
    links = {frozenset(g) for g in groups.values() if len(g) > 1}
    return view, _minimal(whiteouts), opaque, links


def _show(p):
    return "/" + "/".join(p)


def compare(headers, go_end, strata, refusal_ok=False):
    """Differences between Go's reading (@headers, @go_end) and strata's
    (@strata from read_strata), as a list of strings; [] if they agree.

    When Go-based unpackers refuse the layer, strata must refuse it too,
    with a message naming the layer (the fault it names may be another
    one it met first). When Go reads it, strata must read the same tree;
    refusing it instead is a difference, unless @refusal_ok (mutated
    inputs: refusing what the readers might see differently is always
    safe, as the issue allows) and the message is clear."""
    diffs = []
    if not go_end["ok"]:
        if strata["ok"]:
            return [f"Go's reader fails ({go_end['stage']}: "
                    f"{go_end['error']}, after entry {go_end['after']}) "
                    f"but strata accepts the layer"]
        return _check_message(strata)
    try:
        model = go_model(headers)
    except Refused as r:
        why = REFUSALS[r.key][1]
        if strata["ok"]:
            return [f"Go-based unpackers refuse entry {r.entry!r} ({why}) "
                    f"but strata accepts the layer"]
        return _check_message(strata)
    tree, wh, opq, may = model
    if not strata["ok"]:
        named = [e for _, e in may if e in strata["message"] or
                 not re.fullmatch(r"[ -\[\]-~]{1,200}", e)]
        if named or refusal_ok:
            return _check_message(strata)
        return [f"Go reads the layer and applies it, strata refuses it: "
                f"errno {strata['errno']}: {strata['message']}"]
    gv, gw, go, gl = canon_go(tree, wh, opq)
    sv, sw, so, sl = canon_strata(strata["entries"])
    for p in sorted(set(gv) | set(sv)):
        if p not in sv:
            diffs.append(f"{_show(p)}: Go has {gv[p]}, strata has nothing")
        elif p not in gv:
            diffs.append(f"{_show(p)}: strata has {sv[p]}, Go has nothing")
        elif gv[p] != sv[p]:
            keys = sorted(k for k in set(gv[p]) | set(sv[p])
                          if gv[p].get(k) != sv[p].get(k))
            diffs.append(f"{_show(p)}: " + ", ".join(
                f"{k}: Go {gv[p].get(k)!r} strata {sv[p].get(k)!r}"
                for k in keys))
    for what, g, s in (("whiteouts", gw, sw), ("opaque dirs", go, so),
                       ("hardlink groups", gl, sl)):
        if g != s:
            diffs.append(f"{what}: Go {sorted(map(str, g))} "
                         f"strata {sorted(map(str, s))}")
    return diffs


def _check_message(strata, entry=None):
    m = strata["message"]
    out = []
    if "(null)" in m:
        out.append(f"strata's error contains \"(null)\": {m}")
    if not m.startswith("layer sha256:"):
        out.append(f"strata's error does not name the layer: {m}")
    if entry is not None and re.fullmatch(r"[ -\[\]-~]{1,200}", entry) \
            and entry not in m:
        out.append(f"strata's error does not name entry {entry!r}: {m}")
    return out


# ---- one input through both readers ------------------------------------

def check(data, gotar, lxdump, workdir, name="input", refusal_ok=False,
          lazy=False):
    """Write @data to @workdir, read it both ways (strata's way: the lazy
    pass with @lazy). Return (diffs, go_end, strata)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_bytes(data)
    gz = is_gzip(data)
    headers, end = read_go(gotar, path, gz)
    st = read_strata(lxdump, path, gz, workdir, lazy)
    return compare(headers, end, st, refusal_ok), end, st


# ---- the mutation fuzzer ------------------------------------------------

ZERO = bytes(512)
FIELDS = {"name": (0, 100), "mode": (100, 8), "uid": (108, 8),
          "gid": (116, 8), "mtime": (136, 12), "size": (124, 12),
          "chksum": (148, 8), "typeflag": (156, 1), "linkname": (157, 100),
          "magic": (257, 8), "devmajor": (329, 8), "prefix": (345, 155),
          "realsize": (483, 12)}
TYPEFLAGS = b"0123456789xgLKSVMDNA\0 "


def tar_size(field):
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    s = field.replace(b"\0", b" ").strip()
    return int(s, 8) if s and all(48 <= c <= 55 for c in s) else None


def header_offsets(data):
    """Offsets of the header blocks, following the framing while it can."""
    out, off = [], 0
    while off + 512 <= len(data) and len(out) < 10000:
        h = data[off:off + 512]
        if h == ZERO:
            break
        size = tar_size(h[124:136])
        out.append(off)
        if size is None or size > len(data):
            break
        off += 512 + (size + 511) // 512 * 512
    return out


def set_checksum(block):
    b = bytearray(block)
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)


def _mutate_header(rng, data):
    offs = header_offsets(data)
    if not offs:
        return data, "no header"
    off = rng.choice(offs)
    b = bytearray(data[off:off + 512])
    field = rng.choice(list(FIELDS))
    start, length = FIELDS[field]
    how = rng.randrange(8)
    if field == "typeflag" or how == 0 and field == "typeflag":
        b[start] = rng.choice(TYPEFLAGS)
        desc = f"typeflag {chr(b[start])!r}"
    elif field == "size" and how < 3:
        size = tar_size(bytes(b[124:136])) or 0
        new = rng.choice([0, size + 512, size - 1, max(size - 512, 0),
                          1 << 33, size * 2 + 1])
        if how == 0:        # base-256
            b[124:136] = b"\x80" + max(new, 0).to_bytes(11, "big")
        elif how == 1:      # leading NUL / space
            b[124:136] = rng.choice([b"\0", b" "]) + \
                b"%010o\0" % (max(new, 0) & 0o7777777777)
        else:
            b[124:136] = b"%011o\0" % (max(new, 0) & 0o77777777777)
        desc = f"size field {bytes(b[124:136])!r}"
    elif how < 3:
        i = start + rng.randrange(length)
        b[i] = rng.randrange(256)
        desc = f"{field}[{i - start}] = {b[i]:#04x}"
    elif how < 5:
        i = start + rng.randrange(length)
        b[i] = rng.choice(b"\0 /.0178x\xff")
        desc = f"{field}[{i - start}] = {b[i]:#04x}"
    else:
        b[start:start + length] = bytes(length)
        desc = f"{field} zeroed"
    if rng.random() < 0.85:
        b = bytearray(set_checksum(b))
    else:
        desc += " (checksum left stale)"
    return data[:off] + bytes(b) + data[off + 512:], \
        f"header at {off:#x}: {desc}"


def _mutate_pax(rng, data):
    for off in header_offsets(data):
        if data[off + 156] not in b"xg":
            continue
        size = tar_size(data[off + 124:off + 136]) or 0
        body = data[off + 512:off + 512 + size]
        m = re.search(rb"(\d+) ", body)
        if not m:
            continue
        n = int(m.group(1)) + rng.choice([-2, -1, 1, 2, 100, 1 << 20])
        new = str(max(n, 0)).encode()
        body = body[:m.start(1)] + new + body[m.end(1):]
        body = body[:size].ljust(size, b"\n")
        return (data[:off + 512] + body + data[off + 512 + size:],
                f"pax record length at {off:#x} -> {new.decode()}")
    return data, "no pax header"


def _entry_span(data, off):
    size = tar_size(data[off + 124:off + 136]) or 0
    return off, off + 512 + (size + 511) // 512 * 512


def mutate(rng, data, seeds):
    """One mutation of the plain tar @data; return (bytes, description)."""
    k = rng.randrange(10)
    offs = header_offsets(data)
    if k < 4:
        return _mutate_header(rng, data)
    if k == 4:
        return _mutate_pax(rng, data)
    if k == 5 and len(data) > 512:
        cut = rng.choice([rng.randrange(len(data)),
                          rng.randrange(len(data) // 512) * 512])
        return data[:cut], f"truncated at {cut:#x}"
    if k == 6 and offs:
        other = rng.choice(seeds)
        ooffs = header_offsets(other) or [0]
        a, b = rng.choice(offs), rng.choice(ooffs)
        return data[:a] + other[b:], f"splice at {a:#x} with another at {b:#x}"
    if k == 7 and offs:
        s, e = _entry_span(data, rng.choice(offs))
        at = rng.choice(offs + [header_offsets(data)[-1]])
        return data[:at] + data[s:e] + data[at:], \
            f"entry at {s:#x} duplicated at {at:#x}"
    if k == 8:
        junk = rng.choice([b"\0" * 512, os.urandom(rng.randrange(1, 700)),
                           b"junk"])
        return data + junk, f"{len(junk)} bytes appended"
    if offs:
        s, e = _entry_span(data, rng.choice(offs))
        return data[:s] + data[e:], f"entry at {s:#x} removed"
    return data, "unchanged"


def gzip_variant(rng, tar):
    k = rng.randrange(4)
    if k == 0:
        cut = rng.randrange(1, max(len(tar), 2))
        return gzip.compress(tar[:cut], mtime=0) + \
            gzip.compress(tar[cut:], mtime=0), "gzip, two members"
    if k == 1:
        return gzip.compress(tar, mtime=0) + rng.choice(
            [b"\0" * 8, b"junk", b"\0" * 1024]), "gzip, bytes after it"
    if k == 2:
        z = gzip.compress(tar, mtime=0)
        return z[:rng.randrange(10, len(z))], "gzip, truncated"
    return gzip.compress(tar, mtime=0), "gzip"


def fuzz(seeds, gotar, lxdump, workdir, seconds=None, seed=0, iters=None,
         on_diff=None, lazy=False):
    """Mutate @seeds (plain tars) until @seconds pass (None: forever) or
    @iters inputs were tried. For each input the readers disagree on, call
    @on_diff(data, description, diffs) and collect (path, description,
    diffs, hex of its first header). Return (inputs tried, findings)."""
    rng = random.Random(seed)
    findings = []
    workdir = Path(workdir)
    deadline = None if seconds is None else time.monotonic() + seconds
    n = 0
    while (deadline is None or time.monotonic() < deadline) and \
            (iters is None or n < iters):
        data = rng.choice(seeds)
        desc = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            data, d = mutate(rng, data, seeds)
            desc.append(d)
        if rng.random() < 0.1:
            data, d = gzip_variant(rng, data)
            desc.append(d)
        n += 1
        diffs, _, _ = check(data, gotar, lxdump, workdir / "run",
                            refusal_ok=True, lazy=lazy)
        if diffs:
            path = Path(str(workdir / f"diff-{n:05d}") +
                        (".tar.gz" if is_gzip(data) else ".tar"))
            path.write_bytes(data)
            f = (path, "; ".join(desc), diffs, first_headers_hex(data))
            findings.append(f)
            if on_diff:
                on_diff(*f)
    return n, findings


def first_headers_hex(data, count=2):
    """Hex dump of the first @count header blocks (of the tar inside a
    gzip), the part a reader of the report needs."""
    if is_gzip(data):
        try:
            data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        except zlib.error:
            return "(corrupt gzip)"
    out = []
    for off in header_offsets(data)[:count] or [0]:
        blk = data[off:off + 512]
        for i in range(0, len(blk), 32):
            row = blk[i:i + 32]
            if row.strip(b"\0"):
                out.append(f"{off + i:06x}  {row.hex(' ')}  "
                           + "".join(chr(c) if 32 <= c < 127 else "."
                                     for c in row))
    return "\n".join(out)


def signature(diffs):
    """A short class of a difference, to group a fuzz run's findings."""
    d = re.sub(r"sha256:[0-9a-f]+|/tmp/\S+", "_", diffs[0])
    d = re.sub(r"'[^']*'|\"[^\"]*\"|\d+|/[^:]*:", "_", d)
    return d[:90]
