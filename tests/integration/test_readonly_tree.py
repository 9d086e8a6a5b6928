"""Read-only mounts show exactly the tree `umoci unpack` produces.

Each image is built layer by layer with umoci (deletions become whiteouts)
or with a hand-made tar layer (append_raw_layer); the mount is compared
entry by entry (type, mode, owner, size, mtime, content, xattrs, hardlink
groups) with umoci's own unpack of the same image."""
import errno
import hashlib
import os
import shutil
import stat
import struct

import pytest

from conftest import (append_raw_layer, assert_same_tree, no_whiteouts_visible,
                      tar_dir, tar_file, tar_symlink, umoci_rootfs)


def compare(umoci_image, mount, tmp_path, steps, raw=None, ignore=()):
    """Build an image from @steps (plus hand-made layers @raw, a list of
    tar entry lists), mount it, compare with umoci unpack; return
    (mountpoint, umoci rootfs)."""
    layout, tag = umoci_image(steps)
    for entries in raw or ():
        append_raw_layer(layout, tag, entries)
    mnt = mount(f"oci:{layout}:{tag}")
    ref = umoci_rootfs(layout, tag, tmp_path / "ref")
    assert_same_tree(mnt, ref, ignore=ignore)
    assert no_whiteouts_visible(mnt) == []
    return mnt, ref


def lookup_fails(path):
    """True when lstat(@path) fails (a hidden whiteout must not be found)."""
    try:
        os.lstat(path)
    except OSError as e:
        return e.errno in (errno.ENOENT, errno.EINVAL)
    return False


# --- deletions ------------------------------------------------------------

def base_tree(root):
    (root / "etc").mkdir()
    for n in ("a", "b", "c"):
        (root / "etc" / n).write_text(n * 10)
    (root / "opt/app/lib/deep").mkdir(parents=True)
    (root / "opt/app/lib/deep/x.so").write_bytes(b"\x7fELF" + b"x" * 100)
    (root / "opt/app/bin").mkdir()
    (root / "opt/app/bin/run").write_text("#!/bin/sh\n")
    (root / "opt/keep").write_text("keep\n")
    (root / "var/cache").mkdir(parents=True)
    (root / "var/cache/one").write_text("1")


def test_delete_files_and_dirs(umoci_image, mount, tmp_path):
    def delete(root):
        (root / "etc/b").unlink()
        shutil.rmtree(root / "opt/app")
        shutil.rmtree(root / "var/cache")
    mnt, ref = compare(umoci_image, mount, tmp_path, [base_tree, delete])
    assert sorted(os.listdir(mnt / "etc")) == ["a", "c"]
    assert os.listdir(mnt / "opt") == ["keep"]
    assert os.listdir(mnt / "var") == []
    assert not (mnt / "opt/app").exists()
    assert lookup_fails(mnt / "etc/.wh.b")
    assert lookup_fails(mnt / "opt/.wh.app")


def test_delete_then_readd_in_later_layer(umoci_image, mount, tmp_path):
    def delete(root):
        (root / "etc/a").unlink()

    def readd(root):
        (root / "etc/a").write_text("back again\n")
    mnt, _ = compare(umoci_image, mount, tmp_path, [base_tree, delete, readd])
    assert (mnt / "etc/a").read_text() == "back again\n"


def test_dir_deleted_and_recreated(umoci_image, mount, tmp_path):
    def recreate(root):
        shutil.rmtree(root / "opt/app")
        (root / "opt/app/lib").mkdir(parents=True)
        (root / "opt/app/lib/new.so").write_text("new\n")
        os.chmod(root / "opt/app", 0o700)
    mnt, _ = compare(umoci_image, mount, tmp_path, [base_tree, recreate])
    assert sorted(os.listdir(mnt / "opt/app")) == ["lib"]
    assert os.listdir(mnt / "opt/app/lib") == ["new.so"]
    assert stat.S_IMODE(os.stat(mnt / "opt/app").st_mode) == 0o700


