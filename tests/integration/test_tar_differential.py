"""strata's reading of a layer tar against Go's archive/tar.

Go's reader is the one behind Docker, containerd, podman and umoci: a layer
that strata reads differently from it is a layer where two tools show two
different filesystems (a file Docker sees as data can be /etc/passwd for
the other). Each input goes through tests/gotar (Go's headers, applied as
Go-based unpackers apply a layer) and tests/tools/lxdump (strata's real
unpacker); tests/gotar/difftar.py holds the comparison rule and the list
of layers Go reads cleanly that strata may refuse, each with its reason.

Inputs: Go's own testdata archives (tests/gotar/testdata), every layer the
suite's hostile-layer builders make (tests/gotar/corpus.tar.gz, collected
by tests/gotar/harvest.sh), crafted edge cases below, and a bounded
seeded mutation run over all of them (tests/gotar/fuzz.py runs the same
loop without a bound).
"""
import gzip
import io
import os
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gotar"))
import difftar  # noqa: E402
from ocibuild import (dir_, hardlink, make_tar, reg, symlink,  # noqa: E402
                      header_block, pad, typed, wh, opq)

GOTAR_DIR = difftar.HERE
FUZZ_SECONDS = float(os.environ.get("STRATA_TARFUZZ_SECONDS", "20"))
FUZZ_SEED = int(os.environ.get("STRATA_TARFUZZ_SEED", "1"))


@pytest.fixture(scope="session")
def gotar(tmp_path_factory):
    """Go's reader, built offline; a missing `go` fails (tests/packages.txt
    installs golang-go)."""
    return difftar.build_gotar(tmp_path_factory.mktemp("gotar"))


@pytest.fixture(scope="session")
def lxdump():
    p = difftar.lxdump_path()
    assert p.exists(), f"{p} not built"
    return p


# ---- crafted edge cases ------------------------------------------------

END = b"\0" * 1024


def raw_entry(name, data=b"", typeflag=b"0", size_field=None, fmt=None,
              realsize=None, bad_checksum=False):
    """One GNU-format header + data, with the size field written by hand."""
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.type = typeflag
    ti.mode = 0o644
    ti.mtime = 1_600_000_000
    b = bytearray(header_block(ti, fmt or tarfile.GNU_FORMAT)[-512:])
    if size_field is not None:
        b[124:136] = size_field
    if realsize is not None:
        b[483:495] = b"%011o\0" % realsize
    b = bytearray(difftar.set_checksum(bytes(b)))
    if bad_checksum:
        b[148:154] = b"000001"
    return bytes(b) + pad(data)


def pax_entry(name, records, data=b""):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    ti.pax_headers = records
    return make_tar([(ti, data)], fmt=tarfile.PAX_FORMAT)[:-1024 * 9]


