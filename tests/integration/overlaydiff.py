"""Differential engine for writable overlay mounts (issue 3).

The same operation sequence is applied to
  (a) the kernel overlay:  mount -t overlay -o lowerdir=L1:L2,upperdir=U1,workdir=W1
  (b) the implementation under test, selected by $STRATA_WR_IMPL:
        stratafs (default):  stratafs -o lowerdir=L1:L2,upperdir=U2,workdir=W2 none M2
        fuse-overlayfs:      fuse-overlayfs -o lowerdir=...,upperdir=...,workdir=... M2
over identical lower directories.  Each operation's result or errno, the
visible trees, and (after unmounting) the upper directories are compared;
then each upper directory is read back by the other side (cross-mount) and
the implementation is remounted on its own upper (persistence).

What is normalised because it is legitimately filesystem-specific: directory
st_size, st_nlink of directories, st_dev, st_ino values (only hardlink
grouping and per-file stability are compared), atime, ctime, and mtimes that
are "now" (any mtime after 2017 is shown as "recent"; every time the lowers
or the operations set explicitly is before that, so those are compared to
the nanosecond).  Whiteouts may be a char device 0:0 or a `.wh.` file;
opaque may be trusted./user.overlay.opaque or a `.wh..wh..opq` file; a
directory rename may be a redirect or a copy-up of the tree (the upper
directories are then compared by what they mean, via the cross-mounts, not
marker by marker).
"""
import ctypes
import ctypes.util
import errno
import hashlib
import mmap
import os
import pickle
import random
import shutil
import stat
import subprocess
import time
from pathlib import Path

from conftest import STRATAFS, is_mounted

IMPL = os.environ.get("STRATA_WR_IMPL", "stratafs")
IMPLS = ("stratafs", "fuse-overlayfs")
assert IMPL in IMPLS, f"STRATA_WR_IMPL must be one of {IMPLS}"

# The reference. index=on so that hardlinks survive copy-up (index=off
# breaks them, which is not what the issue asks for); redirect_dir=on so
# that renaming a lower directory works instead of EXDEV.
KERNEL_OPTS = "redirect_dir=on,index=on,metacopy=off"
# Reading an upper written by the implementation: metacopy=on because it may
# hold metadata-only copy-ups; index=off because the upper was not made
# with this lower/work pair.
KERNEL_READ_OPTS = "redirect_dir=on,index=off,metacopy=on"

RECENT_NS = 1_500_000_000 * 10**9       # 2017-07-14: "now" times are after
T0 = 1_000_000_000 * 10**9              # 2001: lower entry times start here

# Checks the implementation under test may fail with a known, reported
# deviation.  Empty for stratafs: every check is hard there.
KNOWN_DEVIATIONS = {
    "stratafs": set(),
    # Found with this harness (fuse-overlayfs 1.10, see the report):
    "fuse-overlayfs": {
        # copy-up of a directory (as the parent of a copied-up file, or by
        # chmod/chown/setxattr of the directory) sets its mtime to now
        "tree:dir-mtime",
        # rename of a lower (or merged) directory fails with EXDEV, as the
        # kernel overlay without redirect_dir (mv then copies)
        "result:EXDEV",
        # a lower file with several names: after one name is copied up the
        # names are separate files (chmod/setxattr/write through one name
        # not seen through the other once the inode is forgotten, and
        # never after a remount); so its runs use lowers without hardlinks
        "lower-hardlinks",
        # opaque dirs are marked with `.wh..wh..opq` and `.wh..opq` files
        # as well, which the kernel overlay shows as ordinary files
        "kernel-reads-upper:extra",
        # an upper dir with trusted.overlay.origin (the kernel sets it on
        # copy-up, and on the upper root with index=on) hides all lowers
        "reads-kernel-upper:missing", "reads-kernel-upper:links",
        # a dir's mtime changes on remount (copied up lazily, at now)
        "remount:dir-mtime", "kernel-reads-upper:dir-mtime",
    },
}


class Divergence(AssertionError):
    pass


# --------------------------------------------------------------------------
# libc helpers

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def renameat2(src, dst, flags=0):
    r = _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD,
                        os.fsencode(dst), ctypes.c_uint(flags))
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), src)


def utimensat(path, atime, mtime, follow=False):
    """atime/mtime: ns int, "NOW" or "OMIT"."""
    ts = (_Timespec * 2)()
    for i, t in enumerate((atime, mtime)):
        if t == "NOW":
            ts[i].tv_sec, ts[i].tv_nsec = 0, UTIME_NOW
        elif t == "OMIT":
            ts[i].tv_sec, ts[i].tv_nsec = 0, UTIME_OMIT
        else:
            ts[i].tv_sec, ts[i].tv_nsec = divmod(t, 10**9)
    r = _libc.utimensat(AT_FDCWD, os.fsencode(path), ts,
                        0 if follow else AT_SYMLINK_NOFOLLOW)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)


# --------------------------------------------------------------------------
# mounts

def _daemon_pids(mnt):
    """Pids of processes whose command line names @mnt (a FUSE daemon)."""
    mnt = os.fsencode(os.path.realpath(mnt))
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if any(os.path.realpath(a) == mnt for a in args if a.startswith(b"/")):
            pids.append(int(d))
    return pids


def _wait_gone(pids, limit=30.0):
    """Wait (bounded, not a timing assertion) for @pids to exit."""
    end = time.monotonic() + limit
    for pid in pids:
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(") ", 1)[1].startswith("Z"):
                        break
            except OSError:
                break
            time.sleep(0.02)


