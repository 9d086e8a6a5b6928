"""Shared fixtures for the integration suite.

Every test gets its own store (STRATA_ROOT in a temp dir) and mounts through
the `mount` fixture, whose finalizer unmounts even when the test fails.
The binaries come from $STRATA_BUILD (tests/run.sh sets it), else build/.
"""
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("STRATA_BUILD", REPO / "build"))
STRATA = BUILD / "tools" / "strata"
STRATAFS = BUILD / "fs" / "stratafs"


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path:
                return True
    return False


def unmount(path):
    """Unmount @path, lazily if it is busy; never raise."""
    for _ in range(50):
        if not is_mounted(path):
            return
        r = subprocess.run(["fusermount3", "-u", "-q", str(path)],
                           capture_output=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        time.sleep(0.05)


def run(cmd, check=True, env=None, **kw):
    """Run @cmd (list), return CompletedProcess with text stdout/stderr."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                       env=env, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}\n"
                             f"stdout: {r.stdout}\nstderr: {r.stderr}")
    return r


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh store root, exported as STRATA_ROOT for strata and stratafs."""
    root = tmp_path / "store"
    monkeypatch.setenv("STRATA_ROOT", str(root))
    return root


@pytest.fixture
def strata(store):
    """strata(*args, check=True) -> CompletedProcess, using the test store."""
    def call(*args, check=True, env=None):
        return run([STRATA, *args], check=check, env=env)
    return call


@pytest.fixture
def mount(tmp_path, store):
    """mount(ref, opts=None, mnt=None, check=True, user=None) -> Path.

    Runs `stratafs [-o opts] ref mnt`; returns the mountpoint, or the
    CompletedProcess when check=False. Every mount is unmounted in the
    finalizer, whatever the test did."""
    made = []
    counter = [0]

    def do_mount(ref, opts=None, mnt=None, check=True, env=None,
                 preexec_fn=None):
        if mnt is None:
            counter[0] += 1
            mnt = tmp_path / f"mnt{counter[0]}"
            mnt.mkdir()
        made.append(Path(mnt))
        cmd = [STRATAFS]
        if opts:
            cmd += ["-o", opts]
        cmd += [ref, mnt]
        r = subprocess.run([str(c) for c in cmd], capture_output=True,
                           text=True, env=env, preexec_fn=preexec_fn)
        if not check:
            return r
        if r.returncode != 0:
            raise AssertionError(f"stratafs {ref} failed ({r.returncode}): "
                                 f"{r.stderr}")
        assert is_mounted(mnt), f"{mnt} is not mounted after stratafs"
        return Path(mnt)

    yield do_mount
    for m in reversed(made):
        unmount(m)


@pytest.fixture
def dev_fuse_open():
    """/dev/fuse opened to every user (0666) for the test, as users need
    it to mount; its mode is put back afterwards."""
    import stat
    st = os.stat("/dev/fuse")
    os.chmod("/dev/fuse", 0o666)
    yield
    os.chmod("/dev/fuse", stat.S_IMODE(st.st_mode))


@pytest.fixture
def umoci_image(tmp_path):
    """umoci_image(steps, name='img', tag='t') -> (layout_dir, 'tag').

    Build an image with umoci, one layer per step: each step is a callable
    given the rootfs Path to modify (umoci repack records the difference,
    deletions as whiteouts). Returns the layout directory and tag."""
    def build(steps, name="img", tag="t"):
        return build_umoci_image(tmp_path, steps, name, tag)
    return build


def build_umoci_image(base, steps, name="img", tag="t"):
    """The umoci_image fixture's work, in directory @base (for fixtures of
    a wider scope)."""
    layout = Path(base) / name
    bundle = Path(base) / f"{name}-bundle"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:{tag}"])
    for step in steps:
        if bundle.exists():
            shutil.rmtree(bundle)
        run(["umoci", "unpack", "--image", f"{layout}:{tag}", bundle])
        step(bundle / "rootfs")
        run(["umoci", "repack", "--image", f"{layout}:{tag}", bundle])
    if bundle.exists():
        shutil.rmtree(bundle)
    return layout, tag


def umoci_rootfs(layout, tag, dest):
    """Unpack layout:tag with umoci (as root) and return the rootfs Path:
    the independent answer a mount is compared with."""
    run(["umoci", "unpack", "--image", f"{layout}:{tag}", dest])
    return Path(dest) / "rootfs"


def sha256_file(p):
    """Hex sha256 of the file at @p, read in 1 MiB chunks."""
    import hashlib
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree(root, content=True):
    """A comparable description of the tree under @root: path -> tuple of
    (type, mode, uid, gid, size, mtime_ns, link target or sha-ish content,
    sorted xattrs). Hardlink groups are recorded as the sorted path list
    sharing each inode. Directory sizes and nlink are left out (they are
    filesystem-specific). Self-contained: its source is also run as
    another user (test_fs_posix_ro), so it hashes inline."""
    import hashlib
    import stat
    out = {}
    inodes = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames) + ([""] if dirpath == str(root) else []):
            p = Path(dirpath) / name if name else Path(dirpath)
            rel = "/" + str(p.relative_to(root)) if p != root else "/"
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            extra = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                if content:
                    h = hashlib.sha256()
                    with open(p, "rb") as f:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                    extra = h.hexdigest()
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
            try:
                xs = sorted((x, os.getxattr(p, x, follow_symlinks=False))
                            for x in os.listxattr(p, follow_symlinks=False))
            except OSError:
                xs = []
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else None
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        size, st.st_mtime_ns if not stat.S_ISLNK(st.st_mode)
                        else None, extra, tuple(xs))
    links = sorted(sorted(v) for v in inodes.values() if len(v) > 1)
    return out, links