def crafted():
    x = b"hello world\n"
    t = {}
    t["leading-nul-size"] = raw_entry("a", x, size_field=b"\0" +
                                      b"%010o\0" % len(x)) + END
    t["leading-space-size"] = raw_entry("a", x, size_field=b" " +
                                        b"%010o\0" % len(x)) + END
    t["base256-size"] = raw_entry("a", x, size_field=b"\x80" +
                                  len(x).to_bytes(11, "big")) + END
    t["base256-size-then-unknown-type"] = (
        raw_entry("a", x, size_field=b"\x80" + len(x).to_bytes(11, "big")) +
        raw_entry("etc/passwd", b"root::0:0::/:/bin/sh\n", typeflag=b"V") +
        END)
    t["leading-nul-size-then-unknown-type"] = (
        raw_entry("a", x, size_field=b"\0" + b"%010o\0" % len(x)) +
        raw_entry("b", b"", typeflag=b"V") + END)
    t["gnu-realsize-on-plain-file"] = raw_entry("a", x, realsize=4096) + END
    t["bad-checksum"] = (raw_entry("a", x) + raw_entry("b", x,
                                                       bad_checksum=True) +
                         END)
    t["bad-checksum-first"] = raw_entry("a", x, bad_checksum=True) + END
    t["duplicate-file"] = make_tar([reg("f", b"one"), reg("f", b"two")])
    t["duplicate-file-then-dir"] = make_tar([reg("f", b"one"), dir_("f")])
    t["duplicate-dir-then-file"] = make_tar([dir_("d"), reg("d/x", b"1"),
                                             reg("d", b"file")])
    t["duplicate-symlink-then-file"] = make_tar([symlink("l", "/etc"),
                                                 reg("l", b"x")])
    t["duplicate-dirs-merge"] = make_tar([dir_("d", mode=0o700),
                                          reg("d/x"), dir_("d", mode=0o755)])
    t["long-pax-path"] = make_tar([reg("d/" + "p" * 3000, b"x")])
    t["long-pax-xattr"] = make_tar([reg("f", b"x", xattrs={
        "user.big": "v" * 60000})])
    t["non-linux-xattr"] = make_tar([reg("f", b"x", xattrs={
        "com.apple.quarantine": "q", "user.ok": "1"})])
    t["overlay-xattr"] = make_tar([dir_("d", xattrs={
        "trusted.overlay.opaque": "y"})])
    t["pax-size-override"] = pax_entry("f", {"size": "5"}, b"12345") + END
    t["whiteouts-and-opaque"] = make_tar([
        dir_("a"), wh("a/b"), opq("a"), reg("a/c"), wh("x/y"), wh("z"),
        reg("z"), dir_("w"), wh("w")])
    t["hardlinks"] = make_tar([reg("f", b"data", mode=0o600),
                               hardlink("g", "f"), hardlink("h", "/g")])
    t["root-entry"] = make_tar([dir_(".", mode=0o700), reg("./a", b"x")])
    t["dotdot"] = make_tar([reg("../evil", b"x")])
    t["unknown-typeflag"] = make_tar([typed("f", b"V")])
    t["contiguous-file"] = make_tar([typed("f", b"7", b"data")])
    tar = make_tar([dir_("d"), reg("d/f", b"content" * 100)])
    z = gzip.compress(tar, mtime=0)
    t["gzip-two-members.gz"] = gzip.compress(tar[:1000], mtime=0) + \
        gzip.compress(tar[1000:], mtime=0)
    t["gzip-trailing-junk.gz"] = z + b"junk after the stream"
    t["gzip-trailing-zeros.gz"] = z + b"\0" * 1024
    t["gzip-truncated.gz"] = z[:-4]
    t["no-end-blocks"] = raw_entry("a", x)
    t["trailing-junk-after-end"] = make_tar([reg("a", x)]) + b"junk"
    return t


def seeds():
    out = {}
    for p in sorted((GOTAR_DIR / "testdata").glob("*.tar")):
        out["go:" + p.name] = p.read_bytes()
    corpus = GOTAR_DIR / "corpus.tar.gz"
    with tarfile.open(corpus) as tf:
        for m in tf.getmembers():
            if m.isfile():
                out["suite:" + m.name] = tf.extractfile(m).read()
    for k, v in crafted().items():
        out["crafted:" + k] = v
    return out


SEEDS = seeds()


def report(name, data, diffs):
    return (f"{name}: strata and Go's archive/tar disagree:\n  " +
            "\n  ".join(diffs) + "\nfirst headers:\n" +
            difftar.first_headers_hex(data))


