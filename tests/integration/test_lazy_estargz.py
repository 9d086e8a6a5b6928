"""Lazy eStargz layers (issue 13): mounted from their stargz.index.json,
files fetched on first read and checked against the TOC's digests.

The layers are written here from the format's documentation
(stargz-snapshotter docs/estargz.md): Python's tarfile writes the tar,
each regular file's content and each chunk of a large one starts a gzip
member of its own (Python's gzip), the TOC is the last tar entry in a
member of its own, and a 51-byte footer names its offset. Python's
tarfile and Go's archive/tar + compress/gzip read them as the plain
tar.gz they are; the mount is compared with `umoci unpack`.
"""
import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import struct
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from conftest import (assert_same_as_umoci, assert_same_tree, make_tar, run,
                      tar_dir, tar_file, tar_symlink)
from test_lazy import daemon, filled, lazy_dirs, layout_with  # noqa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gotar"))
import difftar  # noqa: E402

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
TOC_ANN = "containerd.io/snapshot/stargz/toc.digest"
USIZE_ANN = "io.containers.estargz.uncompressed-size"
HIDDEN = ("/stargz.index.json", "/.prefetch.landmark",
          "/.no.prefetch.landmark")
KINDS = {tarfile.REGTYPE: "reg", tarfile.DIRTYPE: "dir",
         tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
         tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
         tarfile.FIFOTYPE: "fifo"}


def mkdir(p):
    p.mkdir()
    return p


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def footer(toc_off):
    """An empty gzip member whose Extra field is "SG", 22, %016xSTARGZ."""
    extra = b"SG" + struct.pack("<H", 22) + b"%016xSTARGZ" % toc_off
    return (b"\x1f\x8b\x08\x04\0\0\0\0\0\xff" + struct.pack("<H", len(extra))
            + extra + b"\x01\x00\x00\xff\xff" + b"\0" * 8)


def esgz_blob(entries, chunk=64 << 10, corrupt=None, annotate=True,
              tamper=None):
    """An eStargz layer of the tar @entries (conftest make_tar form).
    @corrupt: a file name whose first content byte is changed in the blob
    after the TOC was written; @tamper(toc) may change the TOC before it
    is written (and annotated). Returns (blob, diff_id, annotations, toc
    offset)."""
    raw = make_tar(entries)
    t = tarfile.open(fileobj=io.BytesIO(raw))
    members = t.getmembers()
    body = bytearray(raw[:t.offset])	# without the end blocks
    cuts = [0]
    for m in members:
        if m.isreg() and m.size:
            cuts += [m.offset_data + c for c in range(0, m.size, chunk)]
    cuts.append(len(body))
    toc, orig = [], bytes(body)
    if corrupt:
        m = t.getmember(corrupt)
        body[m.offset_data] ^= 0xff
    blob, at = b"", {}
    for a, b in zip(cuts, cuts[1:]):
        at[a] = len(blob)
        blob += gzip.compress(bytes(body[a:b]), mtime=0)
    for m in members:
        e = {"name": m.name, "type": KINDS[m.type], "mode": m.mode,
             "uid": m.uid, "gid": m.gid, "uname": m.uname,
             "gname": m.gname, "modtime": time.strftime(
                 "%Y-%m-%dT%H:%M:%SZ", time.gmtime(m.mtime))}
        if m.issym() or m.islnk():
            e["linkName"] = m.linkname
        if m.ischr() or m.isblk():
            e["devMajor"], e["devMinor"] = m.devmajor, m.devminor
        xs = {k[13:]: base64.b64encode(v.encode("utf-8", "surrogateescape"))
              .decode() for k, v in m.pax_headers.items()
              if k.startswith("SCHILY.xattr.")}
        if xs:
            e["xattrs"] = xs
        toc.append(e)
        if not m.isreg():
            continue
        e["size"] = m.size
        data = orig[m.offset_data:m.offset_data + m.size]
        if m.size:
            e["digest"] = sha(data)
        for c in range(0, m.size, chunk):
            part = data[c:c + chunk]
            ce = e if c == 0 else {"name": m.name, "type": "chunk",
                                   "chunkOffset": c}
            ce["offset"] = at[m.offset_data + c]
            ce["chunkDigest"] = sha(part)
            if m.size > chunk:
                ce["chunkSize"] = len(part)
            if c:
                toc.append(ce)
    doc = {"version": 1, "entries": toc}
    if tamper:
        tamper(doc)
    js = json.dumps(doc).encode()
    toc_tar = make_tar([tar_file("stargz.index.json", js)])
    toc_off = len(blob)
    blob += gzip.compress(toc_tar, mtime=0) + footer(toc_off)
    stream = bytes(body) + toc_tar
    ann = {TOC_ANN: sha(js), USIZE_ANN: str(len(stream))} if annotate else {}
    return blob, sha(stream), ann, toc_off