def assert_same_tree(a, b, content=True, ignore=()):
    """Assert the trees under @a and @b agree entry by entry (see tree())."""
    ta, la = tree(a, content)
    tb, lb = tree(b, content)
    for k in ignore:
        ta.pop(k, None)
        tb.pop(k, None)
    only_a = sorted(set(ta) - set(tb))
    only_b = sorted(set(tb) - set(ta))
    assert not only_a and not only_b, \
        f"only in {a}: {only_a[:20]}\nonly in {b}: {only_b[:20]}"
    diffs = [(k, ta[k], tb[k]) for k in sorted(ta) if ta[k] != tb[k]]
    assert not diffs, "entries differ:\n" + "\n".join(
        f"{k}:\n  {x}\n  {y}" for k, x, y in diffs[:20])
    assert la == lb, f"hardlink groups differ: {la} vs {lb}"


# ---------------------------------------------------------------------------
# Hand-made layers and blobs (appended for test_readonly_tree / test_refs_store)

def write_blob(layout, data):
    """Write @data (bytes) as a blob of the OCI layout @layout; return
    (digest, size)."""
    import hashlib
    d = hashlib.sha256(data).hexdigest()
    p = Path(layout) / "blobs" / "sha256" / d
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return "sha256:" + d, len(data)


def read_blob(layout, digest):
    algo, hexd = digest.split(":", 1)
    return (Path(layout) / "blobs" / algo / hexd).read_bytes()


def _json_bytes(obj):
    import json
    return json.dumps(obj, separators=(",", ":")).encode()


def make_tar(tar_entries):
    """Uncompressed tar bytes from @tar_entries: a list of tarfile.TarInfo
    or (TarInfo, bytes) pairs (the data of a regular file; its size is set
    from it)."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in tar_entries:
            ti, data = (e if isinstance(e, tuple) else (e, None))
            if data is not None:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                t.addfile(ti)
    return buf.getvalue()


def append_raw_layer(layout, tag, tar_entries):
    """Append a layer made by hand to the image @layout:@tag (an OCI layout,
    e.g. from the umoci_image fixture): @tar_entries as for make_tar(),
    written gzip-compressed. Updates config (rootfs.diff_ids, history),
    manifest and index.json (whose descriptor for @tag now points at the
    new manifest). Returns the new manifest digest."""
    import gzip
    import hashlib
    import json
    layout = Path(layout)
    raw = make_tar(tar_entries)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    ldigest, lsize = write_blob(layout, gzip.compress(raw, mtime=0))
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get(
                    "org.opencontainers.image.ref.name") == tag)
    manifest = json.loads(read_blob(layout, desc["digest"]))
    config = json.loads(read_blob(layout, manifest["config"]["digest"]))
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    config["rootfs"].setdefault("diff_ids", []).append(diff_id)
    config.setdefault("history", []).append(
        {"created": "2020-01-01T00:00:00Z", "created_by": "append_raw_layer"})
    cdigest, csize = write_blob(layout, _json_bytes(config))
    manifest["config"]["digest"], manifest["config"]["size"] = cdigest, csize
    manifest.setdefault("layers", []).append(
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
         "digest": ldigest, "size": lsize})
    mdigest, msize = write_blob(layout, _json_bytes(manifest))
    desc["digest"], desc["size"] = mdigest, msize
    (layout / "index.json").write_text(json.dumps(index))
    return mdigest


def tar_dir(name, mode=0o755, uid=0, gid=0, mtime=1600000000):
    import tarfile
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = \
        tarfile.DIRTYPE, mode, uid, gid, mtime
    return ti


def tar_file(name, data=b"", mode=0o644, uid=0, gid=0, mtime=1600000000):
    import tarfile
    ti = tarfile.TarInfo(name)
    ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, mtime
    return (ti, data)


def tar_symlink(name, target, uid=0, gid=0, mtime=1600000000):
    import tarfile
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
    ti.uid, ti.gid, ti.mtime = uid, gid, mtime
    return ti


def no_whiteouts_visible(root):
    """Return the paths under @root whose name starts with .wh. (should be
    none)."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            if n.startswith(".wh."):
                bad.append(os.path.join(dirpath, n))
        if any(n.startswith(".wh.") for n in os.listdir(dirpath)):
            bad.append(dirpath + " (listdir)")
    return bad


