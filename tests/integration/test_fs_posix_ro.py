"""POSIX behaviour of a read-only mount: EROFS on every write, stable inode
numbers and readdir offsets, statfs, xattrs, mount(8), refusal of a busy
mountpoint, unprivileged mounts and bad references. The reference answer is
umoci unpack of the same image, read through the kernel."""
import ctypes
import errno
import inspect
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

import conftest
from conftest import (STRATA, STRATAFS, as_uid, assert_same_tree, is_mounted,
                      run, tree, umoci_rootfs, unmount)

N_MANY = 3000


def content(root):
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc/owned").write_text("owned\n")
    os.chown(root / "etc/owned", 1234, 5678)
    (root / "etc/dir").mkdir()
    os.chown(root / "etc/dir", 1234, 5678)
    os.chmod(root / "etc/dir", 0o2750)
    (root / "etc/secret").write_text("secret\n")
    os.chmod(root / "etc/secret", 0o600)
    os.symlink("passwd", root / "etc/link")
    os.link(root / "etc/passwd", root / "etc/passwd.hard")
    os.mkfifo(root / "etc/fifo")
    os.setxattr(root / "etc/passwd", "user.a", b"alpha")
    os.setxattr(root / "etc/passwd", "user.b", b"x" * 500)
    os.setxattr(root / "etc", "user.dir", b"d")
    (root / "many").mkdir()
    for i in range(N_MANY):
        (root / "many" / (f"{i:05d}-" + "n" * 40)).write_text(str(i))
    (root / "suid").write_text("#!/bin/sh\n")
    os.chmod(root / "suid", 0o4755)


def later(root):
    (root / "etc/secret").unlink()
    (root / "etc/new").write_text("new\n")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """One image for the module (as the umoci_image fixture builds them;
    every test only reads it)."""
    base = tmp_path_factory.mktemp("posix-image")
    layout, bundle, tag = base / "img", base / "bundle", "t"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:{tag}"])
    for step in (content, later):
        run(["umoci", "unpack", "--image", f"{layout}:{tag}", bundle])
        step(bundle / "rootfs")
        run(["umoci", "repack", "--image", f"{layout}:{tag}", bundle])
        shutil.rmtree(bundle)
    return layout, tag


@pytest.fixture(scope="module")
def ref_tree(image, tmp_path_factory):
    layout, tag = image
    return umoci_rootfs(layout, tag, tmp_path_factory.mktemp("posix-ref") / "ref")


@pytest.fixture
def mnt(image, mount):
    layout, tag = image
    return mount(f"oci:{layout}:{tag}")