@pytest.mark.parametrize("marker_last", [False, True])
def test_opaque_whiteout_raw(umoci_image, mount, tmp_path, marker_last):
    """A hand-made layer with opaque dir marker: the lower content of the
    dir disappears, the same layer's new content stays, wherever the marker
    sits in the tar (spec: the marker applies first)."""
    entries = [tar_dir("opt/app", mode=0o750),
               tar_dir("opt/app/lib"),
               tar_file("opt/app/lib/fresh", b"fresh\n")]
    marker = tar_file("opt/app/.wh..wh..opq")
    entries = entries + [marker] if marker_last else [entries[0], marker] + entries[1:]
    # umoci applies a trailing marker last, removing lower children of
    # opt/app/lib and so bumping its mtime to "now": compare it apart.
    mnt, _ = compare(umoci_image, mount, tmp_path, [base_tree], raw=[entries],
                     ignore=["/opt/app/lib"] if marker_last else [])
    st = os.lstat(mnt / "opt/app/lib")
    assert stat.S_ISDIR(st.st_mode) and st.st_mtime_ns == 1600000000 * 10**9
    assert sorted(os.listdir(mnt / "opt/app")) == ["lib"]
    assert os.listdir(mnt / "opt/app/lib") == ["fresh"]
    assert lookup_fails(mnt / "opt/app/.wh..wh..opq")
    assert (mnt / "opt/keep").read_text() == "keep\n"


def test_whiteout_same_layer_does_not_hide(umoci_image, mount, tmp_path):
    """`.wh.x` and `x` in the same layer: x stays (whiteouts apply to lower
    layers only), in both orders; a whiteout of a lower file still works."""
    entries = [tar_file("etc/.wh.n1"), tar_file("etc/n1", b"n1\n"),
               tar_file("etc/n2", b"n2\n"), tar_file("etc/.wh.n2"),
               tar_file("etc/.wh.a")]
    mnt, _ = compare(umoci_image, mount, tmp_path, [base_tree], raw=[entries])
    assert sorted(os.listdir(mnt / "etc")) == ["b", "c", "n1", "n2"]


# --- type changes -----------------------------------------------------------

def types_base(root):
    (root / "f2dir").write_text("file\n")
    (root / "dir2file/sub").mkdir(parents=True)
    (root / "dir2file/sub/x").write_text("x")
    (root / "dir2link/sub").mkdir(parents=True)
    (root / "dir2link/y").write_text("y")
    (root / "link2dir").symlink_to("dir2file")
    (root / "file2link").write_text("f")
    (root / "target").mkdir()
    (root / "target/t").write_text("t")


def types_change(root):
    (root / "f2dir").unlink()
    (root / "f2dir").mkdir()
    (root / "f2dir/inside").write_text("inside\n")
    shutil.rmtree(root / "dir2file")
    (root / "dir2file").write_text("now a file\n")
    shutil.rmtree(root / "dir2link")
    (root / "dir2link").symlink_to("target")
    (root / "link2dir").unlink()
    (root / "link2dir").mkdir()
    (root / "link2dir/z").write_text("z")
    (root / "file2link").unlink()
    (root / "file2link").symlink_to("/target/t")


def test_type_changes(umoci_image, mount, tmp_path):
    mnt, _ = compare(umoci_image, mount, tmp_path, [types_base, types_change])
    assert (mnt / "f2dir").is_dir() and os.listdir(mnt / "f2dir") == ["inside"]
    assert (mnt / "dir2file").read_text() == "now a file\n"
    assert os.readlink(mnt / "dir2link") == "target"
    assert os.listdir(mnt / "dir2link") == ["t"]
    assert not (mnt / "link2dir").is_symlink()
    assert os.listdir(mnt / "link2dir") == ["z"]
    assert os.readlink(mnt / "file2link") == "/target/t"


def test_type_changes_raw(umoci_image, mount, tmp_path):
    """Replacement without any whiteout (spec: an entry replaces whatever
    non-directory or directory is at its path)."""
    entries = [tar_dir("f2dir"), tar_file("f2dir/in", b"in"),
               tar_file("dir2file", b"file now"),
               tar_symlink("dir2link", "target"),
               tar_dir("link2dir", mode=0o711)]
    mnt, _ = compare(umoci_image, mount, tmp_path, [types_base], raw=[entries])
    assert (mnt / "dir2file").read_bytes() == b"file now"
    assert os.readlink(mnt / "dir2link") == "target"
    assert os.listdir(mnt / "link2dir") == []


