"""Trust and edge cases of lazy zstd:chunked mounts (issue 13).

1. Chunks: each chunk a TOC names is checked against its chunkDigest as
   it is decompressed (a wrong one named by its offset), and a chunk list
   that does not cover its file exactly, in order, refuses the TOC.
2. Metadata: once the fill has read the whole blob, what the TOC says of
   each entry is compared with the tar's own headers; a TOC that lies
   (its checksum annotation right, blob and diff_id honest) makes the
   layer bad, as a diff_id mismatch does.
3. Other users: a root daemon with allow_other serving uid 1000 (judged
   by the kernel's permission checks on GNU tar's extraction of the same
   tar), and `podman run --user 1000 --rootfs` on a lazy mount from a
   registry: reads fetch, a fetch that fails is EIO, not a hang.
4. commit, diff, export and import of a lazy image, against umoci.

Hostile layers come from test_lazy.py's writer (chunked_blob)."""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (as_uid, assert_same_as_umoci, assert_same_tree,
                      make_tar, run, tar_dir, tar_file, tar_symlink,
                      umoci_rootfs, unmount)
from test_commit_peers import podman, sweep_mounts  # noqa: F401
from test_lazy import (Daemon, chunked_blob, chunked_image,  # noqa: F401
                       daemon, filled, kill_registry, layout_with,
                       lazy_dirs)
from test_registry import skopeo  # noqa: F401

def xattr_file(name, data, xattrs):
    ti, data = tar_file(name, data)
    ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    return ti, data


BIG = bytes(range(256)) * 78 + b"x" * 32        # 20000: 5 chunks of 4 KiB
FILES = [tar_dir("d"), tar_file("d/a", b"a" * 1000), tar_file("d/big", BIG),
         tar_symlink("d/l", "a"), tar_file("top", b"top\n"),
         xattr_file("d/x", b"x\n", {"user.b": "2", "user.a": "1"})]


def entries(doc, name):
    """The TOC entries of @name: its own, then its "chunk" entries."""
    return [e for e in doc["entries"] if e["name"] == name]


def blob_hex(ref):
    """The one layer blob's hex digest of layout_with()'s @ref."""
    layout = Path(ref.split(":")[1])
    idx = json.loads((layout / "index.json").read_text())
    m = json.loads((layout / "blobs/sha256" / idx["manifests"][0][
        "digest"].split(":")[1]).read_text())
    return m["layers"][0]["digest"].split(":")[1]


def wait_for(cond):
    """Poll @cond (the background fill has no other signal)."""
    for _ in range(3000):
        if cond():
            return True
        time.sleep(0.01)
    return False


# ---- 1. chunks ----

def test_chunked_files_read_and_verify(tmp_path, daemon, store):
    """A layer whose files are split into 4 KiB chunks reads as its tar,
    and the fill verifies it (blob, diff_id, metadata) without a
    complaint."""
    blob, diff_id, ann = chunked_blob(FILES, chunk=4096)
    ref = layout_with(tmp_path / "img", [(blob, diff_id, ann)])
    p = daemon.start(ref, tmp_path / "mnt", opts="prefetch")
    assert (tmp_path / "mnt/d/big").read_bytes() == BIG
    assert wait_for(lambda: all((d / "diff_id").exists()
                                for d in lazy_dirs(store)))
    assert (lazy_dirs(store)[0] / "diff_id").read_text() == diff_id
    assert (tmp_path / "mnt/top").read_bytes() == b"top\n"
    assert os.getxattr(tmp_path / "mnt/d/x", "user.a") == b"1"
    assert "bad" not in daemon.log(p)


