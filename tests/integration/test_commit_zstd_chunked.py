"""strata commit --compression zstd:chunked (issue 13, item 5).

One writable mount of a busybox image gets edits of every kind (files,
a file of many content-defined chunks, a run of zeros longer than the
largest chunk, hardlinks, symlinks, xattrs, a fifo, a deletion, an
opaque directory, an owner and mode change) and is committed three times
at module scope: gzip, zstd:chunked, zstd:chunked again. The tests read
the result with independent tools: the zstd command line, Python's own
reading of the format (footer, skippable frames, TOC), skopeo's own
zstd:chunked conversion of the gzip commit, umoci unpack, and podman
4.3's partial pull from the loopback registry.

The mount is unmounted in the module fixture's finalizer, registries
are killed by conftest's procs fixture, podman's state lives in
tmp_path and is removed with its mounts."""
import base64
import hashlib
import io
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import (STRATA, STRATAFS, assert_same_as_umoci, is_mounted,
                      run, tree, umoci_rootfs, unmount)
from test_commit_peers import busybox_steps, podman_env, unmount_below

MiB = 1 << 20
CHUNK_MAX = MiB			# zchunked.c: the longest chunk
CREATED = "4102444800"		# 2100-01-01: no file time is clamped
POS = "io.containers.zstd-chunked.manifest-position"
SUM = "io.containers.zstd-chunked.manifest-checksum"
MT_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
SKIPPABLE = b"\x50\x2a\x4d\x18"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def base_steps(root):
    busybox_steps(root)
    (root / "etc/old").write_text("to be deleted\n")
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "usr/share/doc/README").write_text("old doc\n" * 100)
    (root / "usr/share/doc/COPYING").write_text("old licence\n")