class Mounts:
    """Every mount made through this object is unmounted by cleanup()."""

    def __init__(self):
        self.points = []

    def _track(self, mnt):
        self.points.append(Path(mnt))

    def kernel(self, lowers, upper, work, mnt, opts=KERNEL_OPTS):
        o = "lowerdir=" + ":".join(map(str, lowers))
        if upper is not None:
            o += f",upperdir={upper},workdir={work}"
        if opts:
            o += "," + opts
        self._track(mnt)
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", o,
                            str(mnt)], capture_output=True, text=True)
        if r.returncode != 0:
            dmesg = subprocess.run(["dmesg"], capture_output=True,
                                   text=True).stdout.splitlines()[-5:]
            raise AssertionError(f"kernel overlay mount failed: {r.stderr}"
                                 f"\n{chr(10).join(dmesg)}")
        return Path(mnt)

    def impl_cmd(self, lowers, upper, work, mnt, impl=IMPL, extra=""):
        o = "lowerdir=" + ":".join(map(str, lowers))
        if upper is not None:
            o += f",upperdir={upper},workdir={work}"
        if extra:
            o += "," + extra
        if impl == "stratafs":
            return [str(STRATAFS), "-o", o, "none", str(mnt)]
        return ["fuse-overlayfs", "-o", o, str(mnt)]

    def impl(self, lowers, upper, work, mnt, impl=IMPL, extra=""):
        cmd = self.impl_cmd(lowers, upper, work, mnt, impl, extra)
        self._track(mnt)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not is_mounted(mnt):
            raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}, "
                                 f"mounted={is_mounted(mnt)}): {r.stderr}")
        return Path(mnt)

    def track(self, mnt):
        """Track a mount made elsewhere (e.g. a foreground daemon)."""
        self._track(mnt)

    def umount(self, mnt):
        """Unmount cleanly (not lazily) and wait for a FUSE daemon to exit,
        so the upper directory is final."""
        mnt = Path(mnt)
        if not is_mounted(mnt):
            return
        pids = _daemon_pids(mnt)
        r = subprocess.run(["umount", str(mnt)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise AssertionError(f"umount {mnt}: {r.stderr}")
        _wait_gone(pids)

    def cleanup(self):
        for m in reversed(self.points):
            for _ in range(50):
                if not is_mounted(m):
                    break
                r = subprocess.run(["umount", str(m)], capture_output=True)
                if r.returncode != 0:
                    subprocess.run(["fusermount3", "-u", "-z", str(m)],
                                   capture_output=True)
                    subprocess.run(["umount", "-l", str(m)],
                                   capture_output=True)
                time.sleep(0.02)


# --------------------------------------------------------------------------
# lower directories

class Blob(bytes):
    """Data argument of an operation; short repr for op logs."""

    def __repr__(self):
        return f"<{len(self)}B {hashlib.sha256(self).hexdigest()[:8]}>"


def pattern(n, seed):
    """@n deterministic bytes (a Blob)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return Blob(out[:n])


def _whiteout(path, style):
    if style == "chardev":
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    else:
        p = Path(path)
        (p.parent / (".wh." + p.name)).write_bytes(b"")


def _opaque(path, style):
    if style == "chardev":
        os.setxattr(path, "trusted.overlay.opaque", b"y")
    else:
        (Path(path) / ".wh..wh..opq").write_bytes(b"")


def _file(root, rel, data, mode=0o644, uid=0, gid=0, xattrs=()):
    p = root / rel
    p.write_bytes(data)
    os.chown(p, uid, gid)
    os.chmod(p, mode)
    for k, v in xattrs:
        os.setxattr(p, k, v)
    return p


def build_lowers(base, style="chardev", hardlinks=True):
    """Three lower directories, top first, over the name space a..e.

    style "chardev": overlay whiteouts (char 0:0) and trusted.overlay.opaque;
    style "wh": `.wh.NAME` and `.wh..wh..opq` files (what an OCI layer has).
    Returns [L1, L2, L3]."""
    base = Path(base)
    L1, L2, L3 = (base / n for n in ("L1", "L2", "L3"))
    for d in (L1, L2, L3):
        d.mkdir(parents=True)

    # bottom
    (L3 / "a/c").mkdir(parents=True)
    _file(L3, "a/a", b"L3:a/a\n")
    _file(L3, "a/b", pattern(65536 + 17, "a/b"), 0o600, 1000, 1000,
          [("user.x", b"1")])
    _file(L3, "a/c/a", b"L3:a/c/a\n", 0o755)
    os.symlink("../a", L3 / "a/c/b")
    os.mkfifo(L3 / "a/d", 0o640)
    _file(L3, "b", pattern(262144 + 3, "b"), 0o644, 0, 0,
          [("user.big", b"yes"), ("user.empty", b"")])
    (L3 / "c/c/b").mkdir(parents=True)
    _file(L3, "c/a", b"L3:hardlink c/a = c/b\n", 0o664, 7, 8)
    if hardlinks:
        os.link(L3 / "c/a", L3 / "c/b")
    else:
        _file(L3, "c/b", b"L3:hardlink c/a = c/b\n", 0o664, 7, 8)
    _file(L3, "c/c/a", b"L3:c/c/a\n")
    _file(L3, "c/c/b/a", b"L3:c/c/b/a\n")
    for i in range(5):
        _file(L3, f"c/c/b/f{i}", f"f{i}\n".encode())
    os.chown(L3 / "c", 1000, 1001)
    os.chmod(L3 / "c", 0o750)
    _file(L3, "d", b"L3:d (whited out by L2)\n")
    (L3 / "e").mkdir()
    _file(L3, "e/a", b"L3:e/a (hidden by opaque L2 e)\n")
    _file(L3, "e/b", b"L3:e/b\n")
    # hardlinked non-files: a fifo and a symlink with two names each
    (L3 / "f").mkdir()
    os.mkfifo(L3 / "f/p", 0o640)
    os.symlink("../b", L3 / "f/s")
    for a, b in (("f/p", "f/q"), ("f/s", "f/t")):
        if hardlinks:
            os.link(L3 / a, L3 / b, follow_symlinks=False)
        elif a == "f/p":
            os.mkfifo(L3 / b, 0o640)
        else:
            os.symlink("../b", L3 / b)

    # middle
    (L2 / "a").mkdir()
    _file(L2, "a/b", b"L2:a/b\n", 0o640, 2, 3, [("user.y", b"2")])
    _file(L2, "a/e", b"L2:a/e\n")
    _whiteout(L2 / "d", style)
    (L2 / "e").mkdir()
    _opaque(L2 / "e", style)
    _file(L2, "e/c", b"L2:e/c\n", 0o400)
    (L2 / "c").mkdir()
    os.symlink("a", L2 / "c/d")
    os.chown(L2 / "c", 1000, 1001)
    os.chmod(L2 / "c", 0o750)

    # top
    (L1 / "a").mkdir()
    _whiteout(L1 / "a/a", style)
    _file(L1, "a/c", b"L1:a/c file over the L3 dir\n")
    (L1 / "d/b").mkdir(parents=True)
    _file(L1, "d/a", b"L1:d/a\n", 0o4755)
    _file(L1, "d/b/a", b"L1:d/b/a\n")
    _file(L1, "d/d", b"L1:hardlink d/d = d/e\n", 0o600, 5, 6,
          [("user.hl", b"x")])
    if hardlinks:
        os.link(L1 / "d/d", L1 / "d/e")
    else:
        _file(L1, "d/e", b"L1:hardlink d/d = d/e\n", 0o600, 5, 6,
              [("user.hl", b"x")])
    (L1 / "e").mkdir()
    _file(L1, "e/d", b"L1:e/d\n")

    # distinctive nanosecond times from the path (the same in either style)
    for i, L in enumerate((L1, L2, L3)):
        for dirpath, dirnames, filenames in os.walk(L):
            for name in filenames + dirnames + [""]:
                p = Path(dirpath) / name if name else Path(dirpath)
                key = f"{i}:{p.relative_to(L)}"
                t = T0 + int(hashlib.sha256(key.encode()).hexdigest()[:12],
                             16) * 1000 + 7
                os.utime(p, ns=(t, t), follow_symlinks=False)
    return [L1, L2, L3]


# --------------------------------------------------------------------------
# operations

def _enc(e):
    return ("E", errno.errorcode.get(e.errno, str(e.errno)))


def _sha(b):
    return hashlib.sha256(b).hexdigest()[:16]


O_NB = os.O_NONBLOCK | os.O_CLOEXEC


def _no_dev(p):
    """Data ops skip devices (a FUSE mount may be nodev)."""
    st = os.stat(p)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return True
    return False


class Side:
    """One mount being driven: its root and open handles."""

    def __init__(self, root, name):
        self.root = Path(root)
        self.name = name
        self.fds = {}
        self.maps = {}

    def p(self, rel):
        return os.path.join(self.root, rel)

    def close_all(self):
        for m in self.maps.values():
            try:
                m.close()
            except Exception:
                pass
        self.maps.clear()
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def _open(side, rel, flags, mode=0o644):
    return os.open(side.p(rel), flags | O_NB, mode)


def _as_user(side, uid, umask, op):
    """@op run by user @uid (its own group, no others) under @umask, in a
    forked child that enters the mount as root first (so no directory
    above it needs to be searchable by @uid)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            os.chdir(side.root)
            os.umask(umask)
            if uid:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            res = do_op(Side(".", side.name), op)
            with os.fdopen(wfd, "wb") as f:
                pickle.dump(res, f)
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, f"child running {op!r} as {uid} failed"
    return pickle.loads(data)


def do_op(side, op):
    """Apply @op (a tuple) to @side; return ("ok", value) or ("E", ERRNO).
    ("as", UID, UMASK, OP) runs OP as user UID under umask UMASK."""
    name, args = op[0], op[1:]
    if name == "as":
        return _as_user(side, *args)
    try:
        return ("ok", _OPS[name](side, *args))
    except OSError as e:
        return _enc(e)


def _op_create(s, rel, mode=0o644, flags=(), data=b""):
    f = os.O_WRONLY | os.O_CREAT
    for x in flags:
        f |= {"EXCL": os.O_EXCL, "TRUNC": os.O_TRUNC,
              "APPEND": os.O_APPEND}[x]
    fd = _open(s, rel, f, mode)
    try:
        return os.write(fd, data) if data else 0
    finally:
        os.close(fd)


def _op_write(s, rel, off, data):
    if _no_dev(s.p(rel)):
        return "dev"
    fd = _open(s, rel, os.O_WRONLY)
    try:
        return os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def _op_append(s, rel, data):
    if _no_dev(s.p(rel)):
        return "dev"
    fd = _open(s, rel, os.O_WRONLY | os.O_APPEND)
    try:
        n = os.write(fd, data)
        return (n, os.lseek(fd, 0, os.SEEK_CUR))
    finally:
        os.close(fd)


def _op_otrunc(s, rel, data=b""):
    if _no_dev(s.p(rel)):
        return "dev"
    fd = _open(s, rel, os.O_WRONLY | os.O_TRUNC)
    try:
        return os.write(fd, data) if data else 0
    finally:
        os.close(fd)


def _op_truncate(s, rel, size):
    if _no_dev(s.p(rel)):
        return "dev"
    os.truncate(s.p(rel), size)


def _op_fallocate(s, rel, off, length):
    if _no_dev(s.p(rel)):
        return "dev"
    fd = _open(s, rel, os.O_WRONLY)
    try:
        os.posix_fallocate(fd, off, length)
    finally:
        os.close(fd)


def _op_mmapw(s, rel, off, data):
    """MAP_SHARED write of @data at @off, clamped to the file size."""
    if _no_dev(s.p(rel)):
        return "dev"
    fd = _open(s, rel, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return "empty"
        off = min(off, size - 1)
        data = data[:size - off]
        m = mmap.mmap(fd, size, mmap.MAP_SHARED,
                      mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            m[off:off + len(data)] = data
            m.flush()
        finally:
            m.close()
        return (off, len(data))
    finally:
        os.close(fd)


def _op_fsync(s, rel):
    if _no_dev(s.p(rel)):
        return "dev"
    fd = _open(s, rel, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _op_read(s, rel):
    if _no_dev(s.p(rel)):
        return "dev"
    fd = _open(s, rel, os.O_RDONLY)
    try:
        out = bytearray()
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            out += b
        return _sha(out)
    finally:
        os.close(fd)


def _op_mkdir(s, rel, mode=0o755):
    os.mkdir(s.p(rel), mode)


def _op_rmdir(s, rel):
    os.rmdir(s.p(rel))


def _op_unlink(s, rel):
    os.unlink(s.p(rel))


def _op_rmtree(s, rel):
    """rm -rf: returns the errors, not the first."""
    p = s.p(rel)
    if not os.path.lexists(p):
        raise FileNotFoundError(errno.ENOENT, "no", p)
    if os.path.islink(p) or not os.path.isdir(p):
        os.unlink(p)
        return
    shutil.rmtree(p)


def _op_symlink(s, target, rel):
    os.symlink(target, s.p(rel))


def _op_link(s, src, dst):
    os.link(s.p(src), s.p(dst), follow_symlinks=False)


def _op_mkfifo(s, rel, mode=0o644):
    os.mkfifo(s.p(rel), mode)


def _op_mknod(s, rel, major, minor, mode=0o644):
    os.mknod(s.p(rel), stat.S_IFCHR | mode, os.makedev(major, minor))


DEEP_NAME = "x" * 200


def _op_deep(s, rel, depth, action):
    """A chain of @depth directories named DEEP_NAME under @rel, deeper
    than PATH_MAX, reached one directory fd at a time: "make" it (with a
    file, a fifo and a second name of the fifo at the bottom), "stat" the
    bottom, "remove" it all, or "cycle": make, stat and remove."""
    if action == "cycle":
        made = _op_deep(s, rel, depth, "make")
        _op_deep(s, rel, depth, "remove")
        return made
    fds = [os.open(s.p(rel), os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for i in range(depth):
            if action == "make":
                os.mkdir(DEEP_NAME, 0o755, dir_fd=fds[-1])
            fds.append(os.open(DEEP_NAME, os.O_RDONLY | os.O_DIRECTORY,
                               dir_fd=fds[-1]))
        b = fds[-1]
        if action == "make":
            fd = os.open("f", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=b)
            os.write(fd, b"deep\n")
            os.close(fd)
            os.mkfifo("p", 0o600, dir_fd=b)
            os.link("p", "q", src_dir_fd=b, dst_dir_fd=b)
        if action == "remove":
            for n in ("f", "p", "q"):
                os.unlink(n, dir_fd=b)
            for i in range(depth, 0, -1):
                os.rmdir(DEEP_NAME, dir_fd=fds[i - 1])
            return None
        out = []
        # a fresh open: the directory changed since fds[-1] was opened
        fds.append(os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=b))
        for n in sorted(os.listdir(fds[-1])):
            st = os.lstat(n, dir_fd=b)
            out.append((n, stat.filemode(st.st_mode), st.st_nlink,
                        st.st_size))
        return (sum(len(DEEP_NAME) + 1 for _ in range(depth)), out)
    finally:
        for fd in fds:
            os.close(fd)


def _op_mksock(s, rel, mode=0o755):
    os.mknod(s.p(rel), stat.S_IFSOCK | mode)


def _op_rename(s, src, dst, flags=0):
    f = 0
    if flags == "NOREPLACE":
        f = RENAME_NOREPLACE
    elif flags == "EXCHANGE":
        f = RENAME_EXCHANGE
    renameat2(s.p(src), s.p(dst), f)


def _op_chmod(s, rel, mode):
    os.chmod(s.p(rel), mode)


def _op_chown(s, rel, uid, gid):
    os.chown(s.p(rel), uid, gid, follow_symlinks=False)


def _op_utime(s, rel, atime, mtime):
    utimensat(s.p(rel), atime, mtime)


def _op_setxattr(s, rel, key, value, flags=0):
    os.setxattr(s.p(rel), key, value, flags, follow_symlinks=False)


def _op_removexattr(s, rel, key):
    os.removexattr(s.p(rel), key, follow_symlinks=False)


def _op_getxattr(s, rel, key):
    return os.getxattr(s.p(rel), key, follow_symlinks=False)


def _op_statfs(s, rel):
    st = os.statvfs(s.p(rel))
    return st.f_bsize > 0 and st.f_blocks > 0


def _op_stat(s, rel):
    st = os.lstat(s.p(rel))
    return _entry(s.p(rel), st, content=False)


def _op_listdir(s, rel):
    return sorted(os.listdir(s.p(rel)))


def _op_readlink(s, rel):
    return os.readlink(s.p(rel))


# handles: fds kept open across operations
def _op_open(s, h, rel, flags=("RDWR",), mode=0o644):
    f = 0
    for x in flags:
        f |= getattr(os, "O_" + x)
    s.fds[h] = _open(s, rel, f, mode)


def _op_hwrite(s, h, off, data):
    return os.pwrite(s.fds[h], data, off)


def _op_hread(s, h, off, n):
    return _sha(os.pread(s.fds[h], n, off))


def _op_hfstat(s, h):
    st = os.fstat(s.fds[h])
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size,
            st.st_nlink)


def _op_hftruncate(s, h, size):
    os.ftruncate(s.fds[h], size)


def _op_hmmap(s, h):
    fd = s.fds[h]
    s.maps[h] = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED,
                          mmap.PROT_READ | mmap.PROT_WRITE)


def _op_hmwrite(s, h, off, data):
    s.maps[h][off:off + len(data)] = data


def _op_hmread(s, h, off, n):
    return _sha(s.maps[h][off:off + n])


def _op_hmunmap(s, h):
    s.maps.pop(h).close()


def _op_close(s, h):
    os.close(s.fds.pop(h))


def _rename_by_copy(s, op):
    """rename(2) emulated by copy and delete, as mv(1) does on EXDEV."""
    src, dst, flags = s.p(op[1]), s.p(op[2]), op[3] if len(op) > 3 else 0
    try:
        if flags == "EXCHANGE":
            if not (os.path.lexists(src) and os.path.lexists(dst)):
                return ("E", "ENOENT")
            ta, tb = src + ".xchg", dst + ".xchg"
            for a, b in ((src, ta), (dst, tb)):
                r = subprocess.run(["cp", "-a", a, b], capture_output=True)
                if r.returncode:
                    return ("E", "EIO")
            for a in (src, dst):
                if os.path.isdir(a) and not os.path.islink(a):
                    shutil.rmtree(a)
                else:
                    os.unlink(a)
            os.rename(ta, dst)
            os.rename(tb, src)
            return ("ok", None)
        if os.path.lexists(dst):
            if flags == "NOREPLACE":
                return ("E", "EEXIST")
            if os.path.isdir(dst) and not os.path.islink(dst):
                if os.listdir(dst):
                    return ("E", "ENOTEMPTY")
                os.rmdir(dst)
            else:
                return ("E", "ENOTDIR")
        r = subprocess.run(["cp", "-a", src, dst], capture_output=True)
        if r.returncode:
            return ("E", "EIO")
        shutil.rmtree(src)
        return ("ok", None)
    except OSError as e:
        return _enc(e)


_OPS = {k[4:]: v for k, v in globals().items() if k.startswith("_op_")}
OP_NAMES = sorted(_OPS)

# ops whose first path argument is a file whose inode must not change
_STABLE_INO = {"write", "append", "otrunc", "truncate", "fallocate", "mmapw",
               "chmod", "chown", "utime", "setxattr", "removexattr", "fsync"}


# --------------------------------------------------------------------------
# trees

# xattrs an implementation keeps for itself in its upper directory, that
# another reader of the upper cannot know to hide
PRIVATE_XATTRS = {"fuse-overlayfs": ("user.fuseoverlayfs.",),
                  "stratafs": ()}


def _xattrs(p, hide=()):
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for x in sorted(names):
        if not x.startswith("user.") or x.startswith(tuple(hide)):
            continue
        try:
            v = os.getxattr(p, x, follow_symlinks=False)
            out.append((x, v if len(v) <= 16 else Blob(v)))
        except OSError as e:
            out.append((x, _enc(e)))
    return tuple(out)


def _mtime(ns):
    return ns if ns < RECENT_NS else "recent"


def _entry(p, st, content=True, hide=()):
    kind = stat.S_IFMT(st.st_mode)
    extra = None
    if stat.S_ISLNK(st.st_mode):
        extra = os.readlink(p)
    elif stat.S_ISREG(st.st_mode) and content:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        extra = h.hexdigest()[:16]
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
    isdir = stat.S_ISDIR(st.st_mode)
    return (stat.filemode(st.st_mode), st.st_uid, st.st_gid,
            None if isdir else st.st_size, _mtime(st.st_mtime_ns), extra,
            _xattrs(p, hide), None if isdir else st.st_nlink)


ENTRY_FIELDS = ("mode", "uid", "gid", "size", "mtime", "content", "xattrs",
                "nlink")


def snapshot(root, hide=()):
    """{path: entry}, [hardlink groups] of the visible tree under @root.
    Walks by lstat, not by readdir's d_type; a name readdir lists that
    lstat cannot find is recorded as ("ghost", errno)."""
    root = str(root)
    out = {"": _entry(root, os.lstat(root), hide=hide)}
    inodes = {}
    todo = [""]
    while todo:
        rel = todo.pop()
        d = os.path.join(root, rel)
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            out[rel + "/"] = ("unlistable", errno.errorcode[e.errno])
            continue
        for name in names:
            r = os.path.join(rel, name) if rel else name
            p = os.path.join(root, r)
            try:
                st = os.lstat(p)
            except OSError as e:
                out[r] = ("ghost", errno.errorcode[e.errno])
                continue
            out[r] = _entry(p, st, hide=hide)
            if stat.S_ISDIR(st.st_mode):
                todo.append(r)
            else:
                inodes.setdefault(st.st_ino, []).append(r)
    links = sorted(sorted(v) for v in inodes.values() if len(v) > 1)
    return out, links


def diff_snapshots(a, b, an="kernel", bn=IMPL, cats=None):
    """Human-readable list of differences between two snapshots; the
    categories ("missing", "extra", a field name, "links") go to @cats."""
    (ta, la), (tb, lb) = a, b
    out = []
    cats = set() if cats is None else cats
    for k in sorted(set(ta) | set(tb)):
        if k not in tb:
            out.append(f"{k}: only on {an}: {ta[k]}")
            cats.add("missing")
        elif k not in ta:
            out.append(f"{k}: only on {bn}: {tb[k]}")
            cats.add("extra")
        elif ta[k] != tb[k]:
            d = []
            for f, x, y in zip(ENTRY_FIELDS, ta[k], tb[k]):
                if x != y:
                    d.append(f"{f} {x!r} vs {y!r}")
                    cats.add(("dir-" if ta[k][0][0] == "d" else "") + f)
            out.append(f"{k}: " + "; ".join(d))
    if la != lb:
        out.append(f"hardlink groups: {an} {la} vs {bn} {lb}")
        cats.add("links")
    return out


# --------------------------------------------------------------------------
# upper directories

def _is_whiteout_st(st):
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _getx(p, name):
    try:
        return os.getxattr(p, name, follow_symlinks=False)
    except OSError:
        return None


def _dir_opaque(p):
    for x in ("trusted.overlay.opaque", "user.overlay.opaque",
              "user.fuseoverlayfs.opaque"):
        if _getx(p, x) == b"y":
            return True
    return os.path.lexists(os.path.join(p, ".wh..wh..opq")) or \
        os.path.lexists(os.path.join(p, ".wh..opq"))


def _layer_whiteout(d, name):
    p = os.path.join(d, name)
    try:
        st = os.lstat(p)
        return _is_whiteout_st(st)
    except OSError:
        return os.path.lexists(os.path.join(d, ".wh." + name))


def lower_kind(lowers, rel):
    """The type ('dir', 'other') of the merged lower entry at @rel, or None."""
    dirs = [str(L) for L in lowers]
    parts = [x for x in rel.split("/") if x]
    kind = "dir"
    for i, name in enumerate(parts):
        nxt = []
        kind = None
        for d in dirs:
            if _layer_whiteout(d, name):
                break
            p = os.path.join(d, name)
            try:
                st = os.lstat(p)
            except OSError:
                if _dir_opaque(d):
                    break
                continue
            if not stat.S_ISDIR(st.st_mode):
                if kind is None:
                    kind = "other"
                break
            kind = "dir"
            nxt.append(p)
            if _dir_opaque(p):
                break
            if _dir_opaque(d):
                break
        if kind is None:
            return None
        if kind == "other":
            return "other" if i == len(parts) - 1 else None
        dirs = nxt
    return kind


def upper_markers(upper, lowers):
    """Whiteouts, opaque dirs and redirects of @upper, classified by what
    they hide in @lowers.  Returns a dict of sets of paths."""
    res = {k: set() for k in ("whiteout", "whiteout_noop", "opaque",
                              "opaque_noop", "redirect", "whiteout_in_opaque",
                              "metacopy", "override_stat")}
    upper = str(upper)
    # lowerpath of each upper dir (None: opaque, nothing below)
    lp = {upper: ""}
    inside_opaque = {upper: False}
    for dirpath, dirnames, filenames in os.walk(upper):
        dirnames.sort()
        base = lp[dirpath]
        for name in sorted(filenames + dirnames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, upper)
            st = os.lstat(p)
            if name in (".wh..wh..opq", ".wh..opq"):
                continue        # opaque markers (the second: fuse-overlayfs)
            if _getx(p, "trusted.overlay.metacopy") is not None:
                res["metacopy"].add(rel)
            if _getx(p, "user.containers.override_stat") is not None:
                res["override_stat"].add(rel)
            wh = None
            if _is_whiteout_st(st):
                wh = name
            elif name.startswith(".wh.") and stat.S_ISREG(st.st_mode):
                wh = name[4:]
            if wh is not None:
                wrel = os.path.relpath(os.path.join(dirpath, wh), upper)
                hidden = base is not None and \
                    lower_kind(lowers, os.path.join(base, wh)) is not None
                res["whiteout" if hidden else "whiteout_noop"].add(wrel)
                if inside_opaque[dirpath]:
                    res["whiteout_in_opaque"].add(wrel)
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            red = _getx(p, "trusted.overlay.redirect") or \
                _getx(p, "user.overlay.redirect")
            if red is not None:
                res["redirect"].add(rel)
                red = os.fsdecode(red)
                mine = red.lstrip("/") if red.startswith("/") else \
                    (None if base is None else os.path.join(base, red))
            else:
                mine = None if base is None else os.path.join(base, name)
            if _dir_opaque(p):
                under = mine is not None and lower_kind(lowers, mine) == "dir"
                res["opaque" if under else "opaque_noop"].add(rel)
                mine = None
            lp[p] = mine
            inside_opaque[p] = inside_opaque[dirpath] or _dir_opaque(p)
    return res


def copy_tree(src, dst):
    """cp -a (xattrs incl. trusted.*, device nodes, hardlinks, sparse)."""
    r = subprocess.run(["cp", "-a", "--sparse=always", str(src), str(dst)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"cp -a {src} {dst}: {r.stderr}"


# --------------------------------------------------------------------------
# the pair of mounts

def flatten(lowers, dest, mounts):
    """One directory holding the merged view of @lowers (read through a
    read-only kernel overlay): STRATA_WR_FLAT=1 runs every differential
    test over a single lower layer, to separate layer-merging bugs from
    the rest."""
    dest = Path(dest)
    m = dest.parent / (dest.name + "-mnt")
    m.mkdir(parents=True)
    mounts.kernel(lowers + [lowers[-1]] if len(lowers) == 1 else lowers,
                  None, None, m, "")
    copy_tree(m, dest)
    mounts.umount(m)
    return dest


class Pair:
    """Kernel overlay and the implementation over the same lowers.

    run(op) applies @op to both and compares; check() compares trees;
    finish() unmounts and compares the upper directories, remounts and
    cross-mounts."""

    def __init__(self, base, mounts, lowers=None, impl_lowers=None,
                 impl=IMPL, impl_opts="", label="", hardlinks=None,
                 flat=None):
        self.base = Path(base)
        self.mounts = mounts
        self.impl = impl
        self.impl_opts = impl_opts
        self.label = label
        if hardlinks is None:
            hardlinks = "lower-hardlinks" not in KNOWN_DEVIATIONS[impl]
        self.lowers = lowers or build_lowers(self.base / "lower",
                                             hardlinks=hardlinks)
        if flat is None:
            flat = os.environ.get("STRATA_WR_FLAT") == "1"
        if flat and impl_lowers is None:
            self.lowers = [flatten(self.lowers, self.base / "flat", mounts)]
        self.impl_lowers = impl_lowers or self.lowers
        # separate parents: a relative symlink can never reach the other
        for d in ("k/upper", "k/work", "k/mnt", "i/upper", "i/work", "i/mnt"):
            (self.base / d).mkdir(parents=True)
        self.ku, self.kw = self.base / "k/upper", self.base / "k/work"
        self.iu, self.iw = self.base / "i/upper", self.base / "i/work"
        mounts.kernel(self.lowers, self.ku, self.kw, self.base / "k/mnt")
        mounts.impl(self.impl_lowers, self.iu, self.iw, self.base / "i/mnt",
                    impl, impl_opts)
        self.k = Side(self.base / "k/mnt", "kernel")
        self.i = Side(self.base / "i/mnt", impl)
        self.log = []
        self.seed = None
        self.renamed_lower_dir = False
        self.deviations = []    # (checks, message, where) tolerated
        self.collect = None     # int: record every divergence, stop after
        self.final = None

    # -- reporting
    def where(self, tail=25):
        s = f"[impl={self.impl}{' ' + self.label if self.label else ''}"
        if self.seed is not None:
            s += f" seed={self.seed} (replay: STRATA_WR_SEED={self.seed}"\
                 f" STRATA_WR_OPS={len(self.log)})"
        s += f"] after {len(self.log)} ops; last ones:\n"
        start = max(0, len(self.log) - tail)
        return s + "\n".join(f"  #{start + j}: {o!r} -> {r!r}"
                             for j, (o, r) in enumerate(self.log[start:]))

    def fail(self, check, msg):
        """Raise, unless every category in @check is a known deviation of
        the implementation (then it is recorded in self.deviations)."""
        checks = [check] if isinstance(check, str) else list(check)
        known = KNOWN_DEVIATIONS.get(self.impl, ())
        if self.collect is not None or all(c in known for c in checks):
            self.deviations.append((checks, msg, self.where(8)))
            if self.collect is not None and len(self.deviations) >= \
                    self.collect:
                raise Divergence(f"{checks}: {msg}\n{self.where()}")
            return
        raise Divergence(f"{checks}: {msg}\n{self.where()}")

    # -- driving
    def _ino(self, side, op):
        if op[0] not in _STABLE_INO:
            return None
        try:
            st = os.lstat(side.p(op[1]))
        except OSError:
            return None
        return st.st_ino if stat.S_ISREG(st.st_mode) else None

    def run(self, op, check=False):
        ik, ii = self._ino(self.k, op), self._ino(self.i, op)
        rk = do_op(self.k, op)
        ri = do_op(self.i, op)
        self.log.append((op, rk))
        if op[0] == "rename" and rk[0] == "ok":
            for src in (op[1], op[2]):
                if lower_kind(self.lowers, src) == "dir":
                    self.renamed_lower_dir = True
        if rk != ri and ri == ("E", "EXDEV") and op[0] == "rename" and \
                "result:EXDEV" in KNOWN_DEVIATIONS.get(self.impl, ()):
            # what mv(1) does on EXDEV, so the sequence can go on
            self.fail("result:EXDEV", f"{op!r}: kernel {rk!r}, {self.impl} "
                      f"{ri!r}")
            ri = _rename_by_copy(self.i, op)
        if rk != ri:
            self.fail("result", f"{op!r}: kernel {rk!r}, {self.impl} {ri!r}")
        for side, before in ((self.k, ik), (self.i, ii)):
            if before is None:
                continue
            try:
                after = os.lstat(side.p(op[1])).st_ino
            except OSError:
                continue
            if after != before:
                self.fail("inode-stable" if side is self.i else
                          "kernel-inode-stable",
                          f"{op!r}: st_ino of {op[1]} on {side.name} changed "
                          f"{before} -> {after}")
        if check:
            self.check()
        return ri

    def runall(self, ops, check_every=1):
        if not self.log:
            self.check()
        for n, op in enumerate(ops):
            # while a MAP_SHARED mapping is live, mtime may be updated at
            # any time up to msync/munmap (POSIX): compare after it
            self.run(op, check=check_every and (n + 1) % check_every == 0
                     and not self.k.maps and not self.i.maps)
        self.check()

    def _tree_fail(self, check, a, b, an, bn, what):
        cats = set()
        d = diff_snapshots(a, b, an, bn, cats)
        if d:
            self.fail([f"{check}:{c}" for c in sorted(cats)],
                      f"{what}:\n  " + "\n  ".join(d[:30]))

    def check(self):
        a, b = snapshot(self.k.root), snapshot(self.i.root)
        cats = set()
        d = diff_snapshots(a, b, "kernel", self.impl, cats)
        if d:
            self.fail(["tree:" + c for c in sorted(cats)],
                      "visible trees differ:\n  " + "\n  ".join(d[:30]))
        return b

    # -- after the run
    def finish(self, strict_markers=None, remount=True, cross=True):
        self.k.close_all()
        self.i.close_all()
        snap_k = snapshot(self.k.root)
        snap_i = self.check()
        self.final = snap_i
        self.mounts.umount(self.k.root)
        self.mounts.umount(self.i.root)
        mk = upper_markers(self.ku, self.lowers)
        mi = upper_markers(self.iu, self.impl_lowers)
        if mi["whiteout_in_opaque"]:
            self.fail("whiteout-in-opaque",
                      f"{self.impl} wrote whiteouts inside opaque dirs: "
                      f"{sorted(mi['whiteout_in_opaque'])}")
        if strict_markers is None:
            strict_markers = not (mk["redirect"] or mi["redirect"] or
                                  self.renamed_lower_dir)
        if strict_markers:
            for kind in ("whiteout", "opaque"):
                if mk[kind] != mi[kind]:
                    self.fail("upper-" + kind,
                              f"{kind}s in the upper dirs differ: kernel "
                              f"{sorted(mk[kind])} vs {self.impl} "
                              f"{sorted(mi[kind])}")
        n = 0
        if remount:
            # persistence: the implementation on its own upper again
            n += 1
            m = self.base / f"i/remount{n}"
            m.mkdir()
            self.mounts.impl(self.impl_lowers, self.iu, self.iw, m,
                             self.impl, self.impl_opts)
            self._tree_fail("remount", snap_i, snapshot(m), "before",
                            "remounted", "tree after remount differs")
            self.mounts.umount(m)
        if cross:
            # the kernel overlay reads what the implementation wrote
            c = self.base / "cross-ki"
            c.mkdir()
            copy_tree(self.iu, c / "upper")
            (c / "work").mkdir()
            (c / "mnt").mkdir()
            self.mounts.kernel(self.lowers, c / "upper", c / "work",
                               c / "mnt", KERNEL_READ_OPTS)
            self._tree_fail("kernel-reads-upper", snap_i, snapshot(
                c / "mnt", PRIVATE_XATTRS[self.impl]), self.impl,
                "kernel reading its upper",
                f"kernel overlay on {self.impl}'s upper shows a different "
                "tree")
            self.mounts.umount(c / "mnt")
            # and the other way round, unless the kernel kept hardlinks in
            # its index (then its upper alone does not hold the links)
            idx = self.kw / "index"
            if not (idx.is_dir() and any(idx.iterdir())) and \
                    self.impl_lowers == self.lowers:
                c = self.base / "cross-ik"
                c.mkdir()
                copy_tree(self.ku, c / "upper")
                (c / "work").mkdir()
                (c / "mnt").mkdir()
                self.mounts.impl(self.lowers, c / "upper", c / "work",
                                 c / "mnt", self.impl, self.impl_opts)
                self._tree_fail("reads-kernel-upper", snap_k,
                                snapshot(c / "mnt"), "kernel",
                                f"{self.impl} reading kernel's upper",
                                f"{self.impl} on the kernel's upper shows a "
                                "different tree")
                self.mounts.umount(c / "mnt")
        return mk, mi


# --------------------------------------------------------------------------
# random operation sequences

NAMES = ("a", "b", "c", "d", "e", "f")
# who runs an operation: (uid, umask); a third of them as 65534
WHO = ((0, 0o022), (0, 0), (0, 0o077), (65534, 0o022), (65534, 0),
       (65534, 0o077))
_SIZES = (0, 1, 7, 100, 4096, 5000, 70000)
_OFFS = (0, 1, 4095, 4096, 65535, 65536, 100000, 300000)


def _rpath(rng, maxdepth=3):
    d = rng.choice((1, 1, 2, 2, 2, 3)[:2 * maxdepth])
    return "/".join(rng.choice(NAMES) for _ in range(d))


def _rdata(rng):
    n = rng.choice(_SIZES)
    return pattern(n, rng.random())


def _rtime(rng):
    c = rng.random()
    if c < 0.15:
        return "NOW"
    if c < 0.3:
        return "OMIT"
    return 1_050_000_000 * 10**9 + rng.randrange(10**17)


def random_ops(seed, n):
    """@n operations from @seed over the small name space NAMES, each run
    by one of WHO (a user and a umask), fifo, socket and device hardlinks
    and paths deeper than PATH_MAX among them."""
    rng = random.Random(seed)
    kinds = [
        ("create", 8), ("write", 8), ("append", 4), ("otrunc", 3),
        ("truncate", 4), ("fallocate", 2), ("mmapw", 3), ("fsync", 1),
        ("read", 3), ("mkdir", 6), ("rmdir", 4), ("unlink", 6),
        ("rmtree", 2), ("symlink", 3), ("link", 5), ("mkfifo", 1),
        ("mknod", 1), ("rename", 10), ("chmod", 3), ("chown", 3),
        ("utime", 3), ("setxattr", 3), ("removexattr", 2), ("statfs", 1),
        ("listdir", 2), ("stat", 2), ("mksock", 1), ("deep", 1),
    ]
    names = [k for k, _ in kinds]
    weights = [w for _, w in kinds]
    ops = []
    for _ in range(n):
        k = rng.choices(names, weights)[0]
        p = _rpath(rng)
        if k == "create":
            fl = rng.choice(((), ("EXCL",), ("TRUNC",), ("APPEND",),
                             ("EXCL", "TRUNC")))
            op = (k, p, rng.choice((0o644, 0o600, 0o755, 0o444)), fl,
                  _rdata(rng))
        elif k == "write":
            op = (k, p, rng.choice(_OFFS), _rdata(rng))
        elif k == "append":
            op = (k, p, _rdata(rng))
        elif k == "otrunc":
            op = (k, p, _rdata(rng))
        elif k == "truncate":
            op = (k, p, rng.choice(_OFFS + (10, 262147)))
        elif k == "fallocate":
            op = (k, p, rng.choice(_OFFS), rng.choice((1, 4096, 70000)))
        elif k == "mmapw":
            op = (k, p, rng.choice(_OFFS), pattern(rng.choice((1, 10, 5000)),
                                                    rng.random()))
        elif k in ("fsync", "read", "rmdir", "unlink", "rmtree", "statfs",
                   "listdir", "stat"):
            op = (k, p)
        elif k == "mkdir":
            op = (k, p, rng.choice((0o755, 0o700, 0o1777)))
        elif k == "symlink":
            depth = p.count("/")
            tgt = "../" * rng.randint(0, depth) + _rpath(rng, 2)
            op = (k, tgt, p)
        elif k == "link":
            op = (k, _rpath(rng), p)
        elif k == "mkfifo":
            op = (k, p, 0o640)
        elif k == "mknod":
            op = (k, p, 1, rng.choice((3, 5)), 0o666)
        elif k == "mksock":
            op = (k, p, rng.choice((0o755, 0o777)))
        elif k == "deep":
            # past PATH_MAX: 21 names of 200 bytes (see _op_deep)
            # made, listed and removed in one op: nothing deeper than
            # PATH_MAX stays for the path-based tree checks
            op = (k, rng.choice(("", _rpath(rng, 2))), 21, "cycle")
        elif k == "rename":
            op = (k, _rpath(rng), p,
                  rng.choice((0, 0, 0, "NOREPLACE", "EXCHANGE")))
        elif k == "chmod":
            op = (k, p, rng.choice((0o600, 0o755, 0o4755, 0o1777, 0o000,
                                    0o444)))
        elif k == "chown":
            op = (k, p, rng.choice((0, 1, 1000, -1)),
                  rng.choice((0, 2, 1000, -1)))
        elif k == "utime":
            op = (k, p, _rtime(rng), _rtime(rng))
        elif k == "setxattr":
            op = (k, p, rng.choice(("user.x", "user.y", "user.new")),
                  pattern(rng.choice((0, 3, 300)), rng.random()))
        elif k == "removexattr":
            op = (k, p, rng.choice(("user.x", "user.y", "user.new",
                                    "user.big")))
        uid, um = rng.choice(WHO)
        if (uid, um) != (0, 0o022):
            op = ("as", uid, um, op)
        ops.append(op)
    return ops
