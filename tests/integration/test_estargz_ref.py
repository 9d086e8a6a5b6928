"""strata against the reference implementation of eStargz (issue 13): the
estargz Go package of containerd's stargz-snapshotter, as Debian ships it
(golang-github-containerd-stargz-snapshotter-dev), run by
tests/esgzref/main.go.

- Layers the reference writer builds (estargz.Build; with prioritized
  files, so with .prefetch.landmark, and without, .no.prefetch.landmark)
  are mounted lazily and compared with `umoci unpack`; the background
  fill takes the prioritized files of every layer first (the order of the
  Range requests a registry gets).
- What `strata commit --compression estargz` writes passes the reference
  reader's VerifyTOC against the manifest's toc.digest annotation, every
  chunk of every file read through it checked against its digest, and
  its entries and bytes are umoci's unpack of the committed image (and
  the upper directory's files).
"""
import gzip
import io
import json
import os
import random
import stat
import tarfile
import threading
import time
from pathlib import Path

import pytest

from conftest import (REPO, STRATA, assert_same_as_umoci, make_tar, run,
                      tar_dir, tar_file, umoci_rootfs)
from ocibuild import Layer, build, dir_, reg
from test_commit_zstd_chunked import blob, top_layer
from test_lazy import daemon, filled, lazy_dirs, layout_with  # noqa
from test_lazy_estargz import (GZ, HIDDEN, TOC_ANN, USIZE_ANN, Registry,
                               base_entries, sha, top_entries)

STARGZ = Path("/usr/share/gocode/src/github.com/containerd/"
              "stargz-snapshotter/estargz")
CHUNK = 64 << 10		# the reference writer's chunks (-chunk)
ESGZ_CHUNK = 4 << 20		# zchunked.c: strata's
KINDS = {"reg": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
         "char": stat.S_IFCHR, "block": stat.S_IFBLK, "fifo": stat.S_IFIFO}


@pytest.fixture(scope="module")
def esgzref(tmp_path_factory):
    """The reference tool, built offline against Debian's Go sources (the
    cgo default keeps Debian's prebuilt standard library usable)."""
    if not STARGZ.is_dir():
        pytest.skip("the eStargz reference is missing: apt-get install "
                    "golang-github-containerd-stargz-snapshotter-dev "
                    f"(tests/packages.txt); no {STARGZ}")
    d = tmp_path_factory.mktemp("esgzref")
    env = dict(os.environ, GOCACHE=str(d / "gocache"),
               GOPATH="/usr/share/gocode", GO111MODULE="off", GOFLAGS="",
               GOPROXY="off")
    run(["go", "build", "-o", d / "esgzref", REPO / "tests/esgzref/main.go"],
        env=env, cwd=d)
    return d / "esgzref"


def ref_build(tool, tmp, name, entries, prioritize=()):
    """The reference writer's layer of the tar @entries: (blob, diff_id,
    annotations, TOC)."""
    (tmp / f"{name}.tar").write_bytes(make_tar(entries))
    args = ["-chunk", str(CHUNK)]
    if prioritize:
        args += ["-prioritize", ",".join(prioritize)]
    r = run([tool, "build", *args, tmp / f"{name}.tar", tmp / f"{name}.esgz"])
    out = json.loads(r.stdout)
    data = (tmp / f"{name}.esgz").read_bytes()
    tar = gzip.decompress(data)
    assert out["diff_id"] == sha(tar) and out["size"] == len(data)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        text = t.extractfile("stargz.index.json").read()
    assert sha(text) == out["toc_digest"]
    toc = json.loads(text)
    ann = {TOC_ANN: out["toc_digest"], USIZE_ANN: str(len(tar))}
    return data, out["diff_id"], ann, toc


def ref_verify(tool, path, toc_digest):
    """The reference reader's entries of the blob at @path: {name: entry}."""
    r = run([tool, "verify", path, toc_digest])
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[-1] == {"end": True, "ok": True}, lines[-1]
    return {x["name"]: x for x in lines[:-1]}


