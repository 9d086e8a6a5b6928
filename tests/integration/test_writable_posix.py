"""POSIX behaviour of a writable image mount (issue 3):
`stratafs -o upper=DIR REF MNT` over an image built with umoci; each
operation's result, errno and metadata; copy-up; metadata-only copy-up;
remount persistence; the upper directory read by the kernel overlay over
`umoci unpack`'s rootfs; unprivileged chown/chmod recorded as
user.containers.override_stat."""
import errno
import hashlib
import mmap
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

import overlaydiff as od
from conftest import run, umoci_rootfs

BIG = 48 << 20          # the large lower file
T1 = 1_111_111_111_123_456_789
T2 = 1_222_222_222_987_654_321


def base_layer(root):
    (root / "etc").mkdir()
    (root / "etc/conf").write_bytes(b"key=value\n")
    os.chown(root / "etc/conf", 12, 34)
    os.chmod(root / "etc/conf", 0o640)
    os.setxattr(root / "etc/conf", "user.note", b"lower")
    os.utime(root / "etc/conf", ns=(T1, T1))
    (root / "etc/ro").write_bytes(b"read only\n")
    os.chmod(root / "etc/ro", 0o444)
    (root / "usr/share/doc/pkg").mkdir(parents=True)
    for i in range(30):
        (root / f"usr/share/doc/pkg/f{i}").write_bytes(b"doc %d\n" % i)
    (root / "usr/share/doc/pkg/sub").mkdir()
    (root / "usr/share/doc/pkg/sub/x").write_bytes(b"x\n")
    (root / "data").mkdir()
    with open(root / "data/big", "wb") as f:
        chunk = hashlib.sha256(b"big").digest() * (1 << 15)    # 1 MiB
        for _ in range(BIG // len(chunk)):
            f.write(chunk)
    (root / "data/hl1").write_bytes(b"linked\n")
    os.link(root / "data/hl1", root / "data/hl2")
    os.symlink("../etc/conf", root / "data/sym")
    os.mkfifo(root / "data/fifo")
    (root / "empty").mkdir()


def second_layer(root):
    (root / "etc/added").write_bytes(b"layer 2\n")
    os.unlink(root / "usr/share/doc/pkg/f0")
    os.utime(root / "etc", ns=(T1, T1))


@pytest.fixture
def image(umoci_image):
    return umoci_image([base_layer, second_layer])


@pytest.fixture
def wmount(image, mount, tmp_path):
    """(mnt, upper): the image mounted writable."""
    layout, tag = image
    upper = tmp_path / "upper"
    mnt = mount(f"oci:{layout}:{tag}", opts=f"upper={upper}")
    return mnt, upper


def eno(fn, *a, **kw):
    """Call fn; return None or the errno name."""
    try:
        fn(*a, **kw)
    except OSError as e:
        return errno.errorcode[e.errno]
    return None


def test_create_write_read(wmount):
    m, upper = wmount
    fd = os.open(m / "new", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    assert os.write(fd, b"hello") == 5
    os.close(fd)
    assert (m / "new").read_bytes() == b"hello"
    assert stat.S_IMODE(os.stat(m / "new").st_mode) == 0o640
    assert eno(os.open, m / "new", os.O_CREAT | os.O_EXCL | os.O_WRONLY) \
        == "EEXIST"
    assert eno(os.open, m / "etc/conf", os.O_CREAT | os.O_EXCL) == "EEXIST"
    assert eno(os.open, m / "nodir/x", os.O_CREAT | os.O_WRONLY) == "ENOENT"
    assert eno(os.open, m / "etc/conf/x", os.O_CREAT | os.O_WRONLY) \
        == "ENOTDIR"
    assert eno(os.open, m / "etc", os.O_WRONLY) == "EISDIR"
    assert (upper / "new").read_bytes() == b"hello"


def test_o_trunc_append_pwrite_past_eof(wmount):
    m, _ = wmount
    fd = os.open(m / "etc/conf", os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert os.stat(m / "etc/conf").st_size == 0
    fd = os.open(m / "etc/added", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"more\n")
    os.close(fd)
    assert (m / "etc/added").read_bytes() == b"layer 2\nmore\n"
    fd = os.open(m / "etc/added", os.O_WRONLY)
    assert os.pwrite(fd, b"Z", 100000) == 1
    os.close(fd)
    data = (m / "etc/added").read_bytes()
    assert len(data) == 100001
    assert data == b"layer 2\nmore\n" + bytes(100000 - 13) + b"Z"


def test_truncate_fallocate_mmap_fsync(wmount):
    m, _ = wmount
    os.truncate(m / "etc/added", 3)
    assert (m / "etc/added").read_bytes() == b"lay"
    os.truncate(m / "etc/added", 10)
    assert (m / "etc/added").read_bytes() == b"lay" + bytes(7)
    fd = os.open(m / "etc/conf", os.O_RDWR)
    os.posix_fallocate(fd, 0, 8192)
    assert os.fstat(fd).st_size == 8192
    mm = mmap.mmap(fd, 8192, mmap.MAP_SHARED)
    mm[0:4] = b"MMAP"
    mm.flush()
    mm.close()
    os.fsync(fd)
    os.close(fd)
    data = (m / "etc/conf").read_bytes()
    assert data[:10] == b"MMAPvalue\n" and len(data) == 8192
    assert eno(os.truncate, m / "etc", 0) == "EISDIR"
    assert eno(os.truncate, m / "nope", 0) == "ENOENT"


def test_dirs(wmount):
    m, upper = wmount
    os.mkdir(m / "srv", 0o750)
    assert stat.S_IMODE(os.stat(m / "srv").st_mode) == 0o750
    assert eno(os.mkdir, m / "etc") == "EEXIST"
    assert eno(os.mkdir, m / "etc/conf/x") == "ENOTDIR"
    assert eno(os.rmdir, m / "etc") == "ENOTEMPTY"
    assert eno(os.rmdir, m / "etc/conf") == "ENOTDIR"
    assert eno(os.rmdir, m / "nope") == "ENOENT"
    assert eno(os.unlink, m / "etc") == "EISDIR"
    os.rmdir(m / "empty")
    assert not os.path.lexists(m / "empty")
    os.rmdir(m / "srv")
    assert sorted(os.listdir(m / "usr/share/doc/pkg")) == sorted(
        [f"f{i}" for i in range(1, 30)] + ["sub"])


def test_rm_rf_lower_tree_is_one_whiteout(wmount):
    m, upper = wmount
    shutil.rmtree(m / "usr/share/doc")
    assert sorted(os.listdir(m / "usr/share")) == []
    st = os.lstat(upper / "usr/share/doc")
    assert (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0), \
        "usr/share/doc is not a char 0:0 whiteout"
    found = [str(p.relative_to(upper)) for p in upper.rglob("*")]
    assert not [f for f in found if f.startswith("usr/share/doc/")], found


def test_delete_and_recreate_dir_is_opaque(wmount):
    m, upper = wmount
    shutil.rmtree(m / "usr/share/doc/pkg")
    os.mkdir(m / "usr/share/doc/pkg")
    assert os.listdir(m / "usr/share/doc/pkg") == []
    (m / "usr/share/doc/pkg/new").write_bytes(b"n")
    assert os.listdir(m / "usr/share/doc/pkg") == ["new"]
    assert od._getx(upper / "usr/share/doc/pkg",
                    "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(upper / "usr/share/doc/pkg")) == ["new"], \
        "no whiteouts inside an opaque directory"


def test_links_symlinks_nodes(wmount):
    m, _ = wmount
    os.symlink("conf", m / "etc/lnk")
    assert os.readlink(m / "etc/lnk") == "conf"
    assert eno(os.symlink, "x", m / "etc/conf") == "EEXIST"
    os.link(m / "etc/conf", m / "conf-link")      # link to a lower file
    a, b = os.stat(m / "etc/conf"), os.stat(m / "conf-link")
    assert a.st_ino == b.st_ino and a.st_nlink == b.st_nlink == 2
    with open(m / "conf-link", "ab") as f:
        f.write(b"via link\n")
    assert (m / "etc/conf").read_bytes() == b"key=value\nvia link\n"
    os.unlink(m / "etc/conf")
    assert os.stat(m / "conf-link").st_nlink == 1
    assert eno(os.link, m / "etc", m / "dirlink") == "EPERM"
    # a lower hardlink pair stays linked across copy-up of one name
    with open(m / "data/hl1", "ab") as f:
        f.write(b"+")
    assert (m / "data/hl2").read_bytes() == b"linked\n+"
    assert os.stat(m / "data/hl1").st_ino == os.stat(m / "data/hl2").st_ino
    assert os.stat(m / "data/hl2").st_nlink == 2
    os.mkfifo(m / "fifo2", 0o600)
    assert stat.S_ISFIFO(os.lstat(m / "fifo2").st_mode)
    os.mknod(m / "null2", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    st = os.lstat(m / "null2")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def test_rename(wmount):
    m, upper = wmount
    os.rename(m / "etc/added", m / "added2")
    assert (m / "added2").read_bytes() == b"layer 2\n"
    assert not os.path.lexists(m / "etc/added")
    # a lower directory, not EXDEV
    os.rename(m / "usr/share/doc", m / "doc2")
    assert sorted(os.listdir(m / "doc2/pkg"))[:2] == ["f1", "f10"]
    assert (m / "doc2/pkg/sub/x").read_bytes() == b"x\n"
    assert not os.path.lexists(m / "usr/share/doc")
    os.mkdir(m / "usr/share/doc")
    assert os.listdir(m / "usr/share/doc") == []
    assert eno(od.renameat2, m / "etc/conf", m / "etc/ro",
               od.RENAME_NOREPLACE) == "EEXIST"
    od.renameat2(m / "etc/conf", m / "etc/ro", od.RENAME_EXCHANGE)
    assert (m / "etc/ro").read_bytes() == b"key=value\n"
    assert (m / "etc/conf").read_bytes() == b"read only\n"
    od.renameat2(m / "etc", m / "data", od.RENAME_EXCHANGE)
    assert (m / "data/ro").exists() and (m / "etc/big").exists()
    assert eno(os.rename, m / "empty", m / "data") == "ENOTEMPTY"
    assert eno(os.rename, m / "data", m / "added2") == "ENOTDIR"
    assert eno(os.rename, m / "added2", m / "data") == "EISDIR"
    assert eno(os.rename, m / "data", m / "data/sub") == "EINVAL"
    assert eno(os.rename, m / "nope", m / "x") == "ENOENT"


def test_metadata_ops(wmount):
    m, _ = wmount
    p = m / "etc/conf"
    os.chown(p, 99, 98)        # (chown clears set-uid: chmod after it)
    os.chmod(p, 0o4711)
    od.utimensat(p, T1, T2)
    st = os.stat(p)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == \
        (0o4711, 99, 98)
    assert (st.st_atime_ns, st.st_mtime_ns) == (T1, T2)
    od.utimensat(p, "OMIT", "NOW")
    st = os.stat(p)
    assert st.st_atime_ns == T1 and st.st_mtime_ns > T2
    od.utimensat(p, T2, "OMIT")
    st2 = os.stat(p)
    assert st2.st_atime_ns == T2 and st2.st_mtime_ns == st.st_mtime_ns
    os.setxattr(p, "user.new", b"v")
    assert os.getxattr(p, "user.new") == b"v"
    assert os.getxattr(p, "user.note") == b"lower"
    os.removexattr(p, "user.note")
    assert eno(os.getxattr, p, "user.note") == "ENODATA"
    assert eno(os.removexattr, p, "user.note") == "ENODATA"
    assert eno(os.chmod, m / "nope", 0o600) == "ENOENT"
    sv = os.statvfs(m)
    assert sv.f_bsize > 0 and sv.f_blocks > 0


@pytest.mark.parametrize("make", [
    lambda p: os.open(p, os.O_CREAT | os.O_WRONLY),
    lambda p: os.mkdir(p),
    lambda p: os.symlink("x", p),
    lambda p: os.mkfifo(p),
    lambda p: os.link(p.parent / "conf", p),
    lambda p: os.rename(p.parent / "conf", p),
], ids=["create", "mkdir", "symlink", "mkfifo", "link", "rename"])
def test_wh_names_einval(wmount, make):
    m, _ = wmount
    assert eno(make, m / "etc/.wh.foo") == "EINVAL"
    assert not os.path.lexists(m / "etc/.wh.foo")


def test_copy_up_preserves_metadata(wmount):
    m, upper = wmount
    p = m / "etc/conf"
    before = os.stat(p)
    with open(p, "ab") as f:
        f.write(b"x")
    after = os.stat(p)
    assert after.st_ino == before.st_ino, "inode number changed on copy-up"
    for f in ("st_mode", "st_uid", "st_gid", "st_nlink"):
        assert getattr(after, f) == getattr(before, f), f
    assert os.getxattr(p, "user.note") == b"lower"
    u = os.lstat(upper / "etc/conf")
    assert (u.st_mode, u.st_uid, u.st_gid) == \
        (before.st_mode, before.st_uid, before.st_gid)
    assert os.getxattr(upper / "etc/conf", "user.note") == b"lower"
    # the parent directory was copied up with its times
    assert os.stat(upper / "etc").st_mtime_ns == os.stat(m / "etc").st_mtime_ns


def test_metacopy_chmod_large_file(wmount):
    m, upper = wmount
    p = m / "data/big"
    h = hashlib.sha256(p.read_bytes()).hexdigest()
    os.chmod(p, 0o600)
    u = os.lstat(upper / "data/big")
    assert u.st_size == BIG
    assert u.st_blocks * 512 < (1 << 20), \
        f"chmod copied data: {u.st_blocks * 512} bytes allocated"
    assert os.getxattr(upper / "data/big", "trusted.overlay.metacopy",
                       follow_symlinks=False) is not None
    assert hashlib.sha256(p.read_bytes()).hexdigest() == h
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    with open(p, "r+b") as f:
        f.seek(BIG - 1)
        f.write(b"!")
    data = p.read_bytes()
    assert len(data) == BIG and data[-1:] == b"!"
    assert hashlib.sha256(data[:-1]).hexdigest() == \
        hashlib.sha256((upper / "data/big").read_bytes()[:-1]).hexdigest()
    assert eno(os.getxattr, upper / "data/big",
               "trusted.overlay.metacopy") == "ENODATA"


def test_cp_read_only_file_in(wmount, tmp_path):
    m, _ = wmount
    src = tmp_path / "ro-src"
    src.write_bytes(b"ro content\n" * 1000)
    os.chmod(src, 0o444)
    run(["cp", src, m / "ro-copy"])
    assert (m / "ro-copy").read_bytes() == src.read_bytes()
    assert stat.S_IMODE(os.stat(m / "ro-copy").st_mode) == 0o444
    run(["cp", "-a", src, m / "etc/ro-a"])
    assert (m / "etc/ro-a").read_bytes() == src.read_bytes()


def test_hardlink_names_agree(wmount):
    """Every name of a file shows a change made through another name:
    size, data, mode, times and link count, although each name was looked
    up before (so its attributes were cached by the kernel with a long
    timeout). data/hl1 = data/hl2 in the image; as on any filesystem, the
    names stay one file through copy-up, link, unlink and truncate."""
    m, _ = wmount
    names = ["data/hl1", "data/hl2"]

    def look(root):
        out = []
        for n in names:
            st = os.stat(root / n)
            out.append((n, st.st_size, oct(st.st_mode), st.st_nlink,
                        st.st_mtime_ns, (root / n).read_bytes()))
        return out

    for n in names:                         # both names' attributes cached
        os.stat(m / n)
    with open(m / "data/hl2", "ab") as f:  # copy-up through one name
        f.write(b"appended\n")
    a, b = look(m)
    assert a[1:] == b[1:], "hl1 does not show what was written to hl2"
    assert a[5].endswith(b"appended\n")
    os.chmod(m / "data/hl1", 0o600)
    os.utime(m / "data/hl1", ns=(1_000_000_000, 1_234_567_890))
    a, b = look(m)
    assert a[1:] == b[1:] and a[2] == oct(0o100600) and \
        a[4] == 1_234_567_890
    os.link(m / "data/hl1", m / "data/hl3")
    names.append("data/hl3")
    assert {x[3] for x in look(m)} == {3}
    os.unlink(m / "data/hl1")
    names.remove("data/hl1")
    assert {x[3] for x in look(m)} == {2}
    os.truncate(m / "data/hl3", 3)
    a, b = look(m)
    assert a[1:] == b[1:] and a[1] == 3


def _edits(m):
    (m / "etc/conf").write_bytes(b"edited\n")
    shutil.rmtree(m / "usr/share/doc")
    os.mkdir(m / "srv")
    (m / "srv/app").write_bytes(b"app\n")
    os.rename(m / "data/sym", m / "srv/sym")
    os.chmod(m / "data/big", 0o600)
    os.unlink(m / "etc/added")
    os.rmdir(m / "empty")
    os.mkdir(m / "empty")
    os.link(m / "data/hl1", m / "srv/hl3")
    os.setxattr(m / "etc", "user.dir", b"1")
    os.rename(m / "usr/share", m / "share2")


def test_remount_same_tree(image, mount, tmp_path):
    layout, tag = image
    upper = tmp_path / "upper"
    m1 = mount(f"oci:{layout}:{tag}", opts=f"upper={upper}")
    _edits(m1)
    before = od.snapshot(m1)
    run(["fusermount3", "-u", m1])
    m2 = mount(f"oci:{layout}:{tag}", opts=f"upper={upper}")
    d = od.diff_snapshots(before, od.snapshot(m2), "before", "remounted")
    assert not d, "\n".join(d)


def test_kernel_overlay_reads_upper(image, mount, tmp_path, ovl_mounts):
    layout, tag = image
    upper = tmp_path / "upper"
    m1 = mount(f"oci:{layout}:{tag}", opts=f"upper={upper}")
    _edits(m1)
    seen = od.snapshot(m1)
    run(["fusermount3", "-u", m1])
    rootfs = umoci_rootfs(layout, tag, tmp_path / "unpacked")
    for d in ("kw", "km"):
        (tmp_path / d).mkdir()
    km = ovl_mounts.kernel([rootfs], upper, tmp_path / "kw", tmp_path / "km",
                           od.KERNEL_READ_OPTS)
    got = od.snapshot(km)
    # the root directory is the upper directory's on the kernel overlay
    seen[0].pop(""), got[0].pop("")
    d = od.diff_snapshots(seen, got, "stratafs", "kernel overlay")
    assert not d, "\n".join(d)


# ---- unprivileged ----------------------------------------------------------



@pytest.fixture
def nobody_dir():
    d = Path(tempfile.mkdtemp(prefix="strata-wr-nobody-"))
    os.chmod(d, 0o755)
    os.chown(d, 65534, 65534)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_unprivileged_chown_chmod_recorded(nobody_dir, dev_fuse_open, image,
                                           mount):
    layout, tag = image
    nb = pwd.getpwnam("nobody")
    lay = nobody_dir / "layout"
    shutil.copytree(layout, lay)
    for sub in ("store", "upper", "mnt"):
        (nobody_dir / sub).mkdir()
    run(["chown", "-R", "65534:65534", nobody_dir])
    env = dict(os.environ, STRATA_ROOT=str(nobody_dir / "store"),
               HOME=str(nobody_dir))

    def drop():
        os.setgroups([])
        os.setgid(nb.pw_gid)
        os.setuid(nb.pw_uid)

    m = mount(f"oci:{lay}:{tag}", opts=f"upper={nobody_dir / 'upper'}",
              mnt=nobody_dir / "mnt", env=env, preexec_fn=drop)

    def as_nobody(code):
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                            "--clear-groups", "/usr/bin/python3", "-c", code],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = as_nobody(f"""
import os, stat, json
m = {str(m)!r}
os.chown(m + "/etc/added", 0, 0)
os.chown(m + "/etc/conf", 7, 8)
os.chmod(m + "/etc/conf", 0o4755)
open(m + "/mine", "w").write("x")
os.chown(m + "/mine", 0, 0)
res = {{}}
for n in ("etc/conf", "etc/added", "mine"):
    st = os.lstat(m + "/" + n)
    res[n] = [st.st_mode, st.st_uid, st.st_gid, st.st_rdev]
print(json.dumps(res))
""")
    import json
    res = json.loads(out)
    mode, uid, gid, _ = res["etc/conf"]
    assert (stat.S_IMODE(mode), uid, gid) == (0o4755, 7, 8)
    assert res["etc/added"][1:3] == [0, 0]
    assert res["mine"][1:3] == [0, 0]
    # recorded in the upper directory in the containers-storage format
    up = nobody_dir / "upper"
    ov = os.getxattr(up / "etc/conf", "user.containers.override_stat")
    f = ov.decode().split(":")
    assert (int(f[0]), int(f[1])) == (7, 8)
    assert int(f[2], 8) & 0o7777 == 0o4755
    assert os.lstat(up / "etc/conf").st_uid == 65534
    ov = os.getxattr(up / "mine", "user.containers.override_stat")
    assert [int(x) for x in ov.decode().split(":")[:2]] == [0, 0]
    # (device mknod is refused by the kernel's VFS for a caller without
    # CAP_MKNOD before FUSE sees it, so it is not tried here)