def test_wrong_chunk_is_eio_naming_it(tmp_path, daemon, store):
    """The chunk at 8192 of d/big has a wrong chunkDigest (the file's
    digest is right): d/big fails with EIO and a log line naming image,
    layer, file and chunk; other files read."""
    def wrong_chunk(doc):
        [c] = [e for e in entries(doc, "d/big")
               if e.get("chunkOffset") == 8192]
        c["chunkDigest"] = "sha256:" + "1" * 64
    ref = layout_with(tmp_path / "img", [chunked_blob(FILES, wrong_chunk,
                                                      chunk=4096)])
    p = daemon.start(ref, tmp_path / "mnt")
    with pytest.raises(OSError) as e:
        (tmp_path / "mnt/d/big").read_bytes()
    assert e.value.errno == 5
    assert (tmp_path / "mnt/d/a").read_bytes() == b"a" * 1000
    assert filled(store) == 1
    assert f"image {ref}: layer sha256:{blob_hex(ref)}: file d/big: chunk " \
        "at offset 8192 (4096 bytes) does not match its chunkDigest" \
        in daemon.log(p)


def _gap(doc):
    entries(doc, "d/big")[2]["chunkOffset"] = 8000


def _overlap(doc):
    entries(doc, "d/big")[2]["chunkOffset"] = 4096


def _short(doc):
    doc["entries"].remove(entries(doc, "d/big")[-1])


def _past_end(doc):
    entries(doc, "d/big")[-1]["chunkSize"] = 5000


def _disorder(doc):
    a, b = entries(doc, "d/big")[1:3]
    a["offset"], b["offset"] = b["offset"], a["offset"]


def _unchunked(doc):
    for k in ("chunkSize", "chunkDigest"):
        del entries(doc, "d/big")[0][k]


@pytest.mark.parametrize("tamper,why", [
    (_gap, "chunk at offset 8000 does not start where the file's previous "
     "chunk ends (8192)"),
    (_overlap, "chunk at offset 4096 does not start where the file's "
     "previous chunk ends (8192)"),
    (_short, "its chunks cover 16384 of its 20000 bytes"),
    (_past_end, "chunk at offset 16384 of 5000 bytes runs past the file's "
     "20000 bytes"),
    (_disorder, "chunk outside its file's range or out of order"),
    (_unchunked, "chunk of a file whose entry has no chunkSize and "
     "chunkDigest"),
], ids=["gap", "overlap", "short", "past-end", "disorder", "unchunked"])
def test_inconsistent_chunk_list_refused(tmp_path, mount, store, tamper,
                                         why):
    ref = layout_with(tmp_path / "img", [chunked_blob(FILES, tamper,
                                                      chunk=4096)])
    r = mount(ref, check=False)
    assert r.returncode != 0
    assert f"entry d/big: {why}" in r.stderr, r.stderr
    assert ref in r.stderr and blob_hex(ref)[:12] in r.stderr
    assert lazy_dirs(store) == []


# ---- 2. the TOC's metadata against the tar's ----

def _mode(doc):
    entries(doc, "d/a")[0]["mode"] = 0o600


def _uid(doc):
    entries(doc, "top")[0]["uid"] = 1000


def _target(doc):
    entries(doc, "d/l")[0]["linkName"] = "big"


def _xattr(doc):
    entries(doc, "d/x")[0]["xattrs"]["user.a"] = base64.b64encode(
        b"9").decode()


def _mtime(doc):
    entries(doc, "d")[0]["modtime"] = "2021-01-01T00:00:00Z"


@pytest.mark.parametrize("tamper,entry,why", [
    (_mode, "d/a", "mode 0600 in the table of contents, 0644 in the tar"),
    (_uid, "top", "uid 1000 in the table of contents, 0 in the tar"),
    (_target, "d/l", "link target differs"),
    (_xattr, "d/x", "extended attributes differ"),
    (_mtime, "d/", "mtime_sec 1609459200 in the table of contents, "
     "1600000000 in the tar"),
], ids=["mode", "uid", "symlink-target", "xattr", "mtime"])
def test_toc_lying_about_metadata_makes_layer_bad(tmp_path, daemon, mount,
                                                  store, tamper, entry, why):
    """The TOC (its checksum annotation matching it) says otherwise than
    the tar's header of one entry; blob and diff_id are honest. The mount
    goes live; once the fill has read the blob, the layer is bad: reads
    fail with EIO, the log names the entry, the next mount is refused."""
    blob, diff_id, ann = chunked_blob(FILES, tamper)
    ref = layout_with(tmp_path / "img", [(blob, diff_id, ann)])
    p = daemon.start(ref, tmp_path / "mnt", opts="prefetch")
    [d] = lazy_dirs(store)
    assert wait_for(lambda: "does not match the layer's tar" in daemon.log(p)
                    or (d / "diff_id").exists())
    assert not (d / "diff_id").exists()
    with pytest.raises(OSError) as e:
        (tmp_path / "mnt/top").read_bytes()
    assert e.value.errno == 5
    log = daemon.log(p)
    assert f"image {ref}: layer sha256:{blob_hex(ref)}: the table of " \
        f"contents does not match the layer's tar: entry {entry}: {why}" \
        in log, log
    assert "top: not served (EIO)" in log
    r = mount(ref, check=False)
    assert r.returncode != 0 and f"entry {entry}: {why}" in r.stderr
    # the blob itself is sound: unpacked in full, it mounts as its tar
    mnt = mount(ref, opts="lazy=0")
    assert (mnt / "d/a").stat().st_mode & 0o777 == 0o644