def hot_entries():
    """The top layer: its prioritized files, an opaque directory (whose
    marker the reference moves after the prioritized usr/lib/one: it
    still hides only the layers below), files of exactly one and two
    chunks, one of several, a long UTF-8 name in directories the tar does
    not list."""
    deep = "deep/" + "d" * 120 + "/\u00e9t\u00e9 \u2603"
    return [tar_dir("hot"), tar_file("hot/a", b"a" * 3000),
            tar_file("hot/b", os.urandom(CHUNK + 10)),
            tar_dir("usr"), tar_dir("usr/lib"),
            tar_file("usr/lib/.wh..wh..opq"),
            tar_file("usr/lib/one", os.urandom(CHUNK)),
            tar_file("usr/lib/two", os.urandom(2 * CHUNK)),
            tar_dir("cold"), tar_file("cold/c", os.urandom(3 * CHUNK + 7)),
            tar_file(deep, b"a long UTF-8 name\n", uid=70000, gid=70001)]


@pytest.fixture(scope="module")
def ref_image(esgzref, tmp_path_factory):
    """(layout, {layer digest: (TOC, its landmark's entry)}, layer
    digests) of three reference layers: the usual fixture tree (several
    chunks, a hardlink, an xattr, a device, a .prefetch.landmark the
    reference drops) without prioritized files, the layer of 600 files
    and a whiteout over it with etc/new prioritized, and hot_entries()
    with hot/a, hot/b and usr/lib/one prioritized."""
    tmp = tmp_path_factory.mktemp("esgzref-img")
    layers = [
        ref_build(esgzref, tmp, "base", base_entries()),
        ref_build(esgzref, tmp, "mid", top_entries() + [
            tar_dir("var"), tar_file("var/rest", os.urandom(2 * CHUNK))],
            prioritize=["etc/new"]),
        ref_build(esgzref, tmp, "top", hot_entries(),
                  prioritize=["hot/a", "hot/b", "usr/lib/one"])]
    layout = tmp / "img"
    layout_with(layout, [x[:3] for x in layers], media_type=GZ)
    tocs = {}
    for data, _, _, toc in layers:
        marks = [e for e in toc["entries"]
                 if e["name"] in (".prefetch.landmark",
                                  ".no.prefetch.landmark")]
        assert len(marks) == 1 and marks[0]["offset"], marks
        tocs[sha(data)] = (toc, marks[0])
    return layout, tocs, [sha(x[0]) for x in layers]


def test_reference_layers_mount_lazily_as_umoci_unpacks(ref_image, mount,
                                                        store, tmp_path):
    """Mounted from their TOCs, nothing fetched before a read, the
    reference writer's layers show umoci's tree (whiteouts and the opaque
    directory applied, every byte the same) but for the landmarks and
    stargz.index.json, which are hidden."""
    layout, tocs, digests = ref_image
    assert [tocs[d][1]["name"] for d in digests] == [
        ".no.prefetch.landmark", ".prefetch.landmark", ".prefetch.landmark"]
    mnt = mount(f"oci:{layout}:t", opts="prefetch=0")
    assert len(lazy_dirs(store)) == 3 and filled(store) == 0
    rootfs = tmp_path / "u"
    assert_same_as_umoci(mnt, layout, "t", rootfs, ignore=HIDDEN)
    marks = {"stargz.index.json", ".prefetch.landmark",
             ".no.prefetch.landmark"}
    assert marks <= set(os.listdir(rootfs / "rootfs"))
    assert not marks & set(os.listdir(mnt))
    assert sorted(os.listdir(mnt / "usr/lib")) == ["one", "two"]
    assert filled(store) > 0


