"""strata commit --compression estargz (issue 13, item 5).

The writable mount of test_commit_zstd_chunked.py (its base image and
edits, plus a file of three 4 MiB chunks) is committed three times at
module scope: gzip, estargz, estargz again. The tests read the result
with independent tools: Python's gzip, zlib and tarfile (the blob as one
tar.gz, each TOC offset as a gzip member of its own, the footer, the TOC
and its digests), Go's archive/tar + compress/gzip (tests/gotar), skopeo
and umoci unpack, strata's own lazy eStargz mount, and podman 4.3's pull
from the loopback registry with partial pulls enabled.

The mount is unmounted in the module fixture's finalizer, registries
are killed by conftest's procs fixture, podman's state lives in
tmp_path and is removed with its mounts."""
import gzip
import hashlib
import io
import json
import os
import random
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import STRATA, assert_same_as_umoci, run, umoci_rootfs
from test_commit_zstd_chunked import (assert_podman_tree, blob,
                                      committed_image, manifest_of,
                                      podman_partial, top_layer)  # noqa
from test_lazy import filled, lazy_dirs  # noqa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gotar"))
import difftar  # noqa: E402

MiB = 1 << 20
CHUNK = 4 * MiB			# zchunked.c: ESGZ_CHUNK
CREATED = "4102444800"
MT_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
TOC_ANN = "containerd.io/snapshot/stargz/toc.digest"
USIZE_ANN = "io.containers.estargz.uncompressed-size"
HIDDEN = ("/stargz.index.json",)
HUGE = random.Random(5).randbytes(2 * CHUNK + 12345)


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def member(data, off):
    """The gzip member starting at @off: (its bytes inflated, where the
    next member starts)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(data[off:])
    assert d.eof, f"no whole gzip member at {off}"
    return out, len(data) - len(d.unused_data)


def footer_offset(data):
    """The TOC member's offset, from the 51-byte footer member."""
    f = data[-51:]
    assert f[:4] == b"\x1f\x8b\x08\x04", f
    xlen = struct.unpack("<H", f[10:12])[0]
    assert xlen == 26 and f[12:14] == b"SG"
    assert struct.unpack("<H", f[14:16])[0] == 22 and f[32:38] == b"STARGZ"
    assert member(data, len(data) - 51) == (b"", len(data))
    return int(f[16:32], 16)


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """The base image, the mount with its edits (and a file of several
    chunks), and its three commits."""
    yield from committed_image(
        tmp_path_factory.mktemp("esgz"),
        (("gz", "gzip"), ("es", "estargz"), ("es2", "estargz")),
        lambda mnt: (mnt / "usr/lib/huge.bin").write_bytes(HUGE))


@pytest.fixture(scope="module")
def parsed(committed):
    """The estargz blob, its descriptor and diff_id, the gzip commit's
    tar, and the TOC as Python reads it from the footer."""
    desc, diff_id = top_layer(committed.layout, "es")
    data = blob(committed.layout, desc["digest"]).read_bytes()
    gdesc, gdiff = top_layer(committed.layout, "gz")
    gtar = gzip.decompress(blob(committed.layout,
                                gdesc["digest"]).read_bytes())
    toc_off = footer_offset(data)
    raw, end = member(data, toc_off)
    assert end == len(data) - 51, "the TOC member is not the last"
    hdr = tarfile.TarInfo.frombuf(raw[:512], "utf-8", "surrogateescape")
    assert hdr.name == "stargz.index.json" and hdr.isreg()
    text = raw[512:512 + hdr.size]
    # then padding and the end-of-archive blocks, nothing else
    assert raw[512 + hdr.size:] == b"\0" * (len(raw) - 512 - hdr.size)
    assert len(raw) - 512 - hdr.size >= 1024
    return SimpleNamespace(desc=desc, diff_id=diff_id, data=data, gtar=gtar,
                           gdiff=gdiff, toc_off=toc_off, text=text,
                           toc=json.loads(text))