def test_toc_lie_caught_by_a_later_mounts_fill(tmp_path, daemon, store):
    """What the TOC says of each entry is not kept in the cache entry: the
    fill reads the TOC again. A first mount (no fill) builds the entry;
    a second mount's fill still finds the TOC's mode for d/a (0600)
    against the tar's header (0644, as Python's tarfile wrote it)."""
    blob, diff_id, ann = chunked_blob(FILES, _mode)
    ref = layout_with(tmp_path / "img", [(blob, diff_id, ann)])
    p = daemon.start(ref, tmp_path / "mnt")
    assert (tmp_path / "mnt/d/a").stat().st_mode & 0o777 == 0o600
    unmount(tmp_path / "mnt")
    p.wait(timeout=20)
    [d] = lazy_dirs(store)
    assert not (d / "diff_id").exists() and not (d / "bad").exists()
    p = daemon.start(ref, tmp_path / "mnt2", opts="prefetch")
    assert wait_for(lambda: (d / "bad").exists() or
                    (d / "diff_id").exists())
    assert not (d / "diff_id").exists()
    assert "entry d/a: mode 0600 in the table of contents, 0644 in the " \
        "tar" in daemon.log(p)
    with pytest.raises(OSError) as e:
        (tmp_path / "mnt2/top").read_bytes()
    assert e.value.errno == 5


def test_toc_changed_in_layout_before_fill_makes_layer_bad(tmp_path, daemon,
                                                          store):
    """The fill reads the TOC again and checks it against the manifest's
    checksum as the mount did: a TOC changed in the layout's blob after
    the cache entry was built (a byte of its compressed frame flipped in
    place) makes the layer bad, the log giving what it hashes to now
    (hashlib's sha256 of those bytes)."""
    blob, diff_id, ann = chunked_blob(FILES)
    ref = layout_with(tmp_path / "img", [(blob, diff_id, ann)])
    p = daemon.start(ref, tmp_path / "mnt")
    unmount(tmp_path / "mnt")
    p.wait(timeout=20)
    [pos] = [v for k, v in ann.items() if k.endswith("manifest-position")]
    off, length = (int(x) for x in pos.split(":")[:2])
    path = Path(ref.split(":")[1]) / "blobs/sha256" / blob_hex(ref)
    data = bytearray(path.read_bytes())
    data[off + length - 1] ^= 0xff      # the frame's checksum or last byte
    os.chmod(path, 0o644)
    path.write_bytes(data)
    got = hashlib.sha256(data[off:off + length]).hexdigest()
    p = daemon.start(ref, tmp_path / "mnt2", opts="prefetch")
    [d] = lazy_dirs(store)
    assert wait_for(lambda: "the layer is bad" in daemon.log(p))
    assert not (d / "diff_id").exists()
    log = daemon.log(p)
    assert f"image {ref}: layer sha256:{blob_hex(ref)[:12]}: zstd:chunked " \
        f"table of contents does not match the manifest's checksum" in log
    assert f"(it hashes to sha256:{got})" in log, log
    with pytest.raises(OSError) as e:
        (tmp_path / "mnt2/top").read_bytes()
    assert e.value.errno == 5