def test_prefetch_takes_prioritized_files_first(ref_image, daemon, store,
                                                tmp_path, monkeypatch):
    """The background fill fetches every layer's prioritized files (those
    before .prefetch.landmark) first, by range; then each layer is read
    whole, once, to be checked, and the rest of its files are filled from
    that read (no range of them is asked for); the .no.prefetch.landmark
    layer is not filled. Observed in the order of the Range requests a
    registry serving the layout gets, no timing."""
    for v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(v, raising=False)
    layout, tocs, digests = ref_image
    srv = Registry(layout)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        daemon.start(f"docker://127.0.0.1:{srv.server_port}/img:t",
                     tmp_path / "m", opts="tls_verify=false")
        dirs = {d: next(p for p in lazy_dirs(store)
                        if p.name.startswith(d[7:17], 7)) for d in digests}
        for _ in range(3000):
            if all((dirs[d] / "diff_id").exists() for d in digests[1:]):
                break
            time.sleep(0.01)
        assert all((dirs[d] / "diff_id").exists() for d in digests[1:])
    finally:
        srv.shutdown()
    toc_off = {d: min(e["offset"] for e in tocs[d][0]["entries"]
                      if e.get("offset")) for d in digests}
    # content requests (the footer and TOC reads lie past the last
    # file's member), each named by its layer and whether it is before
    # the landmark; a filled layer is then read whole from its start (no
    # content offset is 0: a header is), once, in order
    seq, streams = [], {}
    for d, a, end in srv.pieces:
        toc, mark = tocs[d]
        ends = max(e["offset"] for e in toc["entries"] if e.get("offset"))
        if a == 0 or d in streams:
            streams.setdefault(d, []).append((a, end))
            continue
        if a > ends or a < toc_off[d]:
            continue
        x = (digests.index(d), "hot" if a < mark["offset"] else "rest")
        if not seq or seq[-1] != x:
            seq.append(x)
    assert seq == [(1, "hot"), (2, "hot")], srv.pieces
    for d in digests[1:]:
        size = (layout / "blobs/sha256" / d[7:]).stat().st_size
        s = streams[d]
        assert s[0][0] == 0 and s[-1][1] == size, s
        assert all(x[1] == y[0] for x, y in zip(s, s[1:])), s
    assert digests[0] not in streams
    for d in digests[1:]:
        n = sum(1 for e in tocs[d][0]["entries"]
                if e["type"] == "reg" and e.get("size"))
        assert len(os.listdir(dirs[d] / "data")) == n
    assert not os.listdir(dirs[digests[0]] / "data")