def mount_options(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                sep = fields.index("-")
                return (set(fields[5].split(",")), fields[sep + 1],
                        set(fields[sep + 3].split(",")))
    return None


# --- writes fail with EROFS ----------------------------------------------------

def write_ops(m):
    f, d = m / "etc/passwd", m / "etc"
    return {
        "open O_WRONLY": lambda: os.open(f, os.O_WRONLY),
        "open O_RDWR": lambda: os.open(f, os.O_RDWR),
        "open O_TRUNC": lambda: os.open(f, os.O_WRONLY | os.O_TRUNC),
        "open O_APPEND": lambda: os.open(f, os.O_WRONLY | os.O_APPEND),
        "open O_CREAT new": lambda: os.open(d / "created", os.O_WRONLY | os.O_CREAT, 0o644),
        "open O_CREAT|O_EXCL": lambda: os.open(d / "created", os.O_RDWR | os.O_CREAT | os.O_EXCL),
        "mkdir": lambda: os.mkdir(d / "newdir"),
        "rmdir": lambda: os.rmdir(m / "etc/dir"),
        "unlink": lambda: os.unlink(f),
        "unlink symlink": lambda: os.unlink(m / "etc/link"),
        "rename": lambda: os.rename(f, d / "renamed"),
        "rename over": lambda: os.rename(m / "etc/owned", f),
        "rename dir": lambda: os.rename(m / "etc/dir", m / "etc/dir2"),
        "link": lambda: os.link(f, d / "hard2"),
        "symlink": lambda: os.symlink("x", d / "sym2"),
        "mkfifo": lambda: os.mkfifo(d / "fifo2"),
        "mknod": lambda: os.mknod(d / "node", stat.S_IFREG | 0o644),
        "chmod": lambda: os.chmod(f, 0o777),
        "chmod dir": lambda: os.chmod(d, 0o700),
        "chown": lambda: os.chown(f, 1, 1),
        "lchown symlink": lambda: os.lchown(m / "etc/link", 1, 1),
        "utime": lambda: os.utime(f, (0, 0)),
        "setxattr": lambda: os.setxattr(f, "user.new", b"v"),
        "setxattr replace": lambda: os.setxattr(f, "user.a", b"v"),
        "removexattr": lambda: os.removexattr(f, "user.a"),
        "truncate": lambda: os.truncate(f, 0),
        "truncate grow": lambda: os.truncate(f, 1 << 20),
    }


def test_writes_fail_erofs(mnt, ref_tree):
    failures = []
    for name, op in write_ops(mnt).items():
        try:
            r = op()
        except OSError as e:
            if e.errno != errno.EROFS:
                failures.append(f"{name}: {errno.errorcode[e.errno]}")
        else:
            if isinstance(r, int):
                os.close(r)
            failures.append(f"{name}: succeeded")
    assert not failures, failures
    # ftruncate on a read-only fd, and the tree is untouched
    fd = os.open(mnt / "etc/passwd", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.ftruncate(fd, 0)
        assert e.value.errno in (errno.EINVAL, errno.EBADF, errno.EROFS)
    finally:
        os.close(fd)
    assert_same_tree(mnt, ref_tree)


def test_mount_flags(mnt):
    opts, fstype, super_opts = mount_options(mnt)
    assert fstype.startswith("fuse")
    assert "nosuid" in opts and "nodev" in opts, opts
    sv = os.statvfs(mnt)
    assert sv.f_flag & os.ST_NOSUID and sv.f_flag & os.ST_NODEV


# --- inode numbers -------------------------------------------------------------

def inode_map(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [""] + dirnames + filenames:
            p = os.path.join(dirpath, n) if n else dirpath
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_ino, st.st_nlink if not
                                             stat.S_ISDIR(st.st_mode) else None)
    return out


def test_inode_numbers_stable_and_unique(image, mount, strata, tmp_path):
    layout, tag = image
    ref = f"oci:{layout}:{tag}"
    mp = tmp_path / "mp"
    mp.mkdir()
    first = inode_map(mount(ref, mnt=mp))
    unmount(mp)
    assert not is_mounted(mp)
    # remount, and look up in a different order (deepest first) before walking
    mount(ref, mnt=mp)
    for rel in sorted(first, key=lambda r: -r.count("/")):
        os.lstat(mp / rel)
    second = inode_map(mp)
    assert first == second
    # unique except for hardlinks
    by_ino = {}
    for rel, (ino, _) in first.items():
        by_ino.setdefault(ino, []).append(rel)
    shared = [sorted(v) for v in by_ino.values() if len(v) > 1]
    assert shared == [["etc/passwd", "etc/passwd.hard"]], shared
    # the same image through the store: still the same numbers
    strata("import", ref, "ino:1")
    assert inode_map(mount("ino:1")) == first


# --- readdir offsets ---------------------------------------------------------

class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.opendir.restype = ctypes.c_void_p
libc.opendir.argtypes = [ctypes.c_char_p]
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.readdir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.closedir.argtypes = [ctypes.c_void_p]
libc.lgetxattr.restype = ctypes.c_ssize_t
libc.lgetxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.llistxattr.restype = ctypes.c_ssize_t
libc.llistxattr.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]


class Dir:
    def __init__(self, path):
        self.d = libc.opendir(os.fsencode(path))
        assert self.d, os.strerror(ctypes.get_errno())

    def read(self):
        """(name, d_type, d_ino) or None at the end."""
        ctypes.set_errno(0)
        e = libc.readdir(self.d)
        if not e:
            assert ctypes.get_errno() == 0, os.strerror(ctypes.get_errno())
            return None
        return (e.contents.d_name.decode(errors="surrogateescape"),
                e.contents.d_type, e.contents.d_ino)

    def tell(self):
        return libc.telldir(self.d)

    def seek(self, pos):
        libc.seekdir(self.d, pos)

    def close(self):
        libc.closedir(self.d)


def listing(path):
    """[(position before entry, entry)] for the whole directory."""
    d = Dir(path)
    out = []
    try:
        while True:
            pos = d.tell()
            e = d.read()
            if e is None:
                return out, d.tell()
            out.append((pos, e))
    finally:
        d.close()


@pytest.mark.parametrize("rel", ["many", "etc", "."])
def test_readdir_offsets_stable(mnt, ref_tree, rel):
    path = mnt / rel
    full, end = listing(path)
    names = [e[0] for _, e in full]
    assert sorted(n for n in names if n not in (".", "..")) == \
        sorted(os.listdir(ref_tree / rel))
    assert len(names) == len(set(names))
    # d_ino and d_type agree with lstat
    for _, (n, dtype, ino) in full:
        if n in (".", ".."):
            continue
        st = os.lstat(path / n)
        assert ino == st.st_ino, n
        assert dtype == {stat.S_IFREG: 8, stat.S_IFDIR: 4, stat.S_IFLNK: 10,
                         stat.S_IFIFO: 1}[stat.S_IFMT(st.st_mode)], n
    # a second full listing: same entries, same order, same positions
    assert listing(path) == (full, end)
    # seek to remembered positions, in random order, in one stream
    rnd = random.Random(7)
    d = Dir(path)
    try:
        for i in rnd.sample(range(len(full)), min(len(full), 200)):
            d.seek(full[i][0])
            assert d.read() == full[i][1], i
            if i + 1 < len(full):
                assert d.read() == full[i + 1][1], i
        d.seek(end)
        assert d.read() is None
    finally:
        d.close()
    # a position from one stream is valid in a new stream of the same dir
    if len(full) > 10:
        mid = len(full) // 2
        d = Dir(path)
        try:
            d.seek(full[mid][0])
            rest = []
            while (e := d.read()) is not None:
                rest.append(e)
            assert rest == [e for _, e in full[mid:]]
        finally:
            d.close()


# --- statfs, xattrs --------------------------------------------------------------

def test_statvfs(mnt):
    sv = os.statvfs(mnt)
    assert sv.f_namemax >= 255
    assert sv.f_bsize > 0
    # and on a file inside, and through a path-based call on a subdir
    assert os.statvfs(mnt / "etc/passwd").f_namemax == sv.f_namemax
    assert os.statvfs(mnt / "many").f_bsize == sv.f_bsize
    fd = os.open(mnt / "etc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.fstatvfs(fd).f_namemax == sv.f_namemax
    finally:
        os.close(fd)


def test_statvfs_reports_readonly(mnt):
    """A read-only mount says so in statfs (ST_RDONLY), like any ro mount."""
    assert os.statvfs(mnt).f_flag & os.ST_RDONLY


def test_getxattr_listxattr(mnt, ref_tree):
    for rel in ("etc/passwd", "etc", "etc/link", "etc/owned", "etc/fifo", "many"):
        a, b = mnt / rel, ref_tree / rel
        names = sorted(os.listxattr(a, follow_symlinks=False))
        assert names == sorted(os.listxattr(b, follow_symlinks=False)), rel
        for n in names:
            assert os.getxattr(a, n, follow_symlinks=False) == \
                os.getxattr(b, n, follow_symlinks=False)
    # following the symlink gives the target's
    assert os.getxattr(mnt / "etc/link", "user.a") == b"alpha"
    assert os.listxattr(mnt / "etc/passwd.hard") == os.listxattr(mnt / "etc/passwd")
    with pytest.raises(OSError) as e:
        os.getxattr(mnt / "etc/passwd", "user.nope")
    assert e.value.errno == errno.ENODATA
    with pytest.raises(OSError) as e:
        os.getxattr(mnt / "etc/passwd", "trusted.nope")
    assert e.value.errno in (errno.ENODATA, errno.EOPNOTSUPP)
    # the size protocol: size 0 asks for the length, a short buffer is ERANGE
    p = os.fsencode(mnt / "etc/passwd")
    assert libc.lgetxattr(p, b"user.b", None, 0) == 500
    buf = ctypes.create_string_buffer(10)
    assert libc.lgetxattr(p, b"user.b", buf, 10) == -1
    assert ctypes.get_errno() == errno.ERANGE
    want = libc.llistxattr(p, None, 0)
    assert want == len(b"user.a\0user.b\0")
    assert libc.llistxattr(p, buf, 3) == -1 and ctypes.get_errno() == errno.ERANGE


# --- mount(8), busy mountpoints --------------------------------------------------

@pytest.fixture
def cleanup_mounts():
    """List to register mountpoints made outside the mount fixture."""
    paths = []
    yield paths
    for p in reversed(paths):
        unmount(p)


def test_mount_8_fuse_type(image, ref_tree, store, tmp_path, cleanup_mounts):
    layout, tag = image
    mp = tmp_path / "m8"
    mp.mkdir()
    cleanup_mounts.append(mp)
    assert STRATAFS.is_absolute()
    run(["mount", "-t", "fuse", f"{STRATAFS}#oci:{layout}:{tag}", mp])
    assert is_mounted(mp)
    assert_same_tree(mp, ref_tree)
    # with options through mount -o
    mp2 = tmp_path / "m8b"
    mp2.mkdir()
    cleanup_mounts.append(mp2)
    run([STRATA, "import", f"oci:{layout}:{tag}", "m8:1"])
    run(["mount", "-t", "fuse", "-o", f"ro,root={store}",
         f"{STRATAFS}#m8:1", mp2])
    assert is_mounted(mp2)
    assert_same_tree(mp2, ref_tree)


def test_refuses_mounted_mountpoint(image, mount, ref_tree):
    layout, tag = image
    m = mount(f"oci:{layout}:{tag}")
    before = open("/proc/self/mountinfo").read().count(f" {os.path.realpath(m)} ")
    r = mount(f"oci:{layout}:{tag}", mnt=m, check=False)
    assert r.returncode != 0
    assert r.stderr.startswith("stratafs: ") and str(m) in r.stderr, r.stderr
    after = open("/proc/self/mountinfo").read().count(f" {os.path.realpath(m)} ")
    assert before == after == 1
    assert_same_tree(m, ref_tree)


# --- bad references -----------------------------------------------------------

@pytest.mark.parametrize("bad", [
    "oci:/nonexistent/layout:t",
    "oci:{layout}:no-such-tag",
    "oci:{layout}@sha256:" + "ab" * 32,
    "oci:{layout}@sha256:notahash",
    "oci-archive:/nonexistent.tar",
    "docker-archive:/nonexistent.tar",
    "docker-archive:{layout}/index.json",
    "not-in-store:1",
    "UPPER/Case::bad",
    "",
])
def test_bad_reference(image, mount, strata, bad):
    layout, tag = image
    ref = bad.format(layout=layout)
    r = mount(ref, check=False)
    mp = r.args[-1]
    assert r.returncode != 0
    assert not is_mounted(mp)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stratafs: "), r.stderr
    if ref:
        assert ref.split("@")[0].split(":")[-1] in lines[0] or ref in lines[0], lines[0]
    assert os.listdir(mp) == []
    r = strata("inspect", ref, check=False)
    assert r.returncode != 0 and r.stderr.startswith("strata: "), r.stderr


# --- unprivileged mounts ----------------------------------------------------------

NOBODY = 65534


as_nobody = as_uid(NOBODY)


@pytest.fixture
def nobody_home(image):
    """A directory nobody owns (HOME), with a copy of the image layout."""
    home = Path(tempfile.mkdtemp(prefix="strata-nobody-", dir="/tmp"))
    layout, tag = image
    shutil.copytree(layout, home / "layout")
    for dirpath, dirnames, filenames in os.walk(home):
        for n in [""] + dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), NOBODY, NOBODY)
    os.chmod(home, 0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def nobody_tree(path):
    """tree(@path) computed by a process running as nobody (root cannot
    enter a FUSE mount made by another user without allow_other)."""
    src = ("import os, json\nfrom pathlib import Path\n" +
           inspect.getsource(tree) +
           "\nt, l = tree(Path(%r))\nprint(json.dumps([{k: repr(v) for k, v in t.items()}, l]))\n"
           % str(path))
    r = subprocess.run(["/usr/bin/python3", "-c", src], capture_output=True,
                       text=True, preexec_fn=as_nobody, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_unprivileged_mount_shows_true_owners(image, mount, ref_tree, nobody_home,
                                              dev_fuse_open, tmp_path):
    layout, tag = image
    env = dict(os.environ, HOME=str(nobody_home),
               STRATA_ROOT=str(nobody_home / "store"))
    r = run([STRATA, "import", f"oci:{nobody_home}/layout:{tag}", "mine:1"],
            env=env, preexec_fn=as_nobody, cwd="/")
    assert os.stat(nobody_home / "store").st_uid == NOBODY
    mp = nobody_home / "mnt"
    mp.mkdir()
    os.chown(mp, NOBODY, NOBODY)
    mount("mine:1", mnt=mp, env=env, preexec_fn=as_nobody)
    # the mount belongs to nobody ...
    opts, fstype, super_opts = mount_options(mp)
    assert f"user_id={NOBODY}" in super_opts, super_opts
    # ... and shows the owners recorded in the image, as umoci unpack does
    t, links = nobody_tree(mp)
    want, want_links = tree(ref_tree)
    assert links == [list(g) for g in want_links]
    assert t == {k: repr(v) for k, v in want.items()}
    # spot checks, also as nobody
    code = ("import os;s=[os.lstat(p) for p in %r];"
            "print([(x.st_uid, x.st_gid) for x in s])"
            % [str(mp / "etc/passwd"), str(mp / "etc/owned"), str(mp / "etc/dir")])
    r = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True,
                       text=True, preexec_fn=as_nobody, cwd="/")
    assert r.stdout.strip() == "[(0, 0), (1234, 5678), (1234, 5678)]", r.stderr
    # nobody cannot write either
    r = subprocess.run(["/usr/bin/python3", "-c",
                        "import os;os.mkdir(%r)" % str(mp / "x")],
                       capture_output=True, text=True, preexec_fn=as_nobody, cwd="/")
    assert r.returncode != 0 and "Read-only file system" in r.stderr, r.stderr


def test_unprivileged_mount_from_layout(image, mount, ref_tree, nobody_home,
                                        dev_fuse_open):
    """nobody mounts an oci: layout directly (no store import first)."""
    layout, tag = image
    env = dict(os.environ, HOME=str(nobody_home),
               STRATA_ROOT=str(nobody_home / "store"))
    env.pop("XDG_DATA_HOME", None)
    mp = nobody_home / "mnt2"
    mp.mkdir()
    os.chown(mp, NOBODY, NOBODY)
    mount(f"oci:{nobody_home}/layout:{tag}", mnt=mp, env=env, preexec_fn=as_nobody)
    t, _ = nobody_tree(mp)
    want, _ = tree(ref_tree)
    assert t == {k: repr(v) for k, v in want.items()}
    # nobody's read-only mount is supervised as root's are (fs/resume.c):
    # the worker killed, a file nobody holds open and its working directory
    # keep reading, compared with umoci's tree
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-c", WORKER_KILL_HOLDER, str(mp / "etc")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        preexec_fn=as_nobody, cwd="/")
    try:
        assert holder.stdout.readline() == "ready\n"
        workers = [pid for pid in map(int, filter(str.isdigit,
                                                  os.listdir("/proc")))
                   if proc_is(pid, "stratafs-serve", mp)]
        assert len(workers) == 1, workers
        assert os.stat(f"/proc/{workers[0]}").st_uid == NOBODY
        os.kill(workers[0], signal.SIGKILL)
        holder.stdin.write("read\n")
        holder.stdin.flush()
        got = json.loads(holder.stdout.readline())
    finally:
        holder.kill()
        holder.wait()
    assert got == {"passwd": (ref_tree / "etc/passwd").read_text(),
                   "ls": sorted(os.listdir(ref_tree / "etc"))}
    assert nobody_tree(mp)[0] == t


# Holds etc/passwd open and etc as its cwd; on "read" drops the cached
# pages and listing, reads both again through the (new) worker.
WORKER_KILL_HOLDER = r"""
import json, os, sys
fd = os.open(os.path.join(sys.argv[1], "passwd"), os.O_RDONLY)
os.chdir(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
os.posix_fadvise(dfd, 0, 0, os.POSIX_FADV_DONTNEED)
print(json.dumps({"passwd": os.pread(fd, 1 << 20, 0).decode(),
                  "ls": sorted(os.listdir("."))}), flush=True)
"""


def proc_is(pid, comm, mnt):
    """Is @pid a live @comm process serving @mnt?"""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return name == comm and str(mnt).encode() in cmd


def test_missing_store_name_nonempty_store(image, mount, strata):
    """The same mistake once the store exists: the error names the image and
    lists the tags present."""
    layout, tag = image
    strata("import", f"oci:{layout}:{tag}", "present:1")
    r = mount("absent:1", check=False)
    assert r.returncode != 0 and not is_mounted(r.args[-1])
    assert r.stderr.startswith("stratafs: ") and "absent:1" in r.stderr \
        and "present:1" in r.stderr, r.stderr