# ---- 3. other users ----

as_1000 = as_uid(1000)


USERS = [tar_file("pub", b"pub\n"), tar_file("priv", b"root's\n", mode=0o600),
         tar_file("mine", b"1000's\n", mode=0o600, uid=1000, gid=1000),
         tar_dir("closed", mode=0o700), tar_file("closed/x", b"x\n"),
         tar_file("group", b"g\n", mode=0o640, gid=1000)]


def test_allow_other_serves_uid_1000(open_dir, daemon, store):
    """A root daemon with allow_other: uid 1000 reads what it may and is
    refused what it may not, as the kernel decides for GNU tar's
    extraction of the same tar; refused files are not fetched."""
    blob, diff_id, ann = chunked_blob(USERS)
    ref = layout_with(open_dir / "img", [(blob, diff_id, ann)])
    want = open_dir / "want"
    want.mkdir()
    subprocess.run(["tar", "-x", "-p", "--numeric-owner", "-C", str(want)],
                   input=make_tar(USERS), check=True)
    daemon.start(ref, open_dir / "mnt", opts="prefetch=0,allow_other")

    def read_as_1000(root):
        out = {}
        for name in ("pub", "priv", "mine", "closed/x", "group"):
            r = subprocess.run(["cat", str(root / name)], capture_output=True,
                               preexec_fn=as_1000)
            out[name] = (r.returncode, r.stdout,
                         b"Permission denied" in r.stderr)
        return out
    got, expected = read_as_1000(open_dir / "mnt"), read_as_1000(want)
    assert got == expected
    assert expected["priv"][2] and expected["mine"][1] == b"1000's\n"
    assert filled(store) == 3        # pub, mine, group
    assert (open_dir / "mnt/priv").read_bytes() == b"root's\n"


RUN = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
       "--network", "none", "--user", "1000"]


def test_podman_user_on_lazy_registry_mount(open_dir, chunked_image, registry,
                                            skopeo, daemon, podman, store,
                                            monkeypatch):
    """`podman run --user 1000 --rootfs` on a lazy mount of a registry
    image, nothing fetched yet: the container's reads fetch and match
    umoci's unpack; once the registry is gone, a file not fetched fails
    with EIO inside the container (not a hang), and the log says so."""
    for v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(v, raising=False)
    layout, tag, ref = chunked_image
    reg = registry()
    skopeo("copy", "--dest-tls-verify=false", ref, f"docker://{reg}/l/z:t")
    mnt = open_dir / "mnt"
    p = daemon.start(f"docker://{reg}/l/z:t", mnt,
                     opts=f"prefetch=0,allow_other,tls_verify=false,"
                     f"upper={open_dir / 'up'}")
    assert filled(store) == 0
    want = umoci_rootfs(layout, tag, open_dir / "umoci")
    r = podman("run", "--rm", *RUN, "--rootfs", mnt, "/bin/busybox", "sh",
               "-c", "id -u; cat /etc/hello")
    assert r.stdout == "1000\n" + (want / "etc/hello").read_text()
    assert filled(store) == 2        # bin/busybox, etc/hello
    kill_registry(reg)
    r = podman("run", "--rm", *RUN, "--rootfs", mnt, "/bin/busybox", "cat",
               "/var/lib/y/z", check=False)
    assert r.returncode != 0 and "Input/output error" in r.stderr, r
    assert "file var/lib/y/z: cannot fetch its content" in daemon.log(p)


# ---- 4. commit, diff, export and import of a lazy image ----