def test_whiteout_below_replaced_dir_raw(umoci_image, mount, tmp_path):
    """What umoci repack writes when a directory becomes a file or a
    symlink: the new entry, then whiteouts for the old children
    (`dir2file`, `dir2file/.wh.sub`). The whiteouts are no-ops; umoci
    unpack accepts the layer, so must a reader."""
    entries = [tar_file("dir2file", b"now a file\n"),
               tar_file("dir2file/.wh.sub"),
               tar_symlink("dir2link", "target"),
               tar_file("dir2link/.wh.y")]
    mnt, _ = compare(umoci_image, mount, tmp_path, [types_base], raw=[entries])
    assert (mnt / "dir2file").read_text() == "now a file\n"
    assert os.listdir(mnt / "dir2link") == ["t"]


# --- hardlinks --------------------------------------------------------------

def hardlinks(root):
    (root / "a/b").mkdir(parents=True)
    (root / "c").mkdir()
    (root / "a/orig").write_text("shared content\n")
    os.link(root / "a/orig", root / "a/same-dir")
    os.link(root / "a/orig", root / "a/b/nested")
    os.link(root / "a/orig", root / "c/other-dir")
    (root / "c/pair1").write_bytes(b"\0" * 5000)
    os.link(root / "c/pair1", root / "c/pair2")
    (root / "single").write_text("single")


def test_hardlinks(umoci_image, mount, tmp_path):
    mnt, ref = compare(umoci_image, mount, tmp_path, [hardlinks])
    group = [mnt / "a/orig", mnt / "a/same-dir", mnt / "a/b/nested",
             mnt / "c/other-dir"]
    sts = [os.lstat(p) for p in group]
    assert len({s.st_ino for s in sts}) == 1, [s.st_ino for s in sts]
    assert [s.st_nlink for s in sts] == [4] * 4
    p1, p2 = os.lstat(mnt / "c/pair1"), os.lstat(mnt / "c/pair2")
    assert p1.st_ino == p2.st_ino != sts[0].st_ino
    assert p1.st_nlink == p2.st_nlink == 2
    assert os.lstat(mnt / "single").st_nlink == 1
    # nlink as umoci's (kernel) unpack has it
    for p in group + [mnt / "c/pair1"]:
        assert os.lstat(p).st_nlink == os.lstat(ref / p.relative_to(mnt)).st_nlink


def test_hardlink_partly_deleted(umoci_image, mount, tmp_path):
    def drop(root):
        (root / "a/orig").unlink()
        shutil.rmtree(root / "a/b")
        (root / "c/pair2").unlink()
    mnt, ref = compare(umoci_image, mount, tmp_path, [hardlinks, drop])
    a, c = os.lstat(mnt / "a/same-dir"), os.lstat(mnt / "c/other-dir")
    assert a.st_ino == c.st_ino
    assert a.st_nlink == c.st_nlink == os.lstat(ref / "a/same-dir").st_nlink == 2
    assert os.lstat(mnt / "c/pair1").st_nlink == 1


def test_hardlink_to_lower_file(umoci_image, mount, tmp_path):
    """A link made in a later layer to a file of a lower layer (umoci
    stores the new name as a plain file): same result as umoci."""
    def link(root):
        os.link(root / "single", root / "c/single-link")
    mnt, ref = compare(umoci_image, mount, tmp_path, [hardlinks, link])
    assert (mnt / "c/single-link").read_text() == "single"
    for n in ("single", "c/single-link"):
        assert os.lstat(mnt / n).st_nlink == os.lstat(ref / n).st_nlink


# --- special files and metadata -----------------------------------------------

def specials(root):
    (root / "l").mkdir()
    (root / "l/target").write_text("t\n")
    os.symlink("target", root / "l/rel")
    os.symlink("../l/target", root / "l/rel-up")
    os.symlink("/l/target", root / "l/abs")
    os.symlink("/nonexistent/dangling", root / "l/dangling")
    os.symlink("loop2", root / "l/loop1")
    os.symlink("loop1", root / "l/loop2")
    os.symlink("x" * 1000, root / "l/longtarget")
    (root / "dev").mkdir()
    os.mkfifo(root / "dev/fifo", 0o620)
    os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "dev/sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.mknod(root / "dev/big", stat.S_IFCHR | 0o600, os.makedev(4095, 1048575))
    os.chown(root / "dev/sda", 0, 6)