def xattr_file(name, data, **kw):
    ti, data = tar_file(name, data, **kw)
    ti.pax_headers = {"SCHILY.xattr.user.note": "kept"}
    return ti, data


def hardlink(name, target):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mtime = tarfile.LNKTYPE, target, 1600000000
    return ti


def chardev(name, major, minor):
    ti = tarfile.TarInfo(name)
    ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, major, minor
    ti.mode, ti.mtime = 0o600, 1600000000
    return ti


BIG = os.urandom(200000)	# four chunks


def base_entries():
    return [tar_dir("etc"), tar_file("etc/hosts", b"127.0.0.1 here\n"),
            tar_file(".prefetch.landmark", b"\x0f"),
            tar_dir("usr"), tar_dir("usr/lib"),
            tar_file("usr/lib/big", BIG, mode=0o755, uid=7, gid=8),
            hardlink("usr/lib/big.link", "usr/lib/big"),
            tar_symlink("usr/lib/big.sym", "big"),
            xattr_file("etc/noted", b"with an xattr\n"),
            chardev("etc/null", 1, 3),
            tar_file("etc/gone", b"deleted above\n"),
            tar_file("empty", b"")]


def top_entries():
    """... with a TOC over 64 KiB (grown into as it is inflated)."""
    return [tar_dir("etc"), tar_file("etc/.wh.gone"),
            tar_file("etc/hosts", b"changed\n"),
            tar_file("etc/new", b"n" * 70000), tar_dir("many")] + [
                tar_file("many/f%03d" % i, b"") for i in range(600)]


@pytest.fixture(scope="module")
def esgz_image(tmp_path_factory):
    """(layout dir, oci: reference) of two eStargz layers."""
    d = tmp_path_factory.mktemp("esgz") / "img"
    ref = layout_with(d, [esgz_blob(base_entries())[:3],
                          esgz_blob(top_entries())[:3]], media_type=GZ)
    return d, ref


def test_independent_readers_take_the_layers(tmp_path):
    """What the tests write is a plain tar.gz to Python's tarfile and to
    Go's archive/tar + compress/gzip: the TOC the last entry, the footer
    an empty gzip member."""
    blob, diff_id, ann, _ = esgz_blob(base_entries())
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as t:
        names = t.getnames()
        assert t.extractfile("usr/lib/big").read() == BIG
        doc = t.extractfile("stargz.index.json").read()
    assert names[-1] == "stargz.index.json" and sha(doc) == ann[TOC_ANN]
    assert sha(gzip.decompress(blob)) == diff_id
    (tmp_path / "l.tgz").write_bytes(blob)
    entries, end = difftar.read_go(difftar.build_gotar(tmp_path / "go"),
                                   tmp_path / "l.tgz", True)
    assert end["kind"] == "end" and end["ok"], end
    assert [x["name"].rstrip("/") for x in entries] == names


def test_lazy_mount_matches_umoci(esgz_image, mount, store, tmp_path):
    """Mounted from the TOCs (nothing fetched before a read), the tree is
    umoci's unpack but for eStargz's own files, which are hidden; the
    full unpack (-o lazy=0) shows the same tree."""
    layout, ref = esgz_image
    mnt = mount(ref, opts="prefetch=0")
    assert len(lazy_dirs(store)) == 2 and filled(store) == 0
    names = set(os.listdir(mnt))
    assert not names & {"stargz.index.json", ".prefetch.landmark"}
    assert_same_as_umoci(mnt, layout, "t", tmp_path / "u", ignore=HIDDEN)
    umoci_names = set(os.listdir(tmp_path / "u/rootfs"))
    assert {"stargz.index.json", ".prefetch.landmark"} <= umoci_names
    assert os.getxattr(mnt / "etc/noted", "user.note") == b"kept"
    full = mount(ref, opts="lazy=0", mnt=mkdir(tmp_path / "full"))
    assert_same_tree(mnt, full)


