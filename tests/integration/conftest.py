"""Shared fixtures for the integration suite.

Every test gets its own store (STRATA_ROOT in a temp dir) and mounts through
the `mount` fixture, whose finalizer unmounts even when the test fails.
The binaries come from $STRATA_BUILD (tests/run.sh sets it), else build/.
"""
import base64
import hashlib
import http.client
import http.server
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import types
import urllib.parse
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
    """mount(ref, opts=None, mnt=None, check=True, user=None,
    binary=None) -> Path.

    Runs `stratafs [-o opts] ref mnt` (@binary: another stratafs); returns the mountpoint, or the
    CompletedProcess when check=False. Every mount is unmounted in the
    finalizer, whatever the test did."""
    made = []
    counter = [0]

    def do_mount(ref, opts=None, mnt=None, check=True, env=None,
                 preexec_fn=None, binary=None):
        if mnt is None:
            counter[0] += 1
            mnt = tmp_path / f"mnt{counter[0]}"
            mnt.mkdir()
        made.append(Path(mnt))
        cmd = [binary or STRATAFS]
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
def open_dir():
    """A 0755 directory every user can reach (pytest's tmp_path is root's
    alone), for what other users mount, read or write; whatever is left
    mounted below it is unmounted, then it is removed. Ask for it before
    `mount`, so that `mount` unmounts its own first."""
    d = Path(tempfile.mkdtemp(prefix="strata-open-"))
    os.chmod(d, 0o755)
    yield d
    for m in sorted((x.split()[4] for x in open("/proc/self/mountinfo")
                     if x.split()[4].startswith(str(d) + "/")), reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


DEV_FUSE_LOCK = "/tmp/strata-tests-dev-fuse"


@pytest.fixture
def dev_fuse_open():
    """/dev/fuse opened to every user (0666) for the test, as users need
    it to mount; its mode is put back afterwards, by the last test using
    it when several run at once (pytest -n: a shared lock on
    DEV_FUSE_LOCK.users is held while a test needs it; the mode it had
    first is kept in DEV_FUSE_LOCK, under whose exclusive lock both
    steps run)."""
    import fcntl
    import stat
    mutex = os.open(DEV_FUSE_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                    0o600)
    users = os.open(DEV_FUSE_LOCK + ".users",
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        fcntl.flock(users, fcntl.LOCK_SH)
        saved = os.pread(mutex, 16, 0).decode().strip()
        if not saved:
            saved = oct(stat.S_IMODE(os.stat("/dev/fuse").st_mode))
            os.pwrite(mutex, saved.encode() + b"\n", 0)
        os.chmod("/dev/fuse", 0o666)
        fcntl.flock(mutex, fcntl.LOCK_UN)
        yield
    finally:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        fcntl.flock(users, fcntl.LOCK_UN)
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            last = True
        except BlockingIOError:
            last = False
        if last:
            saved = os.pread(mutex, 16, 0).decode().strip()
            if saved:
                os.chmod("/dev/fuse", int(saved, 8))
            os.ftruncate(mutex, 0)
        os.close(users)
        os.close(mutex)


@pytest.fixture(scope="session")
def umoci_built(tmp_path_factory):
    """Layouts umoci_image already built in this session: {key: layout}
    (see umoci_image), in a directory of their own that no test is given."""
    return {"dir": tmp_path_factory.mktemp("umoci-built"), "layouts": {}}


def _umoci_steps_key(steps, name, tag):
    """A key for @steps when each is a function defined at the top level
    of a module (so the same function object does the same thing every
    time: no closure over a test's values), else None."""
    for s in steps:
        if not isinstance(s, types.FunctionType) or s.__closure__ or \
                "<locals>" in s.__qualname__:
            return None
    return (tuple(steps), name, tag)


@pytest.fixture
def umoci_image(tmp_path, umoci_built):
    """umoci_image(steps, name='img', tag='t') -> (layout_dir, 'tag').

    Build an image with umoci, one layer per step: each step is a callable
    given the rootfs Path to modify (umoci repack records the difference,
    deletions as whiteouts). Returns the layout directory and tag.
    When every step is a top-level function, umoci builds the image once
    per session and each test gets its own copy of that layout (tests
    commit into, tag in and damage their layouts)."""
    def build(steps, name="img", tag="t"):
        key = _umoci_steps_key(steps, name, tag)
        if key is None:
            return build_umoci_image(tmp_path, steps, name, tag)
        built = umoci_built["layouts"].get(key)
        if built is None:
            d = umoci_built["dir"] / str(len(umoci_built["layouts"]))
            d.mkdir()
            built, _ = build_umoci_image(d, steps, name, tag)
            umoci_built["layouts"][key] = built
        layout = tmp_path / name
        if layout.exists():
            raise AssertionError(f"umoci_image: {layout} exists already")
        shutil.copytree(built, layout, symlinks=True)
        return layout, tag
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
                mount=True, mount_opts=None):
        """Import @img (an ocibuild.Image or reference) and assert it is
        refused: non-zero exit, one "strata: " line on stderr containing
        every string of @names, no tag, no layer published for @diff_ids
        (default: every layer of @img), nothing written outside. Then the
        same for stratafs on the oci: reference (with -o @mount_opts).
        Return import's stderr."""
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
            m = self.mount(ref, opts=mount_opts, check=False)
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


def as_uid(uid):
    """A preexec_fn: the child runs as user @uid, group @uid, no others."""
    def become():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    return become


def sha256s_as(uid, root, names):
    """The sha256 (hex) of each file @root/NAME as user @uid reads it."""
    r = run(["/usr/bin/python3", "-c",
             "import hashlib, sys\n"
             "for n in sys.argv[2:]:\n"
             "    print(hashlib.sha256(open(sys.argv[1] + '/' + n, 'rb')"
             ".read()).hexdigest())", root, *names],
            preexec_fn=as_uid(uid))
    return r.stdout.split()


def tree_as(root, uid):
    """tree(@root) as user @uid sees it (its group too, no others): root
    cannot enter a FUSE mount another user made without allow_other."""
    import ast
    import inspect

    src = ("import os\nfrom pathlib import Path\n" +
           inspect.getsource(tree) +
           "\nprint(repr(tree(Path(%r))))\n" % str(root))
    r = subprocess.run(["/usr/bin/python3", "-c", src], capture_output=True,
                       text=True, preexec_fn=as_uid(uid), cwd="/")
    assert r.returncode == 0, r.stderr
    return ast.literal_eval(r.stdout)


def assert_same_as_umoci(mnt, layout, tag, dest, ignore=(), uid=None):
    """Compare the mount with `umoci unpack` of the same layout, entry by
    entry; directory mtimes are left out (umoci stamps implied directories
    and directories it removed whiteouts from with the current time).
    @uid: the mount as that user reads it (tree_as())."""
    import stat
    ref = umoci_rootfs(layout, tag, dest)
    ta, la = tree(mnt) if uid is None else tree_as(mnt, uid)
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


class Procs:
    """start(cmd, **kw) -> Popen in a session of its own; stop(p) kills
    its process group (by pid) and reaps it; stop_all() every one."""

    def __init__(self):
        self.started = []

    def start(self, cmd, **kw):
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen([str(c) for c in cmd], start_new_session=True,
                             **kw)
        self.started.append(p)
        return p

    @staticmethod
    def stop(p):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            p.communicate(timeout=10)
        except Exception:
            pass

    def stop_all(self):
        for p in self.started:
            self.stop(p)
        self.started = []


@pytest.fixture
def procs():
    """procs.start(cmd, **kw) -> Popen; each is killed (its process group,
    by pid) and reaped in the finalizer."""
    p = Procs()
    yield p
    p.stop_all()


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


class Registry:
    """Debian's docker-registry on a free loopback port (start_registry):
    addr "127.0.0.1:PORT"; stop() and start() again on the same port,
    configuration and storage (a registry that goes away and returns)."""

    def __init__(self, procs, conf, port):
        self.procs, self.conf, self.port = procs, conf, port
        self.addr = f"127.0.0.1:{port}"
        self.p = None

    def start(self):
        # REGISTRY_* variables are configuration to docker-registry
        # (REGISTRY_AUTH_FILE, for strata, would be auth.file)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("REGISTRY_")}
        with open(Path(self.conf).with_suffix(".log"), "ab") as log:
            self.p = self.procs.start(["/usr/bin/docker-registry", "serve",
                                       self.conf], stderr=log, env=env)
        return wait_port(self.port, self.p)

    def stop(self):
        self.procs.stop(self.p)


def start_registry(base, procs, extra="", tls=None):
    """A Registry with storage in directory @base (created), plain HTTP
    unless @tls is (certificate, key); @extra is appended to its
    configuration (auth)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        port = free_port()
        conf = base / f"registry-{port}.yml"
        http = f"http:\n  addr: 127.0.0.1:{port}\n"
        if tls:
            http += (f"  tls:\n    certificate: {tls[0]}\n"
                     f"    key: {tls[1]}\n")
        conf.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n"
            + http + extra)
        reg = Registry(procs, conf, port)
        if reg.start():
            return reg
        reg.stop()
    pytest.fail("docker-registry did not start")


@pytest.fixture
def registry(tmp_path, procs):
    """registry(extra_yaml="", tls=None) -> "127.0.0.1:PORT": Debian's
    docker-registry on a free loopback port, storage in tmp_path, plain
    HTTP unless @tls is (certificate, key); @extra_yaml is appended to its
    configuration (auth). Killed in the procs finalizer."""
    count = [0]

    def start(extra="", tls=None):
        count[0] += 1
        return start_registry(tmp_path / f"registry-{count[0]}", procs,
                              extra, tls).addr
    return start


# ---------------------------------------------------------------------------
# HTTP servers beside a registry: a token server, a fault-injecting proxy,
# a blob store a registry redirects to (test_registry, test_lazy_registry)

class Servers:
    """add(httpserver): served from a thread; stop_all() shuts them down."""

    def __init__(self):
        self.started = []

    def add(self, srv):
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        self.started.append((srv, t))
        return srv

    def stop_all(self):
        for srv, t in self.started:
            srv.shutdown()
            srv.server_close()
            t.join(10)
        self.started = []


@pytest.fixture
def servers():
    """servers.add(httpserver): served from a thread, shut down in the
    finalizer."""
    s = Servers()
    yield s
    s.stop_all()


def token_signer(d):
    """A key and self-signed certificate for a token server, made by
    openssl in directory @d (created): (key.pem, cert.pem, cert DER)."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", d / "key.pem", "-out", d / "cert.pem", "-days", "2",
         "-subj", "/CN=strata token signer"])
    der = subprocess.run(["openssl", "x509", "-in", str(d / "cert.pem"),
                          "-outform", "DER"], capture_output=True,
                         check=True).stdout
    return d / "key.pem", d / "cert.pem", der


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class TokenServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, key, cert_der, service, creds):
        super().__init__(("127.0.0.1", 0), TokenHandler)
        self.key, self.cert_der = key, cert_der
        self.service, self.creds = service, creds
        self.seen = []
        self.expires_in = 300   # what the answer says, and the JWT's exp
        # the JWT's exp is ceil(now) + (valid_for or expires_in) - leeway:
        # docker-registry accepts a token up to 60 s past its exp
        # (distribution's Leeway), so leeway=60 has it refuse the token
        # once expires_in has run out (within a second)
        self.valid_for = None
        self.leeway = 0
        self.down = False       # answer 503: a token server that is down


class TokenHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        srv = self.server
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        auth = self.headers.get("Authorization", "")
        user = None
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            if (u, p) == srv.creds:
                user = u
        srv.seen.append((q.get("scope", []), q.get("service", []), user))
        if srv.down:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if user is None:
            self.send_response(401)
            self.end_headers()
            return
        access = []
        for s in q.get("scope", []):
            kind, name, actions = s.split(":")
            access.append({"type": kind, "name": name,
                           "actions": actions.split(",")})
        now = int(time.time())
        exp = math.ceil(time.time()) + (srv.valid_for or srv.expires_in) \
            - srv.leeway
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(srv.cert_der).decode()]}
        claims = {"iss": "strata-test-issuer", "sub": user,
                  "aud": srv.service, "exp": exp, "nbf": now - 10,
                  "iat": now, "jti": f"{now}-{len(srv.seen)}",
                  "access": access}
        signing = (b64url(json.dumps(header).encode()) + "." +
                   b64url(json.dumps(claims).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign",
                              str(srv.key)], input=signing.encode(),
                             capture_output=True, check=True).stdout
        body = json.dumps({"token": signing + "." + b64url(sig),
                           "expires_in": srv.expires_in,
                           "issued_at": time.strftime(
                               "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
                          ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Proxy(http.server.ThreadingHTTPServer):
    """Plain HTTP reverse proxy to @upstream. self.faults: list of
    (predicate(path, n) -> bool, action) consumed in order; actions:
    "cut" (half the body, then close), "cut-ignore-range" (cut, and the
    next request for the path is sent upstream without its Range),
    "stall" (half, then silence), "429", "500", "flip" (one byte
    changed), "flip-mtime" (byte 4 changed: in a gzip blob, its header's
    MTIME, so the stream still inflates to the same tar), "long" (body +
    100 bytes), "redirect" (307 to
    self.other + path), "no-range" (sent upstream without its Range:
    a 200 with the whole blob, as a server ignoring Range answers).
    Blob requests in flight are counted (inflight, max_inflight, under
    cond); while self.hold is clear they wait for it to be set.
    self.statuses: (path, status) of each answer from upstream."""
    daemon_threads = True

    def __init__(self, upstream):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream = upstream
        self.faults = []
        self.log = []
        self.statuses = []
        self.lock = threading.Lock()
        self.require_basic = None
        self.drop_range_for = set()
        self.other = None
        self.stall_event = threading.Event()
        self.slow = False
        self.forward_auth = False
        self.cond = threading.Condition()
        self.inflight = self.max_inflight = 0
        self.hold = threading.Event()
        self.hold.set()


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def fetch_upstream(self, path, headers):
        c = http.client.HTTPConnection(*self.server.upstream, timeout=30)
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r, body

    def do_GET(self):
        srv = self.server
        if "/blobs/" not in self.path:
            return self.answer()
        with srv.cond:
            srv.inflight += 1
            srv.max_inflight = max(srv.max_inflight, srv.inflight)
            srv.cond.notify_all()
        try:
            srv.hold.wait(60)
            self.answer()
        finally:
            with srv.cond:
                srv.inflight -= 1
                srv.cond.notify_all()

    def answer(self):
        srv = self.server
        path = self.path
        hdrs = {k: v for k, v in self.headers.items()
                if k.lower() in ("accept", "range", "authorization")}
        with srv.lock:
            srv.log.append((path, dict(self.headers)))
            n = sum(1 for p, _ in srv.log if p == path)
            action = None
            for i, (pred, act) in enumerate(srv.faults):
                if pred(path, n):
                    action = act
                    del srv.faults[i]
                    break
            if path in srv.drop_range_for or action == "no-range":
                hdrs.pop("Range", None)
                srv.drop_range_for.discard(path)
        if srv.require_basic and self.headers.get("Authorization") != \
                srv.require_basic:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="proxy"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if action in ("429", "500"):
            body = b'{"errors":[{"code":"TOOMANYREQUESTS"}]}'
            self.send_response(int(action))
            if action == "429":
                self.send_header("Retry-After", "1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if action == "redirect":
            self.send_response(307)
            self.send_header("Location", srv.other + path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not srv.forward_auth:
            hdrs.pop("Authorization", None)
        r, body = self.fetch_upstream(path, hdrs)
        with srv.lock:
            srv.statuses.append((path, r.status))
        if action == "flip" and body:
            body = body[:len(body) // 2] + bytes([body[len(body) // 2] ^ 1]) \
                + body[len(body) // 2 + 1:]
        if action == "flip-mtime" and len(body) > 4:
            body = body[:4] + bytes([body[4] ^ 0x40]) + body[5:]
        if action == "long":
            body = body + b"x" * 100
        if action == "huge":
            body = b" " * (5 << 20) + body
        if action == "dcd":
            r.headers.replace_header(
                "Docker-Content-Digest", "sha256:" + "1" * 64)
        if action == "schema1":
            # a malformed Docker schema 1 ("fsLayers"/"history"): served
            # as signed, with no signature to say what it signs (schema 1
            # itself is read: test_image_tools_dir.py)
            body = json.dumps({
                "schemaVersion": 1, "name": "test/img", "tag": "1",
                "architecture": "amd64",
                "fsLayers": [{"blobSum": "sha256:" + "a" * 64}],
                "history": [{"v1Compatibility": "{}"}],
                "signatures": []}).encode()
            r.headers.replace_header(
                "Content-Type",
                "application/vnd.docker.distribution.manifest.v1+prettyjws")
            r.headers.replace_header(
                "Docker-Content-Digest",
                "sha256:" + hashlib.sha256(body).hexdigest())
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() in ("content-type", "docker-content-digest",
                             "content-range", "www-authenticate",
                             "docker-distribution-api-version"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if action in ("cut", "cut-ignore-range", "stall"):
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            if action == "cut-ignore-range":
                with srv.lock:
                    srv.drop_range_for.add(path)
            if action == "stall":
                srv.stall_event.wait(30)
            self.close_connection = True
            return
        if srv.slow:
            for i in range(0, len(body), 4096):
                self.wfile.write(body[i:i + 4096])
                self.wfile.flush()
                time.sleep(0.01)
            return
        self.wfile.write(body)


class BlobServer(http.server.ThreadingHTTPServer):
    """The other host a blob is redirected to (storage, as registries
    use): serves /v2/.../blobs/sha256:HEX from the OCI layout @layout
    (a Range of one span: 206) and records the headers it was sent."""
    daemon_threads = True

    def __init__(self, layout):
        super().__init__(("127.0.0.1", 0), BlobHandler)
        self.layout = Path(layout)
        self.seen = []


class BlobHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        self.server.seen.append((self.path, dict(self.headers)))
        hexd = self.path.rsplit("sha256:", 1)[-1]
        p = self.server.layout / "blobs/sha256" / hexd
        if "/" in hexd or not p.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = p.read_bytes()
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and "," not in rng:
            a, _, z = rng[6:].partition("-")
            a, z = int(a), min(int(z) if z else len(body) - 1,
                               len(body) - 1)
            self.send_response(206)
            self.send_header("Content-Range",
                             f"bytes {a}-{z}/{len(body)}")
            body = body[a:z + 1]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serving_pid(pid):
    """The process that serves the mount of stratafs @pid: its child
    stratafs-serve when it supervises a read-only mount (fs/resume.c),
    else itself."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            kids = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        for k in kids.split():
            try:
                if Path(f"/proc/{k}/comm").read_text().strip() == \
                        "stratafs-serve":
                    return int(k)
            except OSError:
                pass
    return pid


# ---------------------------------------------------------------------------
# order: the longest files first, so that pytest -n (tests/run.sh: xdist
# workers taking whole files) does not end with one worker still in a
# long file while the other waits; the order of tests within a file, and
# of the other files, is unchanged. Measured: pytest --durations=0, summed
# per file.

LONGEST_FILES = [
    "test_hostile_layers.py",
    "test_store_lifecycle.py",
    "test_tar_differential.py",
    "test_commit_peers.py",
    "test_podman_users.py",
    "test_registry.py",
    "test_image_tools_save.py",
    "test_hostile_users.py",
    "test_fs_posix_ro.py",
    "test_verify.py",
    "test_registry_push.py",
    "test_image_tools_layers.py",
]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda it: rank.get(it.path.name, len(rank)))