def test_blob_is_the_gzip_tar_plus_toc(committed, parsed, tmp_path):
    """Read as one tar.gz (Python's gzip and tarfile, Go's archive/tar and
    compress/gzip), the estargz blob is the gzip commit's tar with
    stargz.index.json as its last entry; the diff_id is that tar's sha256
    and the annotations name the TOC; two commits are the same bytes."""
    p = parsed
    assert p.desc["mediaType"] == MT_GZ
    assert p.desc["annotations"] == {
        TOC_ANN: sha(p.text), USIZE_ANN: str(len(gzip.decompress(p.data)))}
    assert p.desc["size"] == len(p.data)
    tar = gzip.decompress(p.data)
    assert p.diff_id == sha(tar) != p.gdiff
    # the entries, then the TOC entry, then the end of the archive
    assert p.gtar[-1024:] == b"\0" * 1024
    body = p.gtar[:-1024]
    assert tar[:len(body)] == body
    rest = io.BytesIO(tar[len(body):])
    with tarfile.open(fileobj=rest) as t:
        ms = t.getmembers()
        assert [m.name for m in ms] == ["stargz.index.json"]
        assert t.extractfile(ms[0]).read() == p.text
    with tarfile.open(fileobj=io.BytesIO(p.data), mode="r:gz") as t:
        names = t.getnames()
        assert t.extractfile("usr/lib/huge.bin").read() == HUGE
    with tarfile.open(fileobj=io.BytesIO(p.gtar)) as t:
        assert names == t.getnames() + ["stargz.index.json"]
    (tmp_path / "l.tgz").write_bytes(p.data)
    entries, end = difftar.read_go(difftar.build_gotar(tmp_path / "go"),
                                   tmp_path / "l.tgz", True)
    assert end["kind"] == "end" and end["ok"], end
    assert [x["name"].rstrip("/") or "." for x in entries] == \
        [n.rstrip("/") or "." for n in names]
    assert top_layer(committed.layout, "es2") == (p.desc, p.diff_id)
    assert manifest_of(committed.layout, "es2") == \
        manifest_of(committed.layout, "es")


def test_toc_offsets_and_digests(parsed):
    """Every TOC entry is a tar entry of the gzip commit, in tar order,
    with its type, size and link; every file's offset (every chunk's)
    starts a gzip member that inflates to exactly that chunk of the
    file, whose sha256 is its chunkDigest; the file's digest is the
    sha256 of its content; chunks are 4 MiB but the last."""
    p = parsed
    kinds = {tarfile.REGTYPE: "reg", tarfile.DIRTYPE: "dir",
             tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
             tarfile.FIFOTYPE: "fifo"}
    with tarfile.open(fileobj=io.BytesIO(p.gtar)) as t:
        members = t.getmembers()
        content = {m.name: t.extractfile(m).read() for m in members
                   if m.isreg()}
    assert p.toc["version"] == 1
    files = [e for e in p.toc["entries"] if e["type"] != "chunk"]
    assert [e["name"].rstrip("/") or "." for e in files] == \
        [m.name for m in members]
    for e, m in zip(files, members):
        assert e["type"] == kinds[m.type], e
        assert e.get("size", 0) == (m.size if m.isreg() else 0)
        assert e.get("linkName", "") == (m.linkname if m.issym() or
                                         m.islnk() else "")
        assert e.get("mode", 0) == m.mode and e.get("uid", 0) == m.uid
    offsets, seen = [], {}
    for e in p.toc["entries"]:
        if e["type"] not in ("reg", "chunk") or (
                e["type"] == "reg" and not e.get("size")):
            assert "offset" not in e and "digest" not in e, e
            continue
        name = e["name"]
        whole = content[name]
        if e["type"] == "reg":
            assert e["digest"] == sha(whole)
        start = e.get("chunkOffset", 0)
        assert start == seen.get(name, 0), e
        size = e.get("chunkSize") or len(whole) - start
        got, end = member(p.data, e["offset"])
        assert got == whole[start:start + size], e
        assert e["chunkDigest"] == sha(got)
        assert size == CHUNK or start + size == len(whole)
        seen[name] = start + size
        offsets.append(e["offset"])
    assert all(seen[n] == len(content[n]) for n in seen)
    assert seen["usr/lib/huge.bin"] == len(HUGE)
    assert [e.get("chunkOffset", 0) for e in p.toc["entries"]
            if e["name"] == "usr/lib/huge.bin"] == [0, CHUNK, 2 * CHUNK]
    assert offsets == sorted(set(offsets)) and offsets[-1] < p.toc_off


@pytest.fixture(scope="module")
def umoci_tree(committed):
    """umoci's unpack of the estargz commit (stargz.index.json is a file
    to it), after skopeo copied the image to another layout."""
    copy = committed.tmp / "copy"
    policy = committed.tmp / "policy.json"
    policy.write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    run(["skopeo", "--policy", policy, "copy", f"oci:{committed.layout}:es",
         f"oci:{copy}:es"])
    assert top_layer(copy, "es") == top_layer(committed.layout, "es")
    return copy, umoci_rootfs(copy, "es", committed.tmp / "unpacked")


