"""Lazy gzip and zstd layers (issue 13, item 2): mounted after one pass
that verifies the blob digest and records access points (the diff_id is
checked by the background fill, which hashes the whole stream); files
filled on first read from the nearest access point, or by the background
fill's one sequential decompress.

Compared with `umoci unpack` (an image umoci built: gzip layers) and with
Python's tarfile reading the blob (layers written here, compressed by the
`gzip` and `zstd` command lines)."""
import gzip
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from conftest import (STRATAFS, as_uid, assert_same_as_umoci, make_tar, run,
                      sha256s_as, tar_dir, tar_file, unmount, write_blob,
                      _json_bytes)
from test_lazy import (Daemon, busybox_steps, second_steps, filled,
                       lazy_dirs, zstd, zstd_each)
from test_lazy_trust import wait_for

MEDIA = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
         "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


@pytest.fixture
def daemon(tmp_path, store):
    d = Daemon(tmp_path)
    yield d
    d.stop()


def compress(raw, how):
    if how == "gzip":
        return run_gzip(raw)
    if how == "zstd":
        return zstd(raw)
    # zstd, several frames: access points at frame starts
    step = 3 << 20
    return b"".join(zstd_each([raw[i:i + step]
                               for i in range(0, len(raw), step)]))


def run_gzip(raw):
    import subprocess
    return subprocess.run(["gzip", "-c", "-6"], input=raw, check=True,
                          capture_output=True).stdout


def layout_of(path, blob, diff_id, how):
    path = Path(path)
    path.mkdir(parents=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    d, n = write_blob(path, blob)
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    cd, cn = write_blob(path, _json_bytes(config))
    manifest = {"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType":
                           "application/vnd.oci.image.config.v1+json",
                           "digest": cd, "size": cn},
                "layers": [{"mediaType": MEDIA[how.split("-")[0]],
                            "digest": d, "size": n}]}
    md, mn = write_blob(path, _json_bytes(manifest))
    (path / "index.json").write_text(json.dumps(
        {"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": md, "size": mn,
             "annotations": {"org.opencontainers.image.ref.name": "t"}}]}))
    return f"oci:{path}:t"