# ---- hostile-input helpers (test_hostile_layers, test_verify, test_whiteout_tables) ----

def _snapshot(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


class Hostile:
    """Import/mount helpers that check a refused image left no trace and an
    accepted one wrote nothing outside the store.

    sentinel: a directory next to the store (with a file in it) that must
    stay exactly as it was; outside: a /tmp/<unique> path that no layer may
    create (tests put it into symlink/hardlink targets)."""

    def __init__(self, tmp_path, store, strata, mount):
        import uuid
        self.tmp_path = tmp_path
        self.store = store
        self.strata = strata
        self.mount = mount
        self.sentinel = tmp_path / "sentinel"
        self.sentinel.mkdir()
        (self.sentinel / "keep").write_text("keep\n")
        self.outside = Path(f"/tmp/strata-hostile-{uuid.uuid4().hex}")
        self._before = _snapshot(self.sentinel)

    def untouched(self):
        """Assert nothing was written outside the store."""
        assert not os.path.lexists(self.outside), \
            f"{self.outside} was created outside the store"
        assert _snapshot(self.sentinel) == self._before, \
            "the sentinel directory next to the store changed"
        extra = sorted(p.name for p in self.tmp_path.iterdir()
                       if p.name not in ("store", "sentinel") and
                       not p.name.startswith(("mnt", "lay", "umoci", "img")))
        assert not extra, f"unexpected files next to the store: {extra}"

    def published(self, diff_id):
        alg, hexd = diff_id.split(":", 1)
        return (self.store / "layers" / alg / hexd).exists()

    def images(self):
        return self.strata("images").stdout

    def refused(self, img, name="bad:1", args=(), names=(), diff_ids=None,
                mount=True):
        """Import @img (an ocibuild.Image or reference) and assert it is
        refused: non-zero exit, one "strata: " line on stderr containing
        every string of @names, no tag, no layer published for @diff_ids
        (default: every layer of @img), nothing written outside. Then the
        same for stratafs on the oci: reference. Return import's stderr."""
        ref = img if isinstance(img, str) else img.ref
        r = self.strata("import", *args, ref, name, check=False)
        assert r.returncode != 0, f"import of {ref} was accepted: {r.stdout}"
        err = r.stderr.strip()
        assert err.startswith("strata: "), err
        assert "\n" not in err, f"more than one line on stderr: {err!r}"
        for s in names:
            assert s in err, f"stderr does not name {s!r}: {err}"
        listed = self.images()
        assert name.split(":")[0] not in listed, listed
        if diff_ids is None and not isinstance(img, str):
            diff_ids = [l.diff_id for l in img.layers]
        for d in diff_ids or ():
            if d and ":" in d:
                assert not self.published(d), f"layer {d} was published"
        if mount and not args:
            m = self.mount(ref, check=False)
            assert m.returncode != 0, f"stratafs mounted {ref}"
            assert m.stderr.strip().startswith("stratafs: "), m.stderr
            for s in names:
                assert s in m.stderr, f"stratafs stderr lacks {s!r}: {m.stderr}"
        self.untouched()
        return err

    def accepted(self, img, name="good:1", args=()):
        """Import @img, assert success, the tag listed and every layer
        published; mount it from the store and return the mountpoint."""
        r = self.strata("import", *args, img.ref, name, check=False)
        assert r.returncode == 0, f"import refused: {r.stderr}"
        assert r.stdout.strip() == img.manifest_digest
        assert name in self.images()
        for l in img.layers:
            assert self.published(l.diff_id), f"{l.diff_id} not published"
        mnt = self.mount(name)
        self.untouched()
        return mnt

    def store_is_inert(self):
        """No device node, FIFO, socket, symlink or set-id file anywhere in
        the store: image metadata lives in the index, never on disk."""
        import stat
        bad = []
        for dirpath, dirnames, filenames in os.walk(self.store):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                st = os.lstat(p)
                m = st.st_mode
                if not (stat.S_ISREG(m) or stat.S_ISDIR(m)) or \
                        m & (stat.S_ISUID | stat.S_ISGID):
                    bad.append((p, oct(m)))
        assert not bad, f"special files in the store: {bad[:10]}"


@pytest.fixture
def hostile(tmp_path, store, strata, mount):
    h = Hostile(tmp_path, store, strata, mount)
    yield h
    if os.path.lexists(h.outside):
        if os.path.isdir(h.outside) and not os.path.islink(h.outside):
            shutil.rmtree(h.outside)
        else:
            os.unlink(h.outside)


def assert_same_as_umoci(mnt, layout, tag, dest, ignore=()):
    """Compare the mount with `umoci unpack` of the same layout, entry by
    entry; directory mtimes are left out (umoci stamps implied directories
    and directories it removed whiteouts from with the current time)."""
    import stat
    ref = umoci_rootfs(layout, tag, dest)
    ta, la = tree(mnt)
    tb, lb = tree(ref)
    for t in (ta, tb):
        for k in list(t):
            if k in ignore:
                del t[k]
            elif stat.S_ISDIR(t[k][0]):
                t[k] = t[k][:5] + (None,) + t[k][6:]
    only_a = sorted(set(ta) - set(tb))
    only_b = sorted(set(tb) - set(ta))
    assert not only_a and not only_b, \
        f"only in the mount: {only_a[:20]}\nonly in umoci's: {only_b[:20]}"
    diffs = [(k, ta[k], tb[k]) for k in sorted(ta) if ta[k] != tb[k]]
    assert not diffs, "entries differ (mount, umoci):\n" + "\n".join(
        f"{k}:\n  {x}\n  {y}" for k, x, y in diffs[:20])
    assert la == lb, f"hardlink groups differ: {la} vs {lb}"


# --- writable mounts (issue 3): differential engine fixtures -------------

@pytest.fixture
def ovl_mounts():
    """An overlaydiff.Mounts: every kernel overlay / stratafs /
    fuse-overlayfs mount made through it is unmounted in the finalizer."""
    from overlaydiff import Mounts
    m = Mounts()
    yield m
    m.cleanup()


@pytest.fixture
def ovl_pair(tmp_path, ovl_mounts):
    """ovl_pair(**kw) -> overlaydiff.Pair: the kernel overlay and the
    implementation under test ($STRATA_WR_IMPL) over identical lowers.
    Open handles are closed and both mounts unmounted in the finalizer."""
    from overlaydiff import Pair
    pairs = []

    def make(**kw):
        p = Pair(tmp_path / f"pair{len(pairs)}", ovl_mounts, **kw)
        pairs.append(p)
        return p
    yield make
    for p in pairs:
        p.k.close_all()
        p.i.close_all()
        for d in p.deviations:
            print(f"tolerated {p.impl} deviation {d[0]}: {d[1][:500]}")


# ---------------------------------------------------------------------------
# processes and a loopback registry (test_registry, test_registry_push,
# test_commit_peers, test_commit_zstd_chunked)

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def procs():
    """procs.start(cmd, **kw) -> Popen; each is killed (its process group,
    by pid) and reaped in the finalizer."""
    started = []

    class P:
        @staticmethod
        def start(cmd, **kw):
            kw.setdefault("stdout", subprocess.DEVNULL)
            kw.setdefault("stderr", subprocess.DEVNULL)
            p = subprocess.Popen([str(c) for c in cmd],
                                 start_new_session=True, **kw)
            started.append(p)
            return p
    yield P
    for p in started:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            p.communicate(timeout=10)
        except Exception:
            pass


def wait_port(port, p):
    for _ in range(400):
        if p.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.025)
    return False


@pytest.fixture
def registry(tmp_path, procs):
    """registry(extra_yaml="", tls=None) -> "127.0.0.1:PORT": Debian's
    docker-registry on a free loopback port, storage in tmp_path, plain
    HTTP unless @tls is (certificate, key); @extra_yaml is appended to its
    configuration (auth). Killed in the procs finalizer."""
    count = [0]

    def start(extra="", tls=None):
        count[0] += 1
        data = tmp_path / f"registry-data-{count[0]}"
        for _ in range(3):
            port = free_port()
            conf = tmp_path / f"registry-{port}.yml"
            http = f"http:\n  addr: 127.0.0.1:{port}\n"
            if tls:
                http += (f"  tls:\n    certificate: {tls[0]}\n"
                         f"    key: {tls[1]}\n")
            conf.write_text(
                "version: 0.1\nlog:\n  level: warn\n"
                f"storage:\n  filesystem:\n    rootdirectory: {data}\n"
                + http + extra)
            p = procs.start(["/usr/bin/docker-registry", "serve", conf])
            if wait_port(port, p):
                return f"127.0.0.1:{port}"
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        pytest.fail("docker-registry did not start")
    return start