def test_symlinks_fifos_devices(umoci_image, mount, tmp_path):
    mnt, _ = compare(umoci_image, mount, tmp_path, [specials])
    assert os.readlink(mnt / "l/rel") == "target"
    assert os.readlink(mnt / "l/abs") == "/l/target"
    assert os.readlink(mnt / "l/dangling") == "/nonexistent/dangling"
    assert (mnt / "l/rel").read_text() == "t\n"
    assert (mnt / "l/rel-up").read_text() == "t\n"
    assert os.readlink(mnt / "l/longtarget") == "x" * 1000
    assert os.lstat(mnt / "l/longtarget").st_size == 1000
    assert stat.S_ISFIFO(os.lstat(mnt / "dev/fifo").st_mode)
    st = os.lstat(mnt / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    st = os.lstat(mnt / "dev/sda")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(8, 0)
    assert os.lstat(mnt / "dev/big").st_rdev == os.makedev(4095, 1048575)


def modes_owners_times(root):
    (root / "m").mkdir()
    for name, mode in (("suid", 0o4755), ("sgid", 0o2711), ("both", 0o6750),
                       ("none", 0o000), ("wx", 0o333)):
        (root / "m" / name).write_text(name)
        os.chmod(root / "m" / name, mode)
    (root / "m/sticky").mkdir()
    os.chmod(root / "m/sticky", 0o1777)
    (root / "m/sgiddir").mkdir()
    os.chmod(root / "m/sgiddir", 0o2775)
    (root / "o").mkdir()
    for name, uid, gid in (("root", 0, 0), ("u", 1234, 5678),
                           ("big", 4000000000, 3999999999), ("nobody", 65534, 65534)):
        (root / "o" / name).write_text(name)
        os.chown(root / "o" / name, uid, gid)
    os.symlink("u", root / "o/link")
    os.chown(root / "o/link", 42, 43, follow_symlinks=False)
    (root / "o/dir").mkdir()
    os.chown(root / "o/dir", 777, 888)
    (root / "t").mkdir()
    (root / "t/ns").write_text("ns")
    os.utime(root / "t/ns", ns=(1, 1234567890123456789))
    (root / "t/old").write_text("old")
    os.utime(root / "t/old", ns=(0, 86400 * 10**9 + 1))
    (root / "t/future").write_text("f")
    os.utime(root / "t/future", ns=(0, 4102444800 * 10**9 + 999999999))
    os.utime(root / "t", ns=(0, 1500000000 * 10**9 + 5))


def test_modes_owners_mtimes(umoci_image, mount, tmp_path):
    mnt, ref = compare(umoci_image, mount, tmp_path, [modes_owners_times])
    assert stat.S_IMODE(os.lstat(mnt / "m/suid").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(mnt / "m/both").st_mode) == 0o6750
    assert stat.S_IMODE(os.lstat(mnt / "m/sticky").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(mnt / "m/sgiddir").st_mode) == 0o2775
    st = os.lstat(mnt / "o/u")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    st = os.lstat(mnt / "o/big")
    assert (st.st_uid, st.st_gid) == (4000000000, 3999999999)
    st = os.lstat(mnt / "o/link")
    assert (st.st_uid, st.st_gid) == (42, 43)
    # umoci 0.4.7 repack keeps whole seconds only (see the raw test below)
    for n in ("t/ns", "t/old", "t/future", "t"):
        assert os.lstat(mnt / n).st_mtime_ns == os.lstat(ref / n).st_mtime_ns
    assert os.lstat(mnt / "t/old").st_mtime_ns == 86400 * 10**9


def test_nanosecond_mtimes_raw(umoci_image, mount, tmp_path):
    """PAX mtime records with nanoseconds (umoci repack writes seconds only,
    so the layer is made by hand); umoci unpack restores them exactly."""
    def with_ns(entry, ns):
        ti = entry[0] if isinstance(entry, tuple) else entry
        ti.mtime = ns // 10**9
        ti.pax_headers = {"mtime": "%d.%09d" % divmod(ns, 10**9)}
        return entry
    times = {"ns/f": 1234567890123456789, "ns/g": 1000000000000000001,
             "ns/link": 1600000000999999999, "ns": 1500000000000000005}
    entries = [with_ns(tar_dir("ns"), times["ns"]),
               with_ns(tar_file("ns/f", b"f"), times["ns/f"]),
               with_ns(tar_file("ns/g", b"g"), times["ns/g"]),
               with_ns(tar_symlink("ns/link", "f"), times["ns/link"])]
    mnt, ref = compare(umoci_image, mount, tmp_path, [base_tree], raw=[entries])
    for n, ns in times.items():
        if n != "ns/link":
            assert os.lstat(ref / n).st_mtime_ns == ns, f"umoci: {n}"
        assert os.lstat(mnt / n).st_mtime_ns == ns, n


CAP = struct.pack("<IIIII", 0x02000001, 1 << 10 | 1 << 13, 0, 0, 0)


def xattrs(root):
    (root / "x").mkdir()
    (root / "x/f").write_text("f")
    os.setxattr(root / "x/f", "user.one", b"1")
    os.setxattr(root / "x/f", "user.bin", bytes(range(256)))
    (root / "x/ping").write_bytes(b"\x7fELF")
    os.chmod(root / "x/ping", 0o755)
    os.setxattr(root / "x/ping", "security.capability", CAP)
    os.setxattr(root / "x", "user.dir", b"on a dir")
    (root / "x/big").write_text("b")
    os.setxattr(root / "x/big", "user.big", b"v" * 3000)


def test_xattrs(umoci_image, mount, tmp_path):
    mnt, ref = compare(umoci_image, mount, tmp_path, [xattrs])
    assert os.getxattr(ref / "x/ping", "security.capability") == CAP, \
        "umoci did not keep security.capability"
    assert os.getxattr(mnt / "x/ping", "security.capability") == CAP
    assert os.getxattr(mnt / "x/f", "user.bin") == bytes(range(256))
    assert os.getxattr(mnt / "x/big", "user.big") == b"v" * 3000
    assert sorted(os.listxattr(mnt / "x/f")) == ["user.bin", "user.one"]
    assert os.getxattr(mnt / "x", "user.dir") == b"on a dir"
    with pytest.raises(OSError) as e:
        os.getxattr(mnt / "x/f", "user.missing")
    assert e.value.errno == errno.ENODATA


def xattrs_changed(root):
    os.removexattr(root / "x/f", "user.one")
    os.setxattr(root / "x/f", "user.bin", b"new")


def test_xattrs_changed_in_upper_layer(umoci_image, mount, tmp_path):
    mnt, _ = compare(umoci_image, mount, tmp_path, [xattrs, xattrs_changed])
    assert sorted(os.listxattr(mnt / "x/f")) == ["user.bin"]
    assert os.getxattr(mnt / "x/f", "user.bin") == b"new"


# --- names, sizes, many entries --------------------------------------------

LONG = "L" * 255
LONG_UTF8 = "é" * 127 + "x"          # 255 bytes
DEEP = ["d%02d-abcdefghijklmnopqrst" % i for i in range(120)]


def names(root):
    (root / LONG).write_text("long")
    (root / LONG_UTF8).mkdir()
    (root / LONG_UTF8 / LONG).write_text("long in long")
    os.symlink(LONG, root / ("s" * 255))
    deep = root.joinpath(*DEEP)
    deep.mkdir(parents=True)
    (deep / "bottom").write_text("bottom\n")
    (root / "empty").write_bytes(b"")
    (root / "emptydir").mkdir()
    (root / "sp ace\ttab\nnl").write_text("odd")
    (root / "-dash").write_text("d")
    (root / "\x01ctl").write_text("c")


def test_long_names_deep_paths_odd_names(umoci_image, mount, tmp_path):
    mnt, _ = compare(umoci_image, mount, tmp_path, [names])
    assert (mnt / LONG).read_text() == "long"
    assert (mnt / LONG_UTF8 / LONG).read_text() == "long in long"
    assert os.readlink(mnt / ("s" * 255)) == LONG
    assert mnt.joinpath(*DEEP, "bottom").read_text() == "bottom\n"
    assert os.lstat(mnt / "empty").st_size == 0
    assert (mnt / "empty").read_bytes() == b""
    assert (mnt / "sp ace\ttab\nnl").read_text() == "odd"
    with pytest.raises(OSError) as e:
        os.lstat(mnt / ("L" * 256))
    assert e.value.errno in (errno.ENAMETOOLONG, errno.ENOENT)


BIG = 50 * 1024 * 1024 + 12345


def big_file(root):
    h = hashlib.sha256()
    with open(root / "big", "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(BIG // len(block) + 1):
            chunk = (block[i % 97:] + block[:i % 97])[:BIG - f.tell()]
            f.write(chunk)
    (root / "small").write_text("s")


def test_big_file(umoci_image, mount, tmp_path):
    mnt, ref = compare(umoci_image, mount, tmp_path, [big_file])
    assert os.lstat(mnt / "big").st_size == BIG
    # random-access reads agree with the reference
    with open(mnt / "big", "rb") as a, open(ref / "big", "rb") as b:
        for off, n in ((0, 1), (4095, 2), (131071, 131074), (BIG - 1, 10),
                       (BIG, 5), (BIG // 2 + 3, 1 << 20), (7 << 20, 333)):
            assert os.pread(a.fileno(), n, off) == os.pread(b.fileno(), n, off), off


def many(root):
    (root / "many").mkdir()
    for i in range(5000):
        (root / "many" / f"entry-{i:05d}").write_text(str(i))
    (root / "many/zsub").mkdir()


def test_dir_with_5000_entries(umoci_image, mount, tmp_path):
    def delete_some(root):
        for i in range(0, 5000, 7):
            (root / "many" / f"entry-{i:05d}").unlink()
    mnt, ref = compare(umoci_image, mount, tmp_path, [many, delete_some])
    names = os.listdir(mnt / "many")
    assert len(names) == len(set(names)) == len(os.listdir(ref / "many"))
    assert len(names) == 5000 - len(range(0, 5000, 7)) + 1
    with os.scandir(mnt / "many") as it:
        kinds = {e.name: e.is_dir(follow_symlinks=False) for e in it}
    assert kinds["zsub"] is True and kinds["entry-00001"] is False


# --- usrmerge: a layer writing through a lower-layer symlink -------------------

@pytest.mark.parametrize("target", ["usr/lib", "/usr/lib"])
def test_usrmerge_through_symlink(umoci_image, mount, tmp_path, target):
    def merged(root):
        (root / "usr/lib").mkdir(parents=True)
        (root / "usr/lib/libc.so").write_text("libc")
        os.symlink(target, root / "lib")
    entries = [tar_dir("lib/systemd", mode=0o750, uid=3, gid=4),
               tar_file("lib/systemd/x", b"unit\n", uid=5, gid=6),
               tar_file("lib/top", b"top\n")]
    mnt, ref = compare(umoci_image, mount, tmp_path, [merged], raw=[entries])
    assert os.readlink(ref / "lib") == target, "umoci replaced the symlink"
    assert os.readlink(mnt / "lib") == target
    assert (mnt / "usr/lib/systemd/x").read_text() == "unit\n"
    assert (mnt / "usr/lib/top").read_text() == "top\n"
    assert sorted(os.listdir(mnt / "usr/lib")) == ["libc.so", "systemd", "top"]
    st = os.lstat(mnt / "usr/lib/systemd")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (3, 4, 0o750)


def test_dir_entry_replaces_lower_symlink(umoci_image, mount, tmp_path):
    """An explicit `lib/` directory entry replaces the symlink (spec: a
    directory replaces a non-directory); its children land in it."""
    def merged(root):
        (root / "usr/lib").mkdir(parents=True)
        (root / "usr/lib/libc.so").write_text("libc")
        os.symlink("usr/lib", root / "lib")
    entries = [tar_dir("lib"), tar_file("lib/own", b"own\n")]
    mnt, _ = compare(umoci_image, mount, tmp_path, [merged], raw=[entries])
    assert not (mnt / "lib").is_symlink()
    assert os.listdir(mnt / "lib") == ["own"]
    assert os.listdir(mnt / "usr/lib") == ["libc.so"]