def big_tar():
    """About 14 MiB of tar (several 4 MiB access-point spans), files of
    many sizes, one larger than a span; compressible but not trivially."""
    rnd = random.Random(13)
    entries = [tar_dir("d")]
    for i in range(70):
        size = rnd.choice([1, 700, 5000, 60000, 200000])
        if i == 33:
            size = 5 << 20
        data = bytes(rnd.choice(b"abcdefgh\n") for _ in range(min(size,
                                                                  4096)))
        data = (data * (size // len(data) + 1))[:size - 8] + \
            rnd.randbytes(8) if size > 8 else rnd.randbytes(size)
        entries.append(tar_file(f"d/f{i}", data))
    return make_tar(entries)


@pytest.fixture(scope="module")
def raw_tar():
    return big_tar()


def tar_files(raw):
    """Python's tarfile's reading of the tar: name -> bytes."""
    t = tarfile.open(fileobj=io.BytesIO(raw))
    return {m.name: t.extractfile(m).read() for m in t.getmembers()
            if m.isreg()}


@pytest.fixture(scope="module")
def gzip_image(tmp_path_factory):
    from conftest import build_umoci_image
    tmp = tmp_path_factory.mktemp("gz")
    layout, tag = build_umoci_image(tmp, [busybox_steps, second_steps])
    return layout, tag


def test_gzip_lazy_matches_umoci(gzip_image, mount, store, tmp_path):
    layout, tag = gzip_image
    mnt = mount(f"oci:{layout}:{tag}", opts="lazy=all,prefetch=0")
    dirs = lazy_dirs(store)
    assert len(dirs) == 2 and all(d.name.endswith(".zran") for d in dirs)
    sha = Path(store) / "layers" / "sha256"
    assert not sha.exists() or not any(sha.iterdir())
    assert filled(store) == 0
    assert (mnt / "etc/hello").read_text() == "changed\n"
    assert filled(store) == 1
    assert_same_as_umoci(mnt, layout, tag, tmp_path / "umoci")


@pytest.mark.parametrize("how", ["gzip", "zstd", "zstd-frames"])
def test_read_before_fill_random_order(how, raw_tar, mount, store, tmp_path):
    """prefetch=0: every file read through access points, in a random
    order, matches tarfile's reading of the tar."""
    want = tar_files(raw_tar)
    ref = layout_of(tmp_path / "img", compress(raw_tar, how),
                    "sha256:" + hashlib.sha256(raw_tar).hexdigest(), how)
    mnt = mount(ref, opts="lazy=all,prefetch=0")
    names = sorted(want)
    random.Random(how).shuffle(names)
    for i, name in enumerate(names):
        assert (mnt / name).read_bytes() == want[name], name
        if i == 0:
            assert filled(store) == 1
    assert filled(store) == len(want)


def test_fill_then_kill_then_remount(raw_tar, daemon, mount, store, tmp_path):
    """The background fill (one sequential decompress) fills files
    tarfile reads the same; kill -9 during it leaves no half file under
    a content name, and a remount reads everything right."""
    want = tar_files(raw_tar)
    by_id = sorted(want, key=lambda n: int(n[3:]))	# tar order
    ref = layout_of(tmp_path / "img", run_gzip(raw_tar),
                    "sha256:" + hashlib.sha256(raw_tar).hexdigest(), "gzip")
    p = daemon.start(ref, tmp_path / "mnt1", opts="lazy=all,prefetch")
    for _ in range(5000):
        if filled(store) >= 5:
            break
        time.sleep(0.001)
    p.send_signal(signal.SIGKILL)
    p.wait()
    unmount(tmp_path / "mnt1")
    for d in lazy_dirs(store):
        for f in (d / "data").iterdir():
            assert f.read_bytes() == want[by_id[int(f.name) - 1]]
    p = daemon.start(ref, tmp_path / "mnt2", opts="lazy=all,prefetch")
    for _ in range(5000):
        if filled(store) == len(want):
            break
        time.sleep(0.002)
    assert filled(store) == len(want)
    for name, data in want.items():
        assert (tmp_path / "mnt2" / name).read_bytes() == data
    # every file filled: the store's copy of the blob goes (the files
    # synced first); a later mount reads the filled files without it
    blob = lazy_dirs(store)[0] / "blob"
    for _ in range(2000):
        if not blob.exists():
            break
        time.sleep(0.005)
    assert not blob.exists()
    p = daemon.start(ref, tmp_path / "mnt3", opts="lazy=all,prefetch")
    for name, data in want.items():
        assert (tmp_path / "mnt3" / name).read_bytes() == data


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_wrong_diff_id_found_by_fill(how, daemon, mount, store, tmp_path):
    """The config claims another diff_id; the blob is what the manifest
    says. The pass checks the blob, not the diff_id: the mount goes live.
    The fill hashes the whole stream, records what Python's sha256 of the
    tar says, and makes the layer bad: reads fail with EIO and a log line,
    the next mount of the image is refused; an image with the same blob
    and the right diff_id is not poisoned."""
    raw = make_tar([tar_dir("d"), tar_file("d/a", b"a" * 1000)])
    blob = compress(raw, how)
    right = "sha256:" + hashlib.sha256(raw).hexdigest()
    ref = layout_of(tmp_path / "img", blob, "sha256:" + "2" * 64, how)
    p = daemon.start(ref, tmp_path / "mnt", opts="lazy=all,prefetch")
    [d] = lazy_dirs(store)
    assert wait_for(lambda: (d / "diff_id").exists())
    assert (d / "diff_id").read_text() == right
    assert wait_for(lambda: "diff_id mismatch" in daemon.log(p))
    with pytest.raises(OSError) as e:
        (tmp_path / "mnt/d/a").read_bytes()
    assert e.value.errno == 5
    log = daemon.log(p)
    assert f"image {ref}: layer sha256:{hashlib.sha256(blob).hexdigest()}" \
        f": diff_id mismatch: config says sha256:{'2' * 64}, uncompressed " \
        f"content hashes to {right}" in log, log
    assert "d/a: not served (EIO)" in log, log
    r = mount(ref, opts="lazy=all", check=False)
    assert r.returncode != 0 and "diff_id mismatch" in r.stderr
    mnt = mount(layout_of(tmp_path / "good", blob, right, how),
                opts="lazy=all")
    assert (mnt / "d/a").read_bytes() == b"a" * 1000


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_tampered_blob_refused_before_live(how, mount, store, tmp_path):
    """One byte of the layout's blob changed (same size; for gzip in the
    header, so the stream still inflates to the same tar): the pass
    refuses the layer before the mount goes live; nothing is kept."""
    raw = make_tar([tar_dir("d"), tar_file("d/a", os.urandom(300000))])
    blob = compress(raw, how)
    ref = layout_of(tmp_path / "img", blob,
                    "sha256:" + hashlib.sha256(raw).hexdigest(), how)
    path = (tmp_path / "img" / "blobs" / "sha256" /
            hashlib.sha256(blob).hexdigest())
    bad = bytearray(blob)
    if how == "gzip":	# the header's mtime: a sound stream, same tar
        bad[4] ^= 0x40
        assert gzip.decompress(bytes(bad)) == raw
    else:
        bad[len(bad) // 2] ^= 0x40
    path.write_bytes(bytes(bad))
    r = mount(ref, opts="lazy=all", check=False)
    assert r.returncode != 0, r
    assert f"layer sha256:{hashlib.sha256(blob).hexdigest()[:12]}" \
        in r.stderr, r.stderr
    assert ("digest mismatch" if how == "gzip" else "corrupt zstd data") \
        in r.stderr, r.stderr
    assert lazy_dirs(store) == []


def test_layout_blob_changed_after_mount(raw_tar, mount, store, tmp_path):
    """The pass verified the blob; what the layout holds afterwards is
    untrusted: overwritten in place (same inode and size), then removed,
    it changes nothing the mount serves (reads come from the store's
    verified copy), also after a remount. Files compared with tarfile."""
    want = tar_files(raw_tar)
    blob = run_gzip(raw_tar)
    ref = layout_of(tmp_path / "img", blob,
                    "sha256:" + hashlib.sha256(raw_tar).hexdigest(), "gzip")
    mnt = mount(ref, opts="lazy=all,prefetch=0")
    path = (tmp_path / "img" / "blobs" / "sha256" /
            hashlib.sha256(blob).hexdigest())
    with open(path, "r+b") as f:	# the same inode, other bytes
        f.write(run_gzip(bytes(len(raw_tar))).ljust(len(blob), b"\0")
                [:len(blob)])
    names = sorted(want)
    random.Random(5).shuffle(names)
    for name in names[:12]:
        assert (mnt / name).read_bytes() == want[name], name
    path.unlink()
    for name in names[12:24]:
        assert (mnt / name).read_bytes() == want[name], name
    unmount(mnt)
    mnt = mount(ref, opts="lazy=all,prefetch=0")
    for name in names[24:36]:
        assert (mnt / name).read_bytes() == want[name], name


def test_blob_torn_by_a_crash_read_again(raw_tar, daemon, store, tmp_path,
                                         monkeypatch):
    """The store's copy of the blob is not synced on the way to the
    mount: it hashed to its digest in this boot and carries that boot's
    mark. After a (faked) reboot it is hashed again before it is used.
    One that a crash left with its size and not its bytes (zeroed here)
    is found: the layer is read again from the layout, with a log line,
    and the files equal tarfile's reading of the tar. One that survived
    intact is kept and marked as on disk ("blob.synced"), so later boots
    do not hash it again. (Before, the copy was fsynced before the mount
    went live, which kept the mount waiting on the disk.)"""
    want = tar_files(raw_tar)
    blob = run_gzip(raw_tar)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    ref = layout_of(tmp_path / "img", blob,
                    "sha256:" + hashlib.sha256(raw_tar).hexdigest(), "gzip")
    names = sorted(want)
    random.Random(9).shuffle(names)

    monkeypatch.setenv("STRATA_BOOT_ID", "boot-one")
    p = daemon.start(ref, tmp_path / "m1", opts="lazy=all,prefetch=0")
    [entry] = lazy_dirs(store)
    kept = entry / "blob"
    assert os.getxattr(kept, "user.strata.checked") == b"boot-one"
    assert not (entry / "blob.synced").exists()
    assert (tmp_path / "m1" / names[0]).read_bytes() == want[names[0]]
    unmount(tmp_path / "m1")
    p.wait(20)
    with open(kept, "r+b") as f:	# what the crash left
        f.write(bytes(len(blob)))

    monkeypatch.setenv("STRATA_BOOT_ID", "boot-two")
    p = daemon.start(ref, tmp_path / "m2", opts="lazy=all,prefetch=0")
    assert f"layer {digest}: the cached blob does not match its digest" \
        in daemon.log(p), daemon.log(p)
    for name in names[:20]:
        assert (tmp_path / "m2" / name).read_bytes() == want[name], name
    [entry] = lazy_dirs(store)
    assert hashlib.sha256((entry / "blob").read_bytes()).digest() == \
        hashlib.sha256(blob).digest()
    assert os.getxattr(entry / "blob", "user.strata.checked") == b"boot-two"
    unmount(tmp_path / "m2")
    p.wait(20)

    monkeypatch.setenv("STRATA_BOOT_ID", "boot-three")
    p = daemon.start(ref, tmp_path / "m3", opts="lazy=all,prefetch=0")
    assert "does not match" not in daemon.log(p)
    assert (entry / "blob.synced").exists()
    for name in names[20:40]:
        assert (tmp_path / "m3" / name).read_bytes() == want[name], name


NO_USER_XATTRS = r"""
#include <errno.h>
#include <stddef.h>
int fsetxattr(int fd, const char *name, const void *value, size_t size,
              int flags)
{
        (void)fd, (void)name, (void)value, (void)size, (void)flags;
        errno = ENOTSUP;
        return -1;
}
"""


def test_store_without_user_xattrs_syncs_the_copy(raw_tar, daemon, store,
                                                  tmp_path, monkeypatch):
    """A store on a filesystem that keeps no user xattrs (every fsetxattr
    fails with ENOTSUP, by an LD_PRELOAD shim here): the copy of the blob
    cannot carry the boot mark, so the pass syncs it and records
    "blob.synced" before the mount goes live. In a later boot the copy is
    used as it is, without the mark, and the files read equal tarfile's
    reading."""
    src, shim = tmp_path / "noxattr.c", tmp_path / "noxattr.so"
    src.write_text(NO_USER_XATTRS)
    run(["cc", "-shared", "-fPIC", "-o", shim, src])
    want = tar_files(raw_tar)
    names = sorted(want)
    ref = layout_of(tmp_path / "img", run_gzip(raw_tar),
                    "sha256:" + hashlib.sha256(raw_tar).hexdigest(), "gzip")
    monkeypatch.setenv("LD_PRELOAD", str(shim))
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "") +
                       ":verify_asan_link_order=0")
    for boot, mnt in (("boot-one", tmp_path / "m1"),
                      ("boot-two", tmp_path / "m2")):
        monkeypatch.setenv("STRATA_BOOT_ID", boot)
        p = daemon.start(ref, mnt, opts="lazy=all,prefetch=0")
        [entry] = lazy_dirs(store)
        assert (entry / "blob.synced").exists()
        with pytest.raises(OSError):
            os.getxattr(entry / "blob", "user.strata.checked")
        for name in names[:20] if boot == "boot-one" else names[20:40]:
            assert (mnt / name).read_bytes() == want[name], name
        assert "does not match" not in daemon.log(p)
        unmount(mnt)
        p.wait(20)


def test_user_store_blob_marked_too(raw_tar, open_dir, dev_fuse_open, mount,
                                    tmp_path):
    """nobody mounts a gzip layout into nobody's own store: the blob copy
    ends read-only (0444) as root's does, and carries the boot mark too
    (set before it is made read-only: a user may not set a user xattr on a
    file it cannot write), so a user's mount does not wait on the disk
    for it either. The files read as nobody equal tarfile's."""
    nobody = 65534
    want = tar_files(raw_tar)
    blob = run_gzip(raw_tar)
    home = open_dir / "home"
    (home / "mnt").mkdir(parents=True)
    for p in (home, home / "mnt"):
        os.chown(p, nobody, nobody)
    ref = layout_of(open_dir / "img", blob,
                    "sha256:" + hashlib.sha256(raw_tar).hexdigest(), "gzip")
    env = dict(os.environ, HOME=str(home), STRATA_ROOT=str(home / "store"))
    env.pop("XDG_DATA_HOME", None)
    mnt = mount(ref, mnt=home / "mnt", opts="lazy=all,prefetch=0", env=env,
                preexec_fn=as_uid(nobody))
    [entry] = lazy_dirs(home / "store")
    st = (entry / "blob").stat()
    assert (st.st_uid, st.st_mode & 0o7777) == (nobody, 0o444)
    assert os.getxattr(entry / "blob", "user.strata.checked")
    assert not (entry / "blob.synced").exists()
    names = sorted(want)[:15]
    assert sha256s_as(nobody, mnt, names) == \
        [hashlib.sha256(want[n]).hexdigest() for n in names]


@pytest.fixture
def small_store(store):
    """The test store on a 6 MiB tmpfs, unmounted after the test (after
    the mount fixture's finalizer, which is set up later)."""
    store.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755",
                    "tmpfs", str(store)], check=True)
    yield store
    subprocess.run(["umount", "-l", str(store)], check=False)


def test_store_full_while_copying(small_store, tmp_path):
    """The store's copy of the blob is made while the pass reads it: when
    the store fills up halfway through the copy, the pass (which waits for
    the copy) and the hash thread stop, the mount fails naming the layer
    and the cause, within the timeout, and no cache entry is left."""
    raw = make_tar([tar_dir("d"), tar_file("d/a", os.urandom(12 << 20))])
    blob = compress(raw, "gzip")
    ref = layout_of(tmp_path / "img", blob,
                    "sha256:" + hashlib.sha256(raw).hexdigest(), "gzip")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = subprocess.run([str(STRATAFS), "-o", "lazy=all", ref, str(mnt)],
                           capture_output=True, text=True, timeout=120)
    finally:
        unmount(mnt)
    assert r.returncode != 0, r
    short = hashlib.sha256(blob).hexdigest()[:12]
    assert f"layer sha256:{short}: cache: copying the blob" in r.stderr, \
        r.stderr
    assert "copying the blob: No space left on device" in r.stderr, r.stderr
    assert lazy_dirs(small_store) == []