def test_wrong_chunk_is_eio(tmp_path, daemon, store):
    """Bytes that do not hash to the TOC's digests are never served: EIO
    and a log line naming image, layer, file and the first chunk that
    does not match its chunkDigest; other files read."""
    blob = esgz_blob(base_entries(), corrupt="usr/lib/big")
    ref = layout_with(tmp_path / "bad", [blob[:3]], media_type=GZ)
    p = daemon.start(ref, tmp_path / "m")
    with pytest.raises(OSError) as e:
        (tmp_path / "m/usr/lib/big").read_bytes()
    assert e.value.errno == 5
    assert (tmp_path / "m/etc/hosts").read_bytes() == b"127.0.0.1 here\n"
    log = daemon.log(p)
    assert re.search(r"image oci:\S+: layer sha256:\S+: file usr/lib/big: "
                     r"chunk at offset 0 \(65536 bytes\) does not match "
                     r"its chunkDigest", log), log


def test_toc_not_matching_annotation_refused(tmp_path, mount, store):
    """A TOC that does not hash to toc.digest is refused; -o lazy=0 unpacks
    the layer in full, checked by its digest and diff_id."""
    blob, diff_id, ann, _ = esgz_blob(base_entries())
    ann[TOC_ANN] = sha(b"another toc")
    ref = layout_with(tmp_path / "img", [(blob, diff_id, ann)], media_type=GZ)
    r = mount(ref, check=False)
    assert r.returncode != 0
    assert "does not match the manifest's toc.digest" in r.stderr
    mnt = mount(ref, opts="lazy=0", mnt=mkdir(tmp_path / "full"))
    assert (mnt / "usr/lib/big").read_bytes() == BIG
    assert lazy_dirs(store) == []


@pytest.mark.parametrize("opts", ["lazy=0", None])
def test_no_annotation_not_mounted_from_toc(opts, tmp_path, mount, store):
    """A footer alone is not trusted: without the annotation the TOC is
    not used; the layer is unpacked in full (lazy=0) or, by default, read
    whole by the verifying pass of an ordinary gzip layer (a .zran cache
    entry, no TOC entry), and shows what the lazy mount would (the tar's
    last entry is stargz.index.json: its files are hidden)."""
    layout = tmp_path / "img"
    ref = layout_with(layout, [esgz_blob(base_entries(), annotate=False)[:3]],
                      media_type=GZ)
    mnt = mount(ref, opts=opts)
    assert [d.name.split(".")[-1] for d in lazy_dirs(store)] == \
        ([] if opts else ["zran"])
    assert_same_as_umoci(mnt, layout, "t", tmp_path / "u", ignore=HIDDEN)
    assert not set(os.listdir(mnt)) & {"stargz.index.json",
                                       ".prefetch.landmark"}


def _named(name):
    def tamper(doc):
        doc["entries"][1]["name"] = name
    return tamper


def _backwards(doc):
    regs = [e for e in doc["entries"] if e.get("offset")]
    regs[0]["offset"], regs[1]["offset"] = regs[1]["offset"], regs[0]["offset"]


@pytest.mark.parametrize("tamper,why", [
    (_named("../escape"), "entry ../escape"),
    (_backwards, "content offset lies outside the layer's data or before"),
])
def test_hostile_toc_refused(tmp_path, mount, store, tamper, why):
    """A TOC that matches its annotation is still as hostile as a tar: a
    name out of the layer, content offsets that go backwards: refused,
    naming the layer and the entry."""
    blob = esgz_blob(base_entries(), tamper=tamper)
    ref = layout_with(tmp_path / "img", [blob[:3]], media_type=GZ)
    r = mount(ref, check=False)
    assert r.returncode != 0 and why in r.stderr, r.stderr
    assert lazy_dirs(store) == []


def test_lazy_from_registry(esgz_image, registry, mount, store, tmp_path,
                            monkeypatch):
    """Pushed by skopeo as they are to the loopback registry, the layers
    are read with Range requests (never downloaded) and the files match
    umoci's unpack."""
    for v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(v, raising=False)
    layout, ref = esgz_image
    reg = registry()
    run(["skopeo", "copy", "-q", "--dest-tls-verify=false", ref,
         f"docker://{reg}/l/e:t"])
    mnt = mount(f"docker://{reg}/l/e:t", opts="prefetch=0,tls_verify=false")
    assert len(lazy_dirs(store)) == 2
    assert_same_as_umoci(mnt, layout, "t", tmp_path / "u", ignore=HIDDEN)
    blobs = Path(store) / "images/blobs/sha256"
    layers = {l["digest"][7:] for l in json.loads(
        (layout / "blobs/sha256" / json.loads((layout / "index.json")
         .read_text())["manifests"][0]["digest"][7:]).read_text())["layers"]}
    assert not layers & ({p.name for p in blobs.iterdir()}
                         if blobs.exists() else set())