def diff_ids(layout, tag):
    layout = Path(layout)
    idx = json.loads((layout / "index.json").read_text())
    [m] = [m for m in idx["manifests"]
           if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    man = json.loads((layout / "blobs/sha256" /
                      m["digest"].split(":")[1]).read_text())
    cfg = json.loads((layout / "blobs/sha256" /
                      man["config"]["digest"].split(":")[1]).read_text())
    return cfg["rootfs"]["diff_ids"]


def unpacked(store):
    d = Path(store) / "layers/sha256"
    return {"sha256:" + p.name for p in d.iterdir() if p.is_dir()} \
        if d.exists() else set()


def test_commit_diff_export_of_lazy_image(chunked_image, mount, strata, store,
                                          daemon, tmp_path):
    """A lazy mount's upper committed onto its image (gzip and
    zstd:chunked), the image diffed and exported: commit and diff read
    the lazy layers (nothing below unpacked in full), export unpacks and
    verifies them first; each result is compared with umoci's unpack."""
    layout, tag, ref = chunked_image
    src = Path(ref.split(":")[1])
    lazy_ids = set(diff_ids(src, tag))
    mnt = mount(ref, opts=f"prefetch=0,upper={tmp_path / 'up'}")
    (mnt / "newfile").write_text("new\n")
    os.unlink(mnt / "var/lib/y/z")
    out = tmp_path / "out"
    strata("commit", mnt, f"oci:{out}:c")
    strata("commit", "--compression", "zstd:chunked", mnt, f"oci:{out}:zc")
    assert not unpacked(store) & lazy_ids
    assert filled(store) == 0
    # umoci reads no zstd: skopeo copies the commit as gzip first
    gz = tmp_path / "gz"
    skopeo_policy = tmp_path / "policy.json"
    skopeo_policy.write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    run(["skopeo", "--policy", skopeo_policy, "copy",
         "--dest-compress-format", "gzip", f"oci:{out}:c", f"oci:{gz}:c"])
    assert_same_as_umoci(mnt, gz, "c", tmp_path / "u1")

    # var/lib/y changed too: the unlink set its mtime
    u3 = umoci_rootfs(layout, tag, tmp_path / "u3")
    assert (mnt / "var/lib/y").stat().st_mtime != \
        (u3 / "var/lib/y").stat().st_mtime
    r = strata("diff", ref, f"oci:{out}:c")
    # as podman lists them: the parents of a change are changed too
    assert r.stdout == "A /newfile\nC /var\nC /var/lib\nC /var/lib/y\n" \
        "D /var/lib/y/z\n"
    assert not unpacked(store) & lazy_ids

    # the zstd:chunked commit mounts lazily elsewhere and verifies whole
    p = daemon.start(f"oci:{out}:zc", tmp_path / "m2", opts="prefetch")
    assert wait_for(lambda: len(lazy_dirs(store)) == 3 and all(
        (d / "diff_id").exists() for d in lazy_dirs(store)))
    assert_same_as_umoci(tmp_path / "m2", gz, "c", tmp_path / "u2")
    assert "bad" not in daemon.log(p)

    strata("export", ref, tmp_path / "x.tar")
    assert lazy_ids <= unpacked(store)
    x = tmp_path / "x"
    x.mkdir()
    run(["tar", "-x", "--xattrs", "--xattrs-include=*", "--numeric-owner",
         "-p", "-f", tmp_path / "x.tar", "-C", x])
    assert_same_tree(x, u3)


def test_import_needs_no_source_later(chunked_image, strata, mount, store,
                                      tmp_path):
    """`strata import` of a zstd:chunked layout unpacks its layers in full
    (verified): with the layout gone, the image still mounts whole."""
    layout, tag, ref = chunked_image
    copy = tmp_path / "copy"
    shutil.copytree(Path(ref.split(":")[1]), copy)
    strata("import", f"oci:{copy}:{tag}", "imp:t")
    shutil.rmtree(copy)
    mnt = mount("imp:t", opts="prefetch=0")
    assert lazy_dirs(store) == []
    assert_same_as_umoci(mnt, layout, tag, tmp_path / "umoci")


# ---- 4. eStargz layers: the same checks ----

def _esgz_ref(tmp_path, entries, tamper=None):
    from test_lazy_estargz import GZ, esgz_blob
    blob = esgz_blob(entries, tamper=tamper)
    return layout_with(tmp_path / "img", [blob[:3]], media_type=GZ)


def _esgz_entries():
    """test_lazy_estargz's layer (landmark, hardlink, symlink, xattr,
    device, a file in four chunks) and a file whose PAX mtime has a
    fraction of a second."""
    from test_lazy_estargz import base_entries
    ti, data = tar_file("frac", b"f\n")
    ti.mtime = 1600000000.7
    return base_entries() + [(ti, data)]


def _as_go_writes(doc):
    """eStargz's Go writer keeps the header's time rounded to the second
    (Time.Round(time.Second)), where the test writer truncates, and gives
    no chunkSize to a file's last, partial chunk."""
    entries(doc, "frac")[0]["modtime"] = "2020-09-13T12:26:41Z"
    del entries(doc, "usr/lib/big")[-1]["chunkSize"]


def test_esgz_layer_verifies_whole(tmp_path, daemon, store):
    """An honest eStargz layer is checked whole after the fill, its TOC's
    metadata against the tar's headers, with no false mismatch: the tar's
    own stargz.index.json entry (the TOC has none for itself), the
    landmark, a rounded sub-second mtime; a last chunk without chunkSize
    runs to the file's end."""
    from test_lazy_estargz import BIG
    ref = _esgz_ref(tmp_path, _esgz_entries(), _as_go_writes)
    p = daemon.start(ref, tmp_path / "mnt", opts="prefetch")
    assert (tmp_path / "mnt/usr/lib/big").read_bytes() == BIG
    [d] = lazy_dirs(store)
    assert wait_for(lambda: (d / "diff_id").exists() or
                    "does not match" in daemon.log(p)), daemon.log(p)
    assert not (d / "bad").exists(), daemon.log(p)
    assert "does not match" not in daemon.log(p)
    # the mount shows the TOC's word, as stargz-snapshotter does
    assert (tmp_path / "mnt/frac").stat().st_mtime_ns == 1600000001 * 10**9


def test_esgz_wrong_chunk_digest_is_eio(tmp_path, daemon, store):
    """One chunkDigest is wrong while the file's digest is right: the
    read fails with EIO naming the chunk; other files read."""
    def wrong(doc):
        [c] = [e for e in entries(doc, "usr/lib/big")
               if e.get("chunkOffset") == 131072]
        c["chunkDigest"] = "sha256:" + "1" * 64
    ref = _esgz_ref(tmp_path, _esgz_entries(), wrong)
    p = daemon.start(ref, tmp_path / "mnt", opts="prefetch=0")
    with pytest.raises(OSError) as e:
        (tmp_path / "mnt/usr/lib/big").read_bytes()
    assert e.value.errno == 5
    assert (tmp_path / "mnt/etc/hosts").read_bytes() == b"127.0.0.1 here\n"
    assert "file usr/lib/big: chunk at offset 131072 (65536 bytes) does " \
        "not match its chunkDigest" in daemon.log(p), daemon.log(p)


def test_esgz_short_chunk_list_refused(tmp_path, mount, store):
    """A chunk list that stops short of its file is refused, naming it."""
    def short(doc):
        doc["entries"].remove(entries(doc, "usr/lib/big")[-1])
    r = mount(_esgz_ref(tmp_path, _esgz_entries(), short), check=False)
    assert r.returncode != 0
    assert "entry usr/lib/big: its chunks cover 196608 of its 200000 " \
        "bytes" in r.stderr, r.stderr
    assert lazy_dirs(store) == []


def test_esgz_toc_lying_about_metadata_makes_layer_bad(tmp_path, daemon,
                                                       store):
    """The TOC gives etc/hosts another mode than its tar header: once the
    fill has read the blob the layer is bad, the entry named."""
    def mode(doc):
        entries(doc, "etc/hosts")[0]["mode"] = 0o600
    ref = _esgz_ref(tmp_path, _esgz_entries(), mode)
    p = daemon.start(ref, tmp_path / "mnt", opts="prefetch")
    [d] = lazy_dirs(store)
    assert wait_for(lambda: (d / "bad").exists() or
                    (d / "diff_id").exists())
    assert not (d / "diff_id").exists()
    log = daemon.log(p)
    assert "the table of contents does not match the layer's tar: entry " \
        "etc/hosts: mode 0600 in the table of contents, 0644 in the tar" \
        in log, log
    with pytest.raises(OSError) as e:
        (tmp_path / "mnt/etc/noted").read_bytes()
    assert e.value.errno == 5