# Layers Go reads that strata refuses, naming the layer, because libarchive
# (which unpacks them) reads them differently from Go: refusing is the safe
# reading of a layer two readers disagree on. Keep this list short.
SEED_REFUSED = {
    "crafted:leading-nul-size": "a size field with leading NULs: Go skips "
    "them, libarchive reads 0 and would take the data for headers",
    "crafted:pax-size-override": "a pax size record over the header's "
    "size: libarchive's framing differs from Go's",
    "go:invalid-go17.tar": "Go's pre-1.8 GNU prefix fallback names the "
    "entry otherwise than libarchive",
    "go:pax-path-hdr.tar": "a pax header with no entry after it",
}


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_read_like_go(name, gotar, lxdump, tmp_path):
    data = SEEDS[name]
    diffs, _, _ = difftar.check(data, gotar, lxdump, tmp_path,
                                refusal_ok=name in SEED_REFUSED)
    if diffs:
        (tmp_path / "input").rename(tmp_path / name.split(":")[-1])
    assert not diffs, report(name, data, diffs)


def fuzz_bounded(gotar, lxdump, tmp_path, seed, lazy=False):
    """The bounded run (STRATA_TARFUZZ_SECONDS) from @seed, over the plain
    seeds; fails listing every differing input (kept in tmp_path) with
    its first headers, grouped by kind of difference."""
    plain = [v for v in SEEDS.values()
             if not difftar.is_gzip(v) and len(v) <= 1 << 16]
    n, found = difftar.fuzz(plain, gotar, lxdump, tmp_path,
                            seconds=FUZZ_SECONDS, seed=seed, lazy=lazy)
    assert n > 0
    groups = defaultdict(list)
    for f in found:
        groups[difftar.signature(f[2])].append(f)
    lines = [f"{len(found)} of {n} mutated inputs read differently"
             f"{' by the lazy pass' if lazy else ''} (seed {seed}), "
             f"{len(groups)} kinds:"]
    for sig, fs in sorted(groups.items(), key=lambda g: -len(g[1])):
        path, desc, diffs, hexd = fs[0]
        lines += [f"\n== {len(fs)} x {sig}", f"  e.g. {path} ({desc})",
                  *("  " + d[:300] for d in diffs[:4]), hexd]
    assert not found, "\n".join(lines)


def test_fuzz_bounded(gotar, lxdump, tmp_path):
    """20 s (by default) of seeded mutations (STRATA_TARFUZZ_SECONDS,
    STRATA_TARFUZZ_SEED); every differing input is kept in tmp_path and
    reported with its first headers, grouped by kind of difference."""
    fuzz_bounded(gotar, lxdump, tmp_path, FUZZ_SEED)


# ---- the lazy pass: Go's reading alone ----------------------------------
#
# stratafs -o lazy reads a layer with Go's rules alone (store/layer/
# unpack.c, read_go_only): no content comes from libarchive, so the layers
# SEED_REFUSED lists, refused where libarchive unpacks them, are read as Go
# reads them. lxdump --lazy runs that pass and reads each file where the
# pass found it in the tar.


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_lazy_pass_reads_like_go(name, gotar, lxdump, tmp_path):
    data = SEEDS[name]
    diffs, _, _ = difftar.check(data, gotar, lxdump, tmp_path, lazy=True)
    if diffs:
        (tmp_path / "input").rename(tmp_path / name.split(":")[-1])
    assert not diffs, report(name, data, diffs)


def test_lazy_pass_reads_what_libarchive_refuses(gotar, lxdump, tmp_path):
    """Each layer refused in full for libarchive's sake is read by the lazy
    pass, and read as Go reads it (the test above compares the trees)."""
    for name in SEED_REFUSED:
        data = SEEDS[name]
        path = tmp_path / "input"
        path.write_bytes(data)
        gz = difftar.is_gzip(data)
        full = difftar.read_strata(lxdump, path, gz, tmp_path)
        lazy = difftar.read_strata(lxdump, path, gz, tmp_path, lazy=True)
        assert not full["ok"], (name, full)
        assert lazy["ok"], (name, lazy)


def test_fuzz_bounded_lazy_pass(gotar, lxdump, tmp_path):
    """The bounded mutation run again (another seed), through the lazy
    pass: a tree read otherwise than Go reads it fails; a refusal passes,
    as in test_fuzz_bounded."""
    fuzz_bounded(gotar, lxdump, tmp_path, FUZZ_SEED + 1, lazy=True)
