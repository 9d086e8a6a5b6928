"""Lazy zstd:chunked layers (issue 13): mounted from their table of
contents, files fetched on first read and checked against the TOC.

Images are converted by skopeo (`--dest-compress-format zstd:chunked`,
Debian's 1.9) from images umoci built, and the mount is compared entry by
entry with `umoci unpack` of the original. Hostile layers are written here
by a small zstd:chunked writer (the `zstd` command line compresses each
frame; Python's tarfile writes the tar; the layout follows the format
containers/storage documents), so each test controls what a hostile
image author controls: the TOC, its checksum annotation, the diff_id.
"""
import base64
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (STRATA, STRATAFS, assert_same_as_umoci, is_mounted,
                      make_tar, run, tar_dir, tar_file, tar_symlink,
                      serving_pid, umoci_rootfs, unmount, wait_port,
                      write_blob, _json_bytes)

SKIP_MAGIC = b"\x50\x2a\x4d\x18"
CHUNKED_MAGIC = b"GnUlInUx"
PREFIX = "io.github.containers.zstd-chunked."


def zstd(data):
    return run_bytes(["zstd", "-q", "-c", "-3"], data)


def zstd_each(parts):
    """Each of @parts compressed as a zstd frame of its own (b"" for an
    empty part), by one run of the `zstd` command."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        names = []
        for i, part in enumerate(parts):
            if part:
                Path(d, str(i)).write_bytes(part)
                names.append(str(i))
        if names:
            subprocess.run(["zstd", "-q", "-3", *names], cwd=d, check=True)
        return [Path(d, f"{i}.zst").read_bytes() if part else b""
                for i, part in enumerate(parts)]


def unzstd(data):
    return run_bytes(["zstd", "-q", "-d", "-c"], data)


def run_bytes(cmd, data):
    r = subprocess.run(cmd, input=data, capture_output=True, check=True)
    return r.stdout


def skippable(data):
    return SKIP_MAGIC + struct.pack("<I", len(data)) + data


def chunked_blob(entries, tamper=None, prefix=PREFIX, chunk=None):
    """A zstd:chunked layer of the tar @entries (conftest make_tar form):
    every file's data in a frame of its own, or with @chunk, cut into
    chunks of @chunk bytes, a frame and a TOC entry each (as
    containers/storage writes a large file: the "reg" entry names the
    first chunk, "chunk" entries the others). @tamper(toc) may change the
    TOC before it is written. Returns (blob, diff_id, annotations)."""
    import io
    import tarfile
    raw = make_tar(entries)
    members = tarfile.open(fileobj=io.BytesIO(raw)).getmembers()
    cuts, toc = [0], []
    for m in members:
        if m.isreg() and m.size:
            cuts += list(range(m.offset_data, m.offset_data + m.size,
                               chunk or m.size)) + [m.offset_data + m.size]
    cuts.append(len(raw))
    frames = zstd_each([raw[a:b] for a, b in zip(cuts, cuts[1:])])
    blob, starts = b"", {}
    for a, frame in zip(cuts, frames):
        starts[a] = len(blob)
        blob += frame
        starts[(a, "end")] = len(blob)
    kinds = {tarfile.REGTYPE: "reg", tarfile.DIRTYPE: "dir",
             tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink"}
    for m in members:
        e = {"type": kinds[m.type], "name": m.name, "mode": m.mode,
             "uid": m.uid, "gid": m.gid,
             "modtime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                      time.gmtime(m.mtime))}
        if m.issym() or m.islnk():
            e["linkName"] = m.linkname
        xattrs = {k[13:]: base64.b64encode(v.encode()).decode()
                  for k, v in m.pax_headers.items()
                  if k.startswith("SCHILY.xattr.")}
        if xattrs:
            e["xattrs"] = xattrs
        if m.isreg() and m.size:
            data = raw[m.offset_data:m.offset_data + m.size]
            last = max(c for c in cuts if c < m.offset_data + m.size)
            e.update(size=m.size,
                     digest="sha256:" + hashlib.sha256(data).hexdigest(),
                     offset=starts[m.offset_data],
                     endOffset=starts[(last, "end")])
        toc.append(e)
        if chunk and m.isreg() and m.size:
            for i, c in enumerate(range(0, m.size, chunk)):
                part = data[c:c + chunk]
                ce = {"type": "chunk", "name": m.name, "chunkOffset": c,
                      "offset": starts[m.offset_data + c],
                      "chunkSize": len(part), "chunkDigest": "sha256:" +
                      hashlib.sha256(part).hexdigest()}
                if i == 0:
                    e.update({k: ce[k] for k in ("chunkSize",
                                                 "chunkDigest")})
                else:
                    toc.append(ce)
    doc = {"version": 1, "entries": toc}
    if tamper:
        tamper(doc)
    plain = json.dumps(doc).encode()
    ctoc = zstd(plain)
    pos = len(blob) + 8
    blob += skippable(ctoc)
    blob += skippable(struct.pack("<QQQQ", pos, len(ctoc), len(plain), 1)
                      + CHUNKED_MAGIC)
    ann = {prefix + "manifest-checksum":
           "sha256:" + hashlib.sha256(ctoc).hexdigest(),
           prefix + "manifest-position": f"{pos}:{len(ctoc)}:{len(plain)}:1"}
    return blob, "sha256:" + hashlib.sha256(raw).hexdigest(), ann


def layout_with(path, layers,
                media_type="application/vnd.oci.image.layer.v1.tar+zstd"):
    """An OCI layout @path:t of @layers: (blob, diff_id, annotations)."""
    path = Path(path)
    path.mkdir(parents=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    descs = []
    for blob, _, ann in layers:
        d, n = write_blob(path, blob)
        descs.append({"mediaType": media_type,
                      "digest": d, "size": n, "annotations": ann})
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers",
                         "diff_ids": [l[1] for l in layers]}}
    cd, cn = write_blob(path, _json_bytes(config))
    manifest = {"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType":
                           "application/vnd.oci.image.config.v1+json",
                           "digest": cd, "size": cn},
                "layers": descs}
    md, mn = write_blob(path, _json_bytes(manifest))
    (path / "index.json").write_text(json.dumps(
        {"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": md, "size": mn,
             "annotations": {"org.opencontainers.image.ref.name": "t"}}]}))
    return f"oci:{path}:t"


def lazy_dirs(store):
    d = Path(store) / "layers" / "lazy"
    return sorted(p for p in d.iterdir() if p.is_dir() and
                  p.name != "content") if d.exists() else []


def shared_files(store):
    d = Path(store) / "layers" / "lazy" / "content"
    return sorted(d.iterdir()) if d.exists() else []


def filled(store):
    """Content files present in the lazy layers of @store."""
    return sum(len(os.listdir(p / "data")) for p in lazy_dirs(store))


class Daemon:
    """stratafs in the foreground, its log (stderr) kept, so the log line
    a bad read writes can be checked."""

    def __init__(self, tmp_path):
        self.tmp_path, self.procs = tmp_path, []

    def start(self, ref, mnt, opts="prefetch=0"):
        log = open(self.tmp_path / f"log{len(self.procs)}", "w+")
        mnt.mkdir(exist_ok=True)
        p = subprocess.Popen([str(STRATAFS), "-f", "-o", opts, ref,
                              str(mnt)], stderr=log, stdout=log)
        self.procs.append((p, mnt, log))
        for _ in range(600):
            if is_mounted(mnt):
                return p
            if p.poll() is not None:
                break
            time.sleep(0.01)
        log.seek(0)
        raise AssertionError(f"stratafs did not mount: {log.read()}")

    def log(self, p):
        for q, _, log in self.procs:
            if q is p:
                log.flush()
                log.seek(0)
                return log.read()
        return ""

    def stop(self):
        bad = []
        for p, mnt, log in self.procs:
            unmount(mnt)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
            text = self.log(p)
            if "Sanitizer" in text or p.returncode not in (0, -9):
                bad.append(f"stratafs exited {p.returncode}: {text}")
            log.close()
        assert not bad, "\n".join(bad)


@pytest.fixture
def daemon(tmp_path, store):
    d = Daemon(tmp_path)
    yield d
    d.stop()


def busybox_steps(root):
    (root / "bin").mkdir()
    shutil.copy("/usr/bin/busybox", root / "bin/busybox")
    os.symlink("busybox", root / "bin/sh")
    (root / "etc").mkdir()
    (root / "etc/hello").write_text("hello\n")
    os.link(root / "etc/hello", root / "etc/hello.link")
    (root / "etc/secret").write_text("s" * 5000)
    os.chmod(root / "etc/secret", 0o600)
    os.chown(root / "etc/secret", 1000, 1001)
    (root / "empty").write_bytes(b"")
    (root / "var/lib/x").mkdir(parents=True)
    (root / "var/lib/x/data").write_bytes(os.urandom(300000))


def second_steps(root):
    (root / "etc/hello").write_text("changed\n")
    os.unlink(root / "etc/secret")
    shutil.rmtree(root / "var/lib/x")
    (root / "var/lib/y").mkdir()
    (root / "var/lib/y/z").write_bytes(b"z" * 70000)


@pytest.fixture(scope="module")
def chunked_image(tmp_path_factory):
    """(original layout, tag, zstd:chunked oci: reference) of a two-layer
    image umoci built (as conftest's umoci_image does), converted by
    skopeo; shared by the module's tests, which only read it."""
    tmp = tmp_path_factory.mktemp("chunked")
    layout, tag, bundle = tmp / "img", "t", tmp / "bundle"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:{tag}"])
    for step in (busybox_steps, second_steps):
        if bundle.exists():
            shutil.rmtree(bundle)
        run(["umoci", "unpack", "--image", f"{layout}:{tag}", bundle])
        step(bundle / "rootfs")
        run(["umoci", "repack", "--image", f"{layout}:{tag}", bundle])
    dst = tmp / "chunked"
    run(["skopeo", "copy", "-q", "--dest-compress-format", "zstd:chunked",
         f"oci:{layout}:{tag}", f"oci:{dst}:{tag}"])
    return layout, tag, f"oci:{dst}:{tag}"


def test_lazy_mount_matches_umoci(chunked_image, mount, store, tmp_path):
    layout, tag, ref = chunked_image
    mnt = mount(ref, opts="prefetch=0")
    # live from the tables of contents alone: two lazy layers, nothing
    # of any file fetched
    assert len(lazy_dirs(store)) == 2
    assert not (Path(store) / "layers" / "sha256").exists() or \
        not any((Path(store) / "layers" / "sha256").iterdir())
    assert filled(store) == 0
    assert (mnt / "etc/hello").read_text() == "changed\n"
    assert filled(store) == 1
    assert_same_as_umoci(mnt, layout, tag, tmp_path / "umoci")
    # every visible file read: bin/busybox of the first layer, etc/hello
    # (and its hardlink) and var/lib/y/z of the second; the first
    # layer's hidden files (old hello, secret, x/data) never fetched
    assert filled(store) == 3


def test_lazy_fill_and_verify(chunked_image, mount, store, tmp_path):
    """The background fill fetches everything, then checks each layer's
    blob against its diff_id: what the uncompressed stream (`zstd -d`)
    hashes to, which the config claims."""
    layout, tag, ref = chunked_image
    mount(ref)
    dirs = lazy_dirs(store)
    for _ in range(3000):
        if all((d / "diff_id").exists() for d in dirs):
            break
        time.sleep(0.01)
    dst = Path(ref.split(":")[1])
    want = set()
    for blob in (dst / "blobs/sha256").iterdir():
        data = blob.read_bytes()
        if data[:4] == b"\x28\xb5\x2f\xfd":
            want.add("sha256:" + hashlib.sha256(unzstd(data)).hexdigest())
    assert {(d / "diff_id").read_text() for d in dirs} == want
    assert filled(store) == 4 + 2


def test_writable_copy_up_of_lazy_file(chunked_image, mount, tmp_path, store):
    _, _, ref = chunked_image
    mnt = mount(ref, opts=f"prefetch=0,upper={tmp_path / 'up'}")
    with open(mnt / "bin/busybox", "ab") as f:
        f.write(b"tail")
    got = (mnt / "bin/busybox").read_bytes()
    assert got == Path("/usr/bin/busybox").read_bytes() + b"tail"
    assert (tmp_path / "up/bin/busybox").read_bytes() == got


def test_lazy_zero_unpacks_in_full(chunked_image, mount, store, tmp_path):
    layout, tag, ref = chunked_image
    mnt = mount(ref, opts="lazy=0")
    assert lazy_dirs(store) == []
    assert_same_as_umoci(mnt, layout, tag, tmp_path / "umoci")


def test_gc_keeps_lazy_layer_while_mounted(chunked_image, daemon, strata,
                                           store, tmp_path):
    _, _, ref = chunked_image
    p = daemon.start(ref, tmp_path / "mnt")
    assert (tmp_path / "mnt/etc/hello").read_text() == "changed\n"
    strata("gc")
    assert len(lazy_dirs(store)) == 2
    unmount(tmp_path / "mnt")
    p.wait(timeout=20)
    assert shared_files(store)
    strata("gc")
    assert lazy_dirs(store) == [] and shared_files(store) == []


FILES = [tar_dir("d"), tar_file("d/a", b"a" * 1000),
         tar_file("d/b", b"bbbb\n" * 3000), tar_symlink("d/l", "a"),
         tar_file("top", b"top\n")]


def test_written_here_matches_tar(tmp_path, mount, store):
    """The writer of this file makes layers the mount reads as the tar
    says (and the old prefix, Debian skopeo's, is read too)."""
    ref = layout_with(tmp_path / "img", [
        chunked_blob(FILES, prefix="io.containers.zstd-chunked.")])
    mnt = mount(ref, opts="prefetch=0")
    assert lazy_dirs(store)
    assert (mnt / "d/b").read_bytes() == b"bbbb\n" * 3000
    assert os.readlink(mnt / "d/l") == "a"
    assert (mnt / "top").read_bytes() == b"top\n"


def test_toc_checksum_mismatch_refused(tmp_path, mount, store):
    blob, diff_id, ann = chunked_blob(FILES)
    ann[PREFIX + "manifest-checksum"] = "sha256:" + "0" * 64
    ref = layout_with(tmp_path / "img", [(blob, diff_id, ann)])
    r = mount(ref, check=False)
    assert r.returncode != 0
    assert "table of contents does not match the manifest's checksum" \
        in r.stderr
    assert hashlib.sha256(blob).hexdigest()[:12] in r.stderr
    assert ref in r.stderr
    assert lazy_dirs(store) == []
    # the blob itself is sound: unpacked in full, it mounts
    mnt = mount(ref, opts="lazy=0")
    assert (mnt / "d/b").read_bytes() == b"bbbb\n" * 3000


def _dotdot(doc):
    doc["entries"][1]["name"] = "../../escape"


def _beyond(doc):
    doc["entries"][1]["endOffset"] = 10 ** 9


def _overlap(doc):
    b = doc["entries"][2]
    b["offset"] = doc["entries"][1]["offset"]


def _link_out(doc):
    doc["entries"].append({"type": "hardlink", "name": "h",
                           "linkName": "../etc/passwd"})


@pytest.mark.parametrize("tamper,why", [
    (_dotdot, "path leaves the layer"),
    (_beyond, "content range lies outside the layer's data"),
    (_overlap, "content range overlaps"),
    (_link_out, "entry h: path leaves the layer"),
], ids=["dotdot", "beyond", "overlap", "hardlink-out"])
def test_hostile_toc_refused(tmp_path, mount, store, tamper, why):
    ref = layout_with(tmp_path / "img", [chunked_blob(FILES, tamper)])
    r = mount(ref, check=False)
    assert r.returncode != 0
    assert why in r.stderr, r.stderr
    assert lazy_dirs(store) == []
    assert not list((Path(store) / "tmp").iterdir())


def test_file_not_matching_toc_is_eio(tmp_path, daemon, store):
    """A TOC whose digest for d/b is not what its bytes hash to: reading
    d/b fails with EIO and a log line naming image, layer and file; it is
    never stored; the other files read."""
    def wrong_b(doc):
        doc["entries"][2]["digest"] = "sha256:" + "1" * 64
    blob, diff_id, ann = chunked_blob(FILES, wrong_b)
    ref = layout_with(tmp_path / "img", [(blob, diff_id, ann)])
    p = daemon.start(ref, tmp_path / "mnt")
    with pytest.raises(OSError) as e:
        (tmp_path / "mnt/d/b").read_bytes()
    assert e.value.errno == 5
    assert (tmp_path / "mnt/d/a").read_bytes() == b"a" * 1000
    assert filled(store) == 1
    log = daemon.log(p)
    digest = hashlib.sha256(blob).hexdigest()
    assert f"image {ref}: layer sha256:{digest}: file d/b: content does " \
        "not match the table of contents" in log


def test_wrong_diff_id_makes_layer_bad(tmp_path, daemon, mount, store):
    """The config claims another diff_id: the mount goes live (the claim
    cannot be checked before the whole blob is read); once the fill has
    read it all, the layer is bad: reads fail with EIO and a log line,
    and the next mount is refused."""
    blob, _, ann = chunked_blob(FILES)
    ref = layout_with(tmp_path / "img", [(blob, "sha256:" + "2" * 64, ann)])
    p = daemon.start(ref, tmp_path / "mnt", opts="prefetch")
    for _ in range(3000):
        if "diff_id mismatch" in daemon.log(p):
            break
        time.sleep(0.01)
    with pytest.raises(OSError) as e:
        (tmp_path / "mnt/top").read_bytes()
    assert e.value.errno == 5
    assert "is bad" in daemon.log(p)
    r = mount(ref, check=False)
    assert r.returncode != 0 and "diff_id mismatch" in r.stderr


def test_kill_during_fill_then_remount(tmp_path, daemon, mount, store):
    """kill -9 of stratafs while it fills: no half file is ever visible
    under a content name, and a new mount reads everything right."""
    files = [tar_dir("d")] + [tar_file(f"d/f{i}", os.urandom(20000 + i))
                              for i in range(60)]
    want = {ti.name: data for ti, data in files[1:]}
    ref = layout_with(tmp_path / "img", [chunked_blob(files)])
    p = daemon.start(ref, tmp_path / "mnt1", opts="prefetch")
    for _ in range(2000):
        if filled(store) >= 10:
            break
        time.sleep(0.001)
    p.send_signal(signal.SIGKILL)
    p.wait()
    unmount(tmp_path / "mnt1")
    n = filled(store)
    for d in lazy_dirs(store):
        for f in (d / "data").iterdir():
            i = int(f.name) - 1
            assert f.read_bytes() == want[f"d/f{i}"]
    (tmp_path / "mnt2").mkdir()
    mnt = mount(ref, opts="prefetch=0", mnt=tmp_path / "mnt2")
    for name, data in want.items():
        assert (mnt / name).read_bytes() == data
    assert n <= filled(store) == 60


def test_torn_cache_entry_is_built_again(chunked_image, mount, store,
                                         tmp_path):
    """A lazy entry is not synced when it is built: one a crash tore
    before it reached the disk (here a name changed in one layer's index,
    the other layer's content table cut short, and "checked" naming
    another boot, as it does after the reboot a crash means) does not
    match its "sum" and is built again, so the next mount still matches
    umoci; it is never served (before sums, the changed name was)."""
    layout, tag, ref = chunked_image
    mnt = mount(ref, opts="prefetch=0")
    assert (mnt / "etc/hello").read_text() == "changed\n"
    unmount(mnt)
    torn = set()
    for d in lazy_dirs(store):
        index = (d / "index").read_bytes()
        if b"busybox\0" in index:
            (d / "index").write_bytes(index.replace(b"busybox\0",
                                                    b"busyboy\0"))
            torn.add("index")
        else:
            with open(d / "contents", "r+b") as f:
                f.truncate(os.fstat(f.fileno()).st_size // 2)
            torn.add("contents")
        boot = (d / "checked").read_text()
        assert boot == Path("/proc/sys/kernel/random/boot_id").read_text()
        (d / "checked").write_text("an earlier boot")
    assert torn == {"index", "contents"}
    (tmp_path / "again").mkdir()
    r = mount(ref, opts="prefetch=0", mnt=tmp_path / "again", check=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("lazy cache entry is torn") == 2, r.stderr
    assert_same_as_umoci(tmp_path / "again", layout, tag,
                         tmp_path / "umoci")


def test_content_stored_once_across_images(tmp_path, daemon, store):
    """Two images whose layers differ but share a file's content: the
    second mount takes it from the first's (one inode, no bytes read
    from its blob); gc drops the shared copy once no layer links it."""
    shared = os.urandom(60000)     # incompressible: fetching costs 60 KB
    one = layout_with(tmp_path / "one", [chunked_blob(
        [tar_file("x/shared", shared), tar_file("x/one", b"1")])])
    two = layout_with(tmp_path / "two", [chunked_blob(
        [tar_file("y/other", b"2" * 100), tar_file("y/same", shared)])])
    daemon.start(one, tmp_path / "m1")
    assert (tmp_path / "m1/x/shared").read_bytes() == shared
    p2 = daemon.start(two, tmp_path / "m2")
    io = Path(f"/proc/{serving_pid(p2.pid)}/io")
    before = int(io.read_text().split()[1])
    assert (tmp_path / "m2/y/same").read_bytes() == shared
    read = int(io.read_text().split()[1]) - before
    assert read < len(shared) // 4
    inodes = {os.stat(f).st_ino for d in lazy_dirs(store)
              for f in (d / "data").iterdir() if f.stat().st_size ==
              len(shared)}
    assert len(inodes) == 1


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def test_torn_content_file_fetched_again(chunked_image, daemon, store,
                                         tmp_path, monkeypatch):
    """Content files are not synced one by one: a crash can leave one
    with its size and without its bytes. Each carries the boot it was
    verified in; after a (faked) reboot a file is hashed again before it
    is served or shared, and one that does not match its digest is
    fetched again: here var/lib/y/z, zeroed in place (the layer's data/
    file and layers/lazy/content/HEX are one inode). The tree read after
    the reboot equals umoci's unpack, and the stored file is good again.
    (Before this check, the zeros were served.)"""
    layout, tag, ref = chunked_image
    monkeypatch.setenv("STRATA_BOOT_ID", "boot-one")
    ref_root = tmp_path / "u"
    want = (umoci_rootfs(layout, tag, ref_root) / "var/lib/y/z").read_bytes()
    p = daemon.start(ref, tmp_path / "m1")
    assert (tmp_path / "m1/var/lib/y/z").read_bytes() == want
    unmount(tmp_path / "m1")
    p.wait(20)
    stored = Path(store) / "layers/lazy/content" / sha256_hex(want)
    assert os.getxattr(stored, "user.strata.checked") == b"boot-one"
    with open(stored, "r+b") as f:     # what the crash left
        f.write(bytes(len(want)))
    monkeypatch.setenv("STRATA_BOOT_ID", "boot-two")
    p = daemon.start(ref, tmp_path / "m2")
    assert_same_as_umoci(tmp_path / "m2", layout, tag, tmp_path / "u2")
    assert sha256_hex(stored.read_bytes()) == stored.name
    assert os.getxattr(stored, "user.strata.checked") == b"boot-two"
    log = daemon.log(p)
    assert "file var/lib/y/z: stored content does not match its digest" \
        in log, log


def test_torn_shared_content_not_linked(tmp_path, daemon, store,
                                        monkeypatch):
    """layers/lazy/content/HEX, a content file another image's layer
    would link instead of fetching, replaced by a file of the same size
    and other bytes (what a crash can leave): after a (faked) reboot it
    is hashed before it is linked, found wrong, and fetched again; the
    second image reads the bytes the test wrote. (Before this check, its
    size was enough to share it.)"""
    shared = os.urandom(60000)
    one = layout_with(tmp_path / "one", [chunked_blob(
        [tar_file("x/shared", shared), tar_file("x/one", b"1")])])
    two = layout_with(tmp_path / "two", [chunked_blob(
        [tar_file("y/other", b"2" * 100), tar_file("y/same", shared)])])
    monkeypatch.setenv("STRATA_BOOT_ID", "boot-one")
    p = daemon.start(one, tmp_path / "m1")
    assert (tmp_path / "m1/x/shared").read_bytes() == shared
    unmount(tmp_path / "m1")
    p.wait(20)
    stored = Path(store) / "layers/lazy/content" / sha256_hex(shared)
    stored.unlink()
    stored.write_bytes(os.urandom(len(shared)))
    monkeypatch.setenv("STRATA_BOOT_ID", "boot-two")
    p = daemon.start(two, tmp_path / "m2")
    assert (tmp_path / "m2/y/same").read_bytes() == shared
    assert sha256_hex(stored.read_bytes()) == stored.name
    assert "file y/same: stored content does not match its digest" in \
        daemon.log(p)


# --- from a registry: Range requests (the loopback registry of
# test_registry.py: Debian's docker-registry) ---

from test_registry import skopeo  # noqa: E402,F401 (procs, registry: conftest)


def layer_blobs_in_store(store):
    d = Path(store) / "images" / "blobs" / "sha256"
    return {p.name for p in d.iterdir()} if d.exists() else set()


def kill_registry(addr):
    """Kill the docker-registry serving @addr (started by the registry
    fixture with a config file named after its port); return its
    command line, to start it again."""
    port = addr.rsplit(":", 1)[1]
    argv = None
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"docker-registry" in cmd and f"registry-{port}.yml".encode() \
                in cmd:
            os.kill(int(pid), signal.SIGKILL)
            argv = [a.decode() for a in cmd.split(b"\0") if a]
    return argv


def test_lazy_from_registry(chunked_image, registry, skopeo, daemon, store,
                            tmp_path, monkeypatch, procs):
    """Pushed by skopeo as it is, mounted from docker://: the layers are
    never downloaded, files come with Range requests and match umoci's
    unpack of the original. When the registry goes away, files already
    fetched still read, the others fail with EIO and a log line; when it
    returns, they read (nothing remembers the failure; no remount)."""
    for v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(v, raising=False)
    layout, tag, ref = chunked_image
    src = Path(ref.split(":")[1])
    mdigest = json.loads((src / "index.json").read_text())["manifests"][0][
        "digest"].split(":")[1]
    layers = [l["digest"].split(":")[1] for l in json.loads(
        (src / "blobs/sha256" / mdigest).read_text())["layers"]]
    reg = registry()
    skopeo("copy", "--dest-tls-verify=false", ref, f"docker://{reg}/l/z:t")
    daemon.start(f"docker://{reg}/l/z:t", tmp_path / "m1",
                 opts="prefetch=0,tls_verify=false")
    assert filled(store) == 0
    assert_same_as_umoci(tmp_path / "m1", layout, tag, tmp_path / "umoci")
    assert filled(store) == 3
    assert not set(layers) & layer_blobs_in_store(store)

    monkeypatch.setenv("STRATA_ROOT", str(tmp_path / "store2"))
    p = daemon.start(f"docker://{reg}/l/z:t", tmp_path / "m2",
                     opts="prefetch=0,tls_verify=false")
    assert (tmp_path / "m2/etc/hello").read_text() == "changed\n"
    argv = kill_registry(reg)
    assert (tmp_path / "m2/etc/hello").read_text() == "changed\n"
    with pytest.raises(OSError) as e:
        (tmp_path / "m2/bin/busybox").read_bytes()
    assert e.value.errno == 5
    assert "file bin/busybox: cannot fetch its content" in daemon.log(p)
    assert filled(tmp_path / "store2") == 1     # etc/hello only
    back = procs.start(argv)
    assert wait_port(int(reg.rsplit(":", 1)[1]), back)
    assert (tmp_path / "m2/bin/busybox").read_bytes() == \
        Path("/usr/bin/busybox").read_bytes()


def test_lazy_from_oci_archive(chunked_image, mount, store, tmp_path):
    """An oci-archive (written by skopeo) is read into the store's blobs,
    and mounted lazily from there."""
    _, _, ref = chunked_image
    archive = tmp_path / "img.tar"
    run(["skopeo", "copy", "-q", ref, f"oci-archive:{archive}:t"])
    mnt = mount(f"oci-archive:{archive}:t", opts="prefetch=0")
    assert len(lazy_dirs(store)) == 2 and filled(store) == 0
    assert (mnt / "bin/busybox").read_bytes() == \
        Path("/usr/bin/busybox").read_bytes()
    assert filled(store) == 1