class Registry(http.server.ThreadingHTTPServer):
    """Serves an OCI layout as a registry, and keeps the Range requests
    in the order they came: .ranges (blob digest, first byte), .pieces
    (blob digest, first byte, end)."""

    def __init__(self, layout):
        self.layout, self.ranges, self.pieces = Path(layout), [], []
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_HEAD(self):
        self.do_GET(body=False)

    def do_GET(self, body=True):
        lay = self.server.layout
        m = re.fullmatch(r"/v2/[^/]+/(manifests|blobs)/([^/]+)", self.path)
        if self.path == "/v2/":
            data, ctype = b"{}", "application/json"
        elif m and m.group(1) == "manifests":
            idx = json.loads((lay / "index.json").read_text())["manifests"][0]
            digest = idx["digest"] if ":" not in m.group(2) else m.group(2)
            data, ctype = ((lay / "blobs/sha256" / digest[7:]).read_bytes(),
                           idx["mediaType"])
        elif m:
            data, ctype = ((lay / "blobs/sha256" / m.group(2)[7:])
                           .read_bytes(), "application/octet-stream")
        else:
            self.send_error(404)
            return
        status, rng = 200, self.headers.get("Range")
        total = len(data)
        if rng:
            a, b = re.fullmatch(r"bytes=(\d+)-(\d*)", rng).groups()
            a, b = int(a), int(b) if b else total - 1
            self.server.ranges.append((m.group(2), a))
            self.server.pieces.append((m.group(2), a, min(b + 1, total)))
            data, status = data[a:b + 1], 206
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        if m and m.group(1) == "manifests":
            self.send_header("Docker-Content-Digest", sha(data))
        if rng:
            self.send_header("Content-Range", f"bytes {a}-{b}/{total}")
        self.end_headers()
        if body:
            self.wfile.write(data)


def test_prefetch_follows_landmarks(tmp_path, daemon, store, monkeypatch):
    """The background fill fetches first what .prefetch.landmark marks as
    most likely needed (the files before it), in every layer, then the
    rest; a layer with .no.prefetch.landmark is not filled unless the
    mount says prefetch=all. Observed in the order of the Range requests
    a registry gets, no timing."""
    for v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(v, raising=False)
    quiet = esgz_blob([tar_file(".no.prefetch.landmark", b"\x0f"),
                       tar_file("q", b"q" * 5000)])
    middle = esgz_blob([tar_file("m%d" % i, os.urandom(40000))
                        for i in range(4)])
    first = [tar_file("hot%d" % i, b"h" * 3000) for i in range(3)]
    top = esgz_blob(first + [tar_file(".prefetch.landmark", b"\x0f"),
                             tar_file("cold", os.urandom(40000))])
    layout = tmp_path / "img"
    layout_with(layout, [quiet[:3], middle[:3], top[:3]], media_type=GZ)
    digests = [sha(x[0]) for x in (quiet, middle, top)]
    toc = {d: x[3] for d, x in zip(digests, (quiet, middle, top))}
    srv = Registry(layout)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        daemon.start(f"docker://127.0.0.1:{srv.server_port}/img:t",
                     tmp_path / "m", opts="tls_verify=false")
        done = [Path(store) / "layers/lazy" / (d.replace(":", "-") + "."
                                               + ann[TOC_ANN][7:]) / "diff_id"
                for d, ann in ((digests[1], middle[2]), (digests[2], top[2]))]
        for _ in range(3000):
            if all(p.exists() for p in done):
                break
            time.sleep(0.01)
        assert all(p.exists() for p in done)
    finally:
        srv.shutdown()
    # content requests: below each blob's TOC (the footer and TOC reads
    # before the mount went live are above it)
    content = [(digests.index(d), a) for d, a in srv.ranges if a < toc[d]]
    assert content, srv.ranges
    # layer 3's hot files (before its landmark), then layer 2, then the
    # rest of layer 3; never layer 1
    layers_seen = [k for k, _ in content]
    assert 0 not in layers_seen, "the .no.prefetch.landmark layer was filled"
    assert layers_seen[0] == 2 and 1 in layers_seen, content
    first_mid = layers_seen.index(1)
    assert 2 in layers_seen[first_mid:], "layer 3 was filled before layer 2"
    quiet_dir = next(d for d in lazy_dirs(store)
                     if d.name.startswith(digests[0][7:17], 7))
    assert not os.listdir(quiet_dir / "data")
    # unless asked: prefetch=all fills and checks it too
    daemon.start(f"oci:{layout}:t", tmp_path / "m2", opts="prefetch=all")
    for _ in range(3000):
        if (quiet_dir / "diff_id").exists():
            break
        time.sleep(0.01)
    assert (quiet_dir / "diff_id").read_text() == quiet[1]