def edit(mnt):
    """The edits, made through the writable mount."""
    rnd = random.Random(13)
    (mnt / "etc/motd").write_text("zstd:chunked motd\n")
    os.setxattr(mnt / "etc/motd", "user.comment", b"a \x00binary\xff value")
    os.link(mnt / "etc/motd", mnt / "etc/motd.hard")
    os.symlink("../etc/motd", mnt / "bin/motd-link")
    (mnt / "usr/lib").mkdir(parents=True)
    (mnt / "usr/lib/big.bin").write_bytes(rnd.randbytes(MiB + 123))
    (mnt / "var/zeros").write_bytes(b"\0" * (MiB + MiB // 2))
    (mnt / "etc/empty").write_bytes(b"")
    for i in range(20):
        (mnt / f"etc/small{i:02d}").write_text(f"small file {i}\n" * i)
    os.mkfifo(mnt / "run/fifo", 0o600)
    (mnt / "etc/old").unlink()
    shutil.rmtree(mnt / "usr/share/doc")
    (mnt / "usr/share/doc").mkdir()
    (mnt / "usr/share/doc/NEW").write_text("new doc\n")
    os.chmod(mnt / "etc/passwd", 0o600)
    os.chown(mnt / "etc/group", 12, 34)


def blob(layout, digest):
    return Path(layout) / "blobs" / "sha256" / digest.split(":", 1)[1]


def manifest_of(layout, tag):
    index = json.loads((Path(layout) / "index.json").read_text())
    d = next(m for m in index["manifests"] if m.get("annotations", {}).get(
        "org.opencontainers.image.ref.name") == tag)
    return d["digest"], json.loads(blob(layout, d["digest"]).read_text())


def top_layer(layout, tag):
    """(descriptor, diff_id) of the image's last layer."""
    _, m = manifest_of(layout, tag)
    cfg = json.loads(blob(layout, m["config"]["digest"]).read_text())
    return m["layers"][-1], cfg["rootfs"]["diff_ids"][-1]


def unzstd(data):
    """The zstd command line's decompression of @data."""
    return run_bytes(["zstd", "-dc"], data)


def run_bytes(cmd, data):
    r = subprocess.run(cmd, input=data, capture_output=True)
    assert r.returncode == 0, f"{cmd}: {r.stderr.decode()}"
    return r.stdout


def toc_of(data, desc=None):
    """The TOC of zstd:chunked blob @data, located from the footer (and
    checked against @desc's annotations when given): (toc, compressed
    TOC bytes, footer fields)."""
    assert data[-48:-44] == SKIPPABLE, "no skippable frame for the footer"
    assert struct.unpack("<I", data[-44:-40])[0] == 40
    off, clen, ulen, typ = struct.unpack("<QQQQ", data[-40:-8])
    assert data[-8:] == b"GnUlInUx" and typ == 1
    # the TOC is a skippable frame of its own, right before the footer
    assert data[off - 8:off - 4] == SKIPPABLE
    assert struct.unpack("<I", data[off - 4:off])[0] == clen
    assert off + clen == len(data) - 48
    ctoc = data[off:off + clen]
    text = unzstd(ctoc)
    assert len(text) == ulen
    if desc is not None:
        ann = desc["annotations"]
        assert ann[POS] == f"{off}:{clen}:{ulen}:1"
        assert ann[SUM] == "sha256:" + hashlib.sha256(ctoc).hexdigest()
    return json.loads(text), ctoc, (off, clen, ulen)


def committed_image(tmp, commits, extra_edit=None):
    """For a module fixture (yield from): the base image (umoci) in
    tmp/img, mounted writable with edit() (and @extra_edit) applied, then
    committed as each (tag, compression) of @commits; yields the layout,
    mount, tmp and env, and unmounts after."""
    layout, bundle = tmp / "img", tmp / "bundle"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:t"])
    run(["umoci", "unpack", "--image", f"{layout}:t", bundle])
    base_steps(bundle / "rootfs")
    run(["umoci", "repack", "--image", f"{layout}:t", bundle])
    run(["umoci", "config", "--image", f"{layout}:t",
         "--config.cmd", "/bin/sh"])
    shutil.rmtree(bundle)
    env = dict(os.environ, STRATA_ROOT=str(tmp / "store"))
    mnt, upper = tmp / "mnt", tmp / "upper"
    mnt.mkdir()
    upper.mkdir()
    try:
        run([STRATAFS, "-o", f"upper={upper}", f"oci:{layout}:t", mnt],
            env=env)
        assert is_mounted(mnt)
        edit(mnt)
        if extra_edit:
            extra_edit(mnt)
        for tag, comp in commits:
            run([STRATA, "commit", "--created", CREATED, "--compression",
                 comp, mnt, f"oci:{layout}:{tag}"], env=env)
        yield SimpleNamespace(layout=layout, mnt=mnt, tmp=tmp, env=env)
    finally:
        unmount(mnt)


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """The base image, the mount with its edits, and its three commits."""
    yield from committed_image(tmp_path_factory.mktemp("zck"), (
        ("gz", "gzip"), ("zc", "zstd:chunked"), ("zc2", "zstd:chunked")))


@pytest.fixture(scope="module")
def umoci_tree(committed):
    """umoci's unpack of the zstd:chunked commit: Debian's umoci reads no
    zstd, so skopeo (Go's zstd decoder) first copies it to another layout
    as gzip; the diff_id it keeps is the one of the tar it read."""
    copy = committed.tmp / "copy"
    policy = committed.tmp / "policy.json"
    policy.write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    run(["skopeo", "--policy", policy, "copy", "--dest-compress-format",
         "gzip", f"oci:{committed.layout}:zc", f"oci:{copy}:zc"])
    desc, diff_id = top_layer(copy, "zc")
    assert desc["mediaType"].endswith("+gzip")
    assert diff_id == top_layer(committed.layout, "zc")[1]
    assert hashlib.sha256(run_bytes(["gzip", "-dc"], blob(
        copy, desc["digest"]).read_bytes())).hexdigest() == diff_id[7:]
    return copy, umoci_rootfs(copy, "zc", committed.tmp / "unpacked")


def test_blob_is_the_layer_tar(committed):
    """zstd -d of the zstd:chunked blob is the gzip commit's tar, byte for
    byte, and its sha256 the config's diff_id; two commits are the same
    bytes."""
    zdesc, zdiff = top_layer(committed.layout, "zc")
    gdesc, gdiff = top_layer(committed.layout, "gz")
    assert zdesc["mediaType"] == MT_ZSTD
    assert set(zdesc["annotations"]) == {POS, SUM}
    assert "annotations" not in gdesc
    zdata = blob(committed.layout, zdesc["digest"]).read_bytes()
    assert zdesc["size"] == len(zdata)
    tar = unzstd(zdata)
    gtar = run_bytes(["gzip", "-dc"],
                     blob(committed.layout, gdesc["digest"]).read_bytes())
    assert tar == gtar
    assert zdiff == gdiff == "sha256:" + hashlib.sha256(tar).hexdigest()
    # the same upper, the same options: the same layer and manifest
    assert top_layer(committed.layout, "zc2") == (zdesc, zdiff)
    assert manifest_of(committed.layout, "zc2") == \
        manifest_of(committed.layout, "zc")


def test_toc_describes_every_entry(committed):
    """The TOC, found from the footer and from the annotations, lists
    every tar entry in order with its metadata; each file's frames
    decompress to exactly its bytes, each chunk to its slice, with the
    digests the TOC names."""
    desc, _ = top_layer(committed.layout, "zc")
    data = blob(committed.layout, desc["digest"]).read_bytes()
    toc, _, (toc_off, _, _) = toc_of(data, desc)
    assert toc["version"] == 1
    entries = toc["entries"]
    files = [e for e in entries if e["type"] != "chunk"]
    chunks = {}
    for e in entries:
        if e["type"] == "chunk":
            chunks.setdefault(e["name"], []).append(e)
    types = {tarfile.REGTYPE: "reg", tarfile.LNKTYPE: "hardlink",
             tarfile.SYMTYPE: "symlink", tarfile.DIRTYPE: "dir",
             tarfile.FIFOTYPE: "fifo", tarfile.CHRTYPE: "char"}
    with tarfile.open(fileobj=io.BytesIO(unzstd(data))) as t:
        members = t.getmembers()
        assert [m.name for m in members] == \
            [e["name"].rstrip("/") if e["name"] != "./" else "."
             for e in files]
        multi = 0
        for m, e in zip(members, files):
            assert e["type"] == types[m.type], e
            assert e.get("mode", 0) == m.mode, e
            assert e.get("uid", 0) == m.uid and e.get("gid", 0) == m.gid, e
            if m.islnk() or m.issym():
                assert e["linkName"] == m.linkname, e
            xattrs = {k[len("SCHILY.xattr."):]:
                      base64.b64encode(v.encode("utf-8", "surrogateescape"))
                      .decode()
                      for k, v in m.pax_headers.items()
                      if k.startswith("SCHILY.xattr.")}
            assert e.get("xattrs", {}) == xattrs, e
            if not m.isreg() or m.size == 0:
                assert "digest" not in e and "offset" not in e, e
                continue
            content = t.extractfile(m).read()
            assert e["size"] == len(content)
            assert e["digest"] == \
                "sha256:" + hashlib.sha256(content).hexdigest()
            # the file's frames, alone, decompress to the file
            assert data[e["offset"]:e["offset"] + 4] == ZSTD_MAGIC
            assert unzstd(data[e["offset"]:e["endOffset"]]) == content
            parts = [e] + chunks.get(e["name"], [])
            if len(parts) == 1:
                assert "chunkSize" not in e
                continue
            multi += 1
            ends = [p["offset"] for p in parts[1:]] + [e["endOffset"]]
            pos = 0
            for p, end in zip(parts, ends):
                assert p.get("chunkOffset", 0) == pos
                piece = content[pos:pos + p["chunkSize"]]
                assert len(piece) == p["chunkSize"] <= CHUNK_MAX
                assert unzstd(data[p["offset"]:end]) == piece
                assert p["chunkDigest"] == \
                    "sha256:" + hashlib.sha256(piece).hexdigest()
                pos += p["chunkSize"]
            assert pos == len(content)
        assert multi == 2		# big.bin and zeros
    names = {e["name"] for e in files}
    assert {"etc/.wh.old", "usr/share/doc/.wh..wh..opq", "etc/motd.hard",
            "run/fifo", "var/zeros"} <= names
    assert len(chunks["usr/lib/big.bin"]) > 10
    assert max(e["endOffset"] for e in files if "endOffset" in e) < toc_off


def test_toc_matches_skopeos_conversion(committed):
    """skopeo 1.9 converting the gzip commit to zstd:chunked writes the
    same TOC entries (offsets aside) and cuts files at the same chunk
    boundaries, but for the run of zeros, which the rolling checksum never
    cuts and strata cuts at CHUNK_MAX."""
    out = committed.tmp / "skopeo-zc"
    policy = committed.tmp / "policy-sk.json"
    policy.write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    run(["skopeo", "--policy", policy, "copy",
         "--dest-compress-format", "zstd:chunked",
         f"oci:{committed.layout}:gz", f"oci:{out}:zc"])
    sdesc, sdiff = top_layer(out, "zc")
    desc, diff = top_layer(committed.layout, "zc")
    assert sdiff == diff
    stoc = toc_of(blob(out, sdesc["digest"]).read_bytes(), sdesc)[0]
    toc = toc_of(blob(committed.layout, desc["digest"]).read_bytes())[0]

    def norm(entries, drop=()):
        return [{k: v for k, v in e.items() if k not in
                 ("offset", "endOffset", "accesstime", "changetime") + drop}
                for e in entries]

    def split(entries):
        return ([e for e in entries if e["name"] != "var/zeros"],
                [e for e in entries if e["name"] == "var/zeros"])
    ours, zeros = split(toc["entries"])
    theirs, szeros = split(stoc["entries"])
    assert norm(ours) == norm(theirs)
    assert len(szeros) == 1
    assert norm(zeros[:1], ("chunkSize", "chunkDigest")) == norm(szeros)
    assert [e.get("chunkOffset", 0) for e in zeros] == [0, MiB]


def test_strata_and_umoci_read_it(committed, umoci_tree, mount, store):
    """skopeo reads the zstd:chunked layer, umoci unpacks what it read to
    the very tree the writable mount shows, and strata mounts the
    zstd:chunked image the same (reading the frames, skipping the TOC)."""
    copy, rootfs = umoci_tree
    assert (rootfs / "etc/motd").read_text() == "zstd:chunked motd\n"
    assert not (rootfs / "etc/old").exists()
    assert_same_as_umoci(committed.mnt, copy, "zc",
                         committed.tmp / "unpacked2")
    got = mount(f"oci:{committed.layout}:zc")
    assert_same_as_umoci(got, copy, "zc", committed.tmp / "unpacked3")


@pytest.fixture
def podman_partial(tmp_path):
    """podman(*args, check=True) on the overlay driver with partial pulls
    enabled (containers-storage 1.43: [storage.options] pull_options),
    all state in tmp_path and a short runroot; images it mounted are
    unmounted, containers removed, mounts below both swept."""
    runroot = Path(tempfile.mkdtemp(prefix="spz-", dir="/tmp"))
    base, env, policy = podman_env(tmp_path, runroot)
    (tmp_path / "containers/storage.conf").write_text(
        '[storage]\ndriver = "overlay"\n'
        f'graphroot = "{tmp_path}/podroot"\nrunroot = "{runroot}"\n'
        '[storage.options]\npull_options = {enable_partial_images = '
        '"true", use_hard_links = "false", ostree_repos = ""}\n')
    base = [str(a) for a in base]
    base[base.index("--storage-driver") + 1] = "overlay"

    def call(*args, check=True, timeout=180):
        return run(base + list(args), check=check, env=env, timeout=timeout)
    call.policy = policy
    yield call
    for a in (["rm", "-a", "-f"], ["image", "unmount", "-a", "-f"]):
        subprocess.run(base + a, env=env, capture_output=True, timeout=60)
    unmount_below(runroot)
    unmount_below(tmp_path)
    shutil.rmtree(runroot, ignore_errors=True)


def test_podman_partial_pull(committed, umoci_tree, registry, procs,
                             podman_partial, tmp_path):
    """strata commits the mount to a registry and podman 4.3 pulls it
    through its partial pull path (the zstd:chunked layer by its TOC, the gzip base layer
    whole), and the image it stores is the tree umoci unpacks, but for
    owners, times and fifos: podman 4.3's partial pull sets no owner or
    time and makes no fifo from a TOC (from skopeo 1.9's zstd:chunked
    layers neither: their TOCs name the same owners, times and fifos)."""
    reg = registry()
    copy, rootfs = umoci_tree
    # strata commits the mount straight to the registry: the same layer
    r = run([STRATA, "commit", "--tls-verify=false", "--created", CREATED,
             "--compression", "zstd:chunked", committed.mnt,
             f"docker://{reg}/zc/img:1"], env=committed.env)
    assert r.stdout.strip() == manifest_of(committed.layout, "zc")[0]
    desc, _ = top_layer(committed.layout, "zc")
    base_desc = manifest_of(committed.layout, "zc")[1]["layers"][0]
    r = podman_partial("--log-level", "debug", "pull", "--tls-verify=false",
                       f"{reg}/zc/img:1")
    assert f"Retrieved partial blob {desc['digest']}" in r.stderr, r.stderr
    assert f"Retrieved partial blob {base_desc['digest']}" not in r.stderr
    r = podman_partial("run", "--rm", "--ulimit", "nofile=1024:1024",
                       "--ulimit", "nproc=1024:1024", "--network", "none",
                       f"{reg}/zc/img:1", "/bin/sh", "-c",
                       "cat /etc/motd /etc/motd.hard; "
                       "test -e /etc/old || echo deleted; ls /usr/share/doc")
    assert r.stdout == "zstd:chunked motd\n" * 2 + "deleted\nNEW\n", r
    assert_podman_tree(podman_partial, f"{reg}/zc/img:1", rootfs)


def assert_podman_tree(podman_partial, ref, rootfs, ignore=()):
    """The tree of podman's image @ref is @rootfs (umoci's unpack) but for
    owners, times, fifos and the paths @ignore."""
    mnt = Path(podman_partial("image", "mount", ref).stdout.strip())
    assert mnt.is_dir()

    def kept(root):
        """type, mode, size, content or target, xattrs: not owners and
        times, which podman 4.3's partial pull does not keep."""
        t, links = tree(root)
        return {k: v[:2] + v[4:5] + v[6:] for k, v in t.items()
                if k not in ignore}, links
    got, want = kept(mnt), kept(rootfs)
    # podman 4.3's partial pull makes no fifos (nor from skopeo's layers)
    for k in [k for k, v in want[0].items() if stat.S_ISFIFO(v[0])]:
        del want[0][k]
    assert sorted(set(got[0]) ^ set(want[0])) == []
    diffs = [(k, got[0][k], want[0][k]) for k in sorted(got[0])
             if got[0][k] != want[0][k]]
    assert not diffs, "\n".join(f"{k}:\n  {a}\n  {b}" for k, a, b in diffs)
    assert got[1] == want[1]


def test_docker_media_types_refused(committed):
    """zstd:chunked names its TOC in layer annotations, which Docker
    manifests lack: --format docker and docker-archive: are refused, with
    nothing written."""
    before = sorted(p.name for p in (committed.layout / "blobs/sha256")
                    .iterdir())
    index = (committed.layout / "index.json").read_bytes()
    for dest, extra in ((f"oci:{committed.layout}:bad", ["--format",
                                                         "docker"]),
                        (f"docker-archive:{committed.tmp}/d.tar:x:y", [])):
        r = run([STRATA, "commit", "--compression", "zstd:chunked", *extra,
                 committed.mnt, dest], check=False, env=committed.env)
        assert r.returncode != 0
        assert r.stderr.startswith("strata: ") and "zstd:chunked" in \
            r.stderr and "OCI media types" in r.stderr, r.stderr
    assert not (committed.tmp / "d.tar").exists()
    assert (committed.layout / "index.json").read_bytes() == index
    assert sorted(p.name for p in (committed.layout / "blobs/sha256")
                  .iterdir()) == before


def test_commit_on_a_zstd_chunked_base(committed):
    """A commit on top of the zstd:chunked image keeps the annotations of
    the layers below, so they stay partially pullable."""
    upper = committed.tmp / "upper2"
    upper.mkdir()
    (upper / "second").write_text("second commit\n")
    run([STRATA, "commit", "--created", CREATED, "--compression",
         "zstd:chunked", "--upper", upper, "--from",
         f"oci:{committed.layout}:zc", f"oci:{committed.layout}:zc-on-zc"],
        env=committed.env)
    _, base = manifest_of(committed.layout, "zc")
    _, m = manifest_of(committed.layout, "zc-on-zc")
    assert m["layers"][:-1] == base["layers"]
    assert "annotations" in m["layers"][-2]
    top = m["layers"][-1]
    toc = toc_of(blob(committed.layout, top["digest"]).read_bytes(), top)[0]
    assert [e["name"] for e in toc["entries"]] == ["./", "second"]


def test_name_not_utf8_refused(committed):
    """A name that is not UTF-8 cannot be in the TOC (Go's JSON decoder
    would read another name): the commit is refused naming the entry,
    nothing is written; gzip commits it."""
    upper = committed.tmp / "upper-latin1"
    upper.mkdir()
    (upper / "ok").write_text("ok\n")
    open(os.fsencode(upper) + b"/caf\xe9", "w").close()
    index = (committed.layout / "index.json").read_bytes()
    base = ["commit", "--upper", upper, "--from", f"oci:{committed.layout}:t"]
    r = subprocess.run([str(a) for a in [STRATA, *base, "--compression",
                        "zstd:chunked", f"oci:{committed.layout}:latin1"]],
                       capture_output=True, env=committed.env)
    assert r.returncode != 0
    err = r.stderr
    assert err.startswith(b"strata: ") and b"caf" in err and \
        b"not UTF-8" in err, err
    assert (committed.layout / "index.json").read_bytes() == index
    run([STRATA, *base, f"oci:{committed.layout}:latin1"], env=committed.env)