def test_strata_and_umoci_read_it(committed, parsed, umoci_tree, mount,
                                  store):
    """umoci unpacks the estargz image to the tree of the writable mount
    (plus stargz.index.json), and strata mounts it lazily (from its TOC,
    nothing filled before a read) to the same tree minus that file."""
    copy, rootfs = umoci_tree
    assert (rootfs / "stargz.index.json").read_bytes() == parsed.text
    assert (rootfs / "usr/lib/huge.bin").read_bytes() == HUGE
    assert_same_as_umoci(committed.mnt, copy, "es",
                         committed.tmp / "unpacked2", ignore=HIDDEN)
    got = mount(f"oci:{committed.layout}:es", opts="prefetch=0")
    # the estargz layer from its TOC (the base's gzip layer by the
    # verifying pass of an ordinary gzip layer: a .zran entry)
    assert len([d for d in lazy_dirs(store)
                if not d.name.endswith(".zran")]) == 1
    assert filled(store) == 0
    assert "stargz.index.json" not in os.listdir(got)
    assert_same_as_umoci(got, copy, "es", committed.tmp / "unpacked3",
                         ignore=HIDDEN)


def test_docker_media_types_refused(committed):
    """The TOC is named by layer annotations, which Docker manifests lack:
    --format docker is refused, nothing written."""
    index = (committed.layout / "index.json").read_bytes()
    r = subprocess.run([str(STRATA), "commit", "--format", "docker",
                        "--compression", "estargz", str(committed.mnt),
                        f"oci:{committed.layout}:bad"],
                       capture_output=True, text=True, env=committed.env)
    assert r.returncode != 0 and "OCI media types" in r.stderr, r.stderr
    assert (committed.layout / "index.json").read_bytes() == index


def test_toc_name_taken_refused(committed):
    """A file named stargz.index.json at the root would be read as the
    TOC: the commit is refused naming it; gzip commits it."""
    upper = committed.tmp / "upper-toc"
    upper.mkdir()
    (upper / "stargz.index.json").write_text("{}\n")
    index = (committed.layout / "index.json").read_bytes()
    base = ["commit", "--upper", upper, "--from", f"oci:{committed.layout}:t"]
    r = subprocess.run([str(a) for a in [STRATA, *base, "--compression",
                        "estargz", f"oci:{committed.layout}:taken"]],
                       capture_output=True, text=True, env=committed.env)
    assert r.returncode != 0
    assert r.stderr.startswith("strata: ") and \
        "stargz.index.json" in r.stderr, r.stderr
    assert (committed.layout / "index.json").read_bytes() == index
    run([STRATA, *base, f"oci:{committed.layout}:taken"], env=committed.env)


def test_podman_partial_pull(committed, parsed, umoci_tree, registry, procs,
                             podman_partial):
    """strata commits the mount to a registry as estargz and podman 4.3
    pulls it through its partial pull path (the eStargz layer by its TOC,
    the gzip base layer whole); `podman run` sees the edits and the
    files of several chunks byte for byte, and the tree it stores is
    umoci's unpack but for owners, times, fifos (as with zstd:chunked,
    test_commit_zstd_chunked.py) and stargz.index.json."""
    reg = registry()
    r = run([STRATA, "commit", "--tls-verify=false", "--created", CREATED,
             "--compression", "estargz", committed.mnt,
             f"docker://{reg}/es/img:1"], env=committed.env)
    assert r.stdout.strip() == manifest_of(committed.layout, "es")[0]
    base_desc = manifest_of(committed.layout, "es")[1]["layers"][0]
    r = podman_partial("--log-level", "debug", "pull", "--tls-verify=false",
                       f"{reg}/es/img:1")
    assert f"Retrieved partial blob {parsed.desc['digest']}" in r.stderr, \
        r.stderr
    assert f"Retrieved partial blob {base_desc['digest']}" not in r.stderr
    r = podman_partial("run", "--rm", "--ulimit", "nofile=1024:1024",
                       "--ulimit", "nproc=1024:1024", "--network", "none",
                       f"{reg}/es/img:1", "/bin/sh", "-c",
                       "cat /etc/motd /etc/motd.hard; "
                       "test -e /etc/old || echo deleted; ls /usr/share/doc; "
                       "test -e /stargz.index.json && echo TOC; "
                       "sha256sum /usr/lib/huge.bin /usr/lib/big.bin")
    _, rootfs = umoci_tree
    sums = "".join(
        f"{hashlib.sha256((rootfs / p).read_bytes()).hexdigest()}  /{p}\n"
        for p in ("usr/lib/huge.bin", "usr/lib/big.bin"))
    assert r.stdout == "zstd:chunked motd\n" * 2 + "deleted\nNEW\n" + sums, r
    # the whole tree, but for the TOC, which the partial pull leaves out
    assert_podman_tree(podman_partial, f"{reg}/es/img:1", rootfs,
                       ignore=("/stargz.index.json",))