HUGE = random.Random(5).randbytes(2 * ESGZ_CHUNK + 12345)	# three chunks
EXACT = random.Random(6).randbytes(4096) * (2 * ESGZ_CHUNK // 4096)
CREATED = "4102444800"		# 2100-01-01: no file time is clamped


def make_upper(up):
    """An overlay upper directory over the base of `committed`: edits,
    a whiteout (etc/old), an opaque directory (usr/share/doc), every
    kind of file strata commits, owners, modes, an xattr."""
    (up / "etc").mkdir()
    (up / "etc/motd").write_text("new motd\n")
    os.setxattr(up / "etc/motd", "user.comment", b"a \x00binary\xff value")
    os.link(up / "etc/motd", up / "etc/motd.hard")
    os.mknod(up / "etc/old", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    (up / "etc/empty").write_bytes(b"")
    (up / "etc/secret").write_text("s" * 5000)
    os.chmod(up / "etc/secret", 0o600)
    os.chown(up / "etc/secret", 7, 8)
    (up / "bin").mkdir()
    os.symlink("../etc/motd", up / "bin/motd-link")
    (up / "bin/tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(up / "bin/tool", 0o4755)
    (up / "usr/lib").mkdir(parents=True)
    (up / "usr/lib/huge.bin").write_bytes(HUGE)
    (up / "usr/lib/exact.bin").write_bytes(EXACT)
    (up / "usr/share/doc").mkdir(parents=True)
    os.setxattr(up / "usr/share/doc", "trusted.overlay.opaque", b"y")
    (up / "usr/share/doc/NEW").write_text("new doc\n")
    (up / "run").mkdir()
    os.mkfifo(up / "run/fifo", 0o600)
    (up / "srv").mkdir(0o700)
    os.setxattr(up / "srv", "user.dir", b"on a directory")
    os.mknod(up / "srv/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(up / "srv/loop", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    (up / "srv" / ("n" * 150)).mkdir()
    (up / "srv" / ("n" * 150) / "\u00e9t\u00e9 \u2603").write_text("utf-8\n")


def upper_names(up):
    """The layer entries the upper directory @up stands for."""
    out = set()
    for dirpath, dirs, files in os.walk(up):
        rel = os.path.relpath(dirpath, up)
        pre = "" if rel == "." else rel + "/"
        try:
            if os.getxattr(dirpath, "trusted.overlay.opaque") == b"y":
                out.add(pre + ".wh..wh..opq")
        except OSError:
            pass
        for n in dirs + files:
            st = os.lstat(os.path.join(dirpath, n))
            out.add(pre + (".wh." + n if stat.S_ISCHR(st.st_mode) and
                           st.st_rdev == 0 else n))
    return out


@pytest.fixture(scope="module")
def committed(esgzref, tmp_path_factory):
    """`strata commit --upper --compression estargz` of make_upper() over
    a gzip base image, and the reference reader's entries of its layer."""
    tmp = tmp_path_factory.mktemp("esgzref-commit")
    img = build(tmp / "img", [Layer([
        dir_("etc"), reg("etc/old", "to be deleted\n"),
        reg("etc/motd", "old motd\n"), dir_("usr"), dir_("usr/share"),
        dir_("usr/share/doc"), reg("usr/share/doc/README", "old doc\n")])])
    up = tmp / "upper"
    up.mkdir()
    make_upper(up)
    run([STRATA, "commit", "--upper", up, "--from", img.ref, "--created",
         CREATED, "--compression", "estargz", f"oci:{img.path}:es"],
        env=dict(os.environ, STRATA_ROOT=str(tmp / "store")))
    desc, _ = top_layer(img.path, "es")
    entries = ref_verify(esgzref, blob(img.path, desc["digest"]),
                         desc["annotations"][TOC_ANN])
    return img.path, up, entries, tmp


def test_reference_verifies_strata_commit(committed):
    """The reference reader opens strata's estargz layer, its TOC verifies
    against the manifest's toc.digest, every chunk of every file read
    through it matches its chunk digest and every file its digest; the
    entries it lists are those of the upper directory."""
    _, up, entries, _ = committed
    assert set(entries) == upper_names(up)
    assert entries["usr/lib/huge.bin"]["chunks"] == 3
    assert entries["usr/lib/huge.bin"]["sha256"] == sha(HUGE)
    assert entries["usr/lib/exact.bin"]["chunks"] == 2
    assert entries["usr/lib/exact.bin"]["sha256"] == sha(EXACT)
    assert entries["etc/motd"]["nlink"] == entries["etc/motd.hard"]["nlink"] \
        == 2


def test_reference_reading_is_umocis_unpack(committed):
    """Entry by entry, what the reference reader says of the layer (type,
    mode, owner, size, link, device, xattrs, time, bytes) is what umoci
    unpacks of the committed image at that path; its whiteout is umoci's
    missing file, its opaque directory umoci's directory holding only
    what the layer gives it."""
    layout, _, entries, tmp = committed
    rootfs = umoci_rootfs(layout, "es", tmp / "unpacked")
    diffs = []
    for name, e in sorted(entries.items()):
        head, _, base = name.rpartition("/")
        if base == ".wh..wh..opq":
            assert sorted(os.listdir(rootfs / head)) == sorted(
                n[len(head) + 1:] for n in entries
                if n.startswith(head + "/") and n.count("/") ==
                head.count("/") + 1 and n != name), name
            continue
        if base.startswith(".wh."):
            assert not os.path.lexists(rootfs / head / base[4:]), name
            assert not os.path.lexists(rootfs / name), name
            continue
        p = rootfs / name
        st = os.lstat(p)
        xs = {x: os.getxattr(p, x, follow_symlinks=False).hex()
              for x in os.listxattr(p, follow_symlinks=False)}
        got = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
               st.st_gid, xs)
        want = (KINDS[e["type"]], e["mode"] & 0o7777, e["uid"], e["gid"],
                e["xattrs"])
        if stat.S_ISREG(st.st_mode):
            got += (st.st_size, sha(p.read_bytes()), st.st_nlink)
            want += (e["size"], e["sha256"], e["nlink"])
        elif stat.S_ISLNK(st.st_mode):
            got += (os.readlink(p),)
            want += (e["link"],)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            got += (os.major(st.st_rdev), os.minor(st.st_rdev))
            want += (e["devMajor"], e["devMinor"])
        if not stat.S_ISDIR(st.st_mode):
            got += (int(st.st_mtime),)
            want += (e["mtime"],)
        if got != want:
            diffs.append(f"{name}:\n  reference {want}\n  umoci     {got}")
    assert not diffs, "\n".join(diffs)
