"""An upper directory belongs to one mount at a time and to one image
(issue 10 §3), and a mistyped -o option is not a read-only mount.

The kernel overlay is the judge: with index=on it refuses a second mount
of an upper or work directory in use (EBUSY, "is in-use by another
mount"), so stratafs must refuse it too, image and lowerdir= mounts alike;
and the records stratafs keeps on the upper directory must not change what
the kernel overlay (or a commit) makes of it. An upper directory laid over
another image (-o rebase) must show what the kernel overlay shows for the
same upper over that image's rootfs (umoci unpack). fuse-overlayfs is the
judge of which options a drop-in mount has to take."""
import errno
import fcntl
import os
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

import overlaydiff as od
from conftest import STRATAFS, is_mounted, run, umoci_rootfs, unmount

T1 = 1_111_111_111_123_456_789


def layer_a(root):
    (root / "etc").mkdir()
    (root / "etc/conf").write_bytes(b"a\n")
    os.utime(root / "etc/conf", ns=(T1, T1))
    (root / "etc/gone").write_bytes(b"to be deleted\n")
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "usr/share/doc/README").write_bytes(b"doc a\n")
    (root / "opq").mkdir()
    (root / "opq/lower-a").write_bytes(b"hidden by the opaque dir\n")


def layer_b(root):
    """Another image: the same names partly, other content, more names
    (which the upper's whiteouts and opaque dir must hide as well)."""
    (root / "etc").mkdir()
    (root / "etc/conf").write_bytes(b"b conf\n")
    (root / "etc/gone").write_bytes(b"b's file of that name\n")
    (root / "etc/only-b").write_bytes(b"only in b\n")
    (root / "opq").mkdir()
    (root / "opq/lower-b").write_bytes(b"b, hidden by the opaque dir\n")
    (root / "srv").mkdir()
    (root / "srv/b").write_bytes(b"b\n")


@pytest.fixture
def images(umoci_image):
    """Two different images: (ref_a, ref_b, layout_a, layout_b)."""
    la, ta = umoci_image([layer_a], name="ima")
    lb, tb = umoci_image([layer_b], name="imb")
    return f"oci:{la}:{ta}", f"oci:{lb}:{tb}", (la, ta), (lb, tb)


def edits(m):
    """Changes of every kind an upper directory holds."""
    (m / "etc/conf").write_bytes(b"changed\n")         # copy-up
    os.chmod(m / "usr/share/doc/README", 0o600)        # metacopy
    (m / "etc/gone").unlink()                          # whiteout
    shutil.rmtree(m / "opq")                           # opaque dir
    (m / "opq").mkdir()
    (m / "opq/new").write_bytes(b"new\n")
    (m / "added").write_bytes(b"added\n")              # upper only


def daemon_pid(mnt):
    pids = od._daemon_pids(mnt)
    assert len(pids) == 1, pids
    return pids[0]


def root_xattrs(p):
    """Every xattr of directory @p that its caller (root) can list."""
    return sorted((x, os.getxattr(p, x)) for x in os.listxattr(p))


def view(p):
    """What a mount at @p shows: its snapshot, directory mtimes aside
    (umoci stamps the directories it makes with the time it makes them),
    and the xattrs of its root in every namespace."""
    snap = od.snapshot(p)
    for k, e in snap[0].items():
        if e[0].startswith("d"):
            snap[0][k] = e[:4] + (None,) + e[5:]
    return snap, root_xattrs(p)


def same_view(a, b, an, bn):
    d = od.diff_snapshots(a[0], b[0], an, bn)
    assert not d, "\n".join(d)
    assert a[1] == b[1], f"root xattrs: {an} {a[1]} vs {bn} {b[1]}"


# --------------------------------------------------------------------------
# 1. one mount at a time

# --------------------------------------------------------------------------
# 2. one image

def test_metacopy_without_its_lower_file_is_eio(tmp_path, ovl_mounts):
    """A metadata-only copy-up takes its data from the lower file of its
    name; laid over lowers without it (as -o rebase can), the kernel
    overlay lists the name and fails its lookup with EIO, and so does
    stratafs. Before: stratafs showed a file of zeros."""
    lowers = od.build_lowers(tmp_path / "low")
    for d in ("u", "w", "m", "kw", "km"):
        (tmp_path / d).mkdir()
    m = ovl_mounts.impl(lowers, tmp_path / "u", tmp_path / "w",
                        tmp_path / "m", impl="stratafs")
    os.chmod(m / "b", 0o600)                    # a 256 KiB lower file
    ovl_mounts.umount(m)
    assert "trusted.overlay.metacopy" in os.listxattr(tmp_path / "u/b")
    for low in lowers:                          # b is gone below
        if os.path.lexists(low / "b"):
            os.unlink(low / "b")
    km = ovl_mounts.kernel(lowers, tmp_path / "u", tmp_path / "kw",
                           tmp_path / "km", od.KERNEL_READ_OPTS)
    seen = {}
    for mnt in (km, None):
        if mnt is None:
            ovl_mounts.umount(km)
            mnt = ovl_mounts.impl(lowers, tmp_path / "u", tmp_path / "w",
                                  tmp_path / "m", impl="stratafs")
        with pytest.raises(OSError) as e:
            os.lstat(mnt / "b")
        seen[mnt] = ("b" in os.listdir(mnt), e.value.errno)
    assert list(seen.values()) == [(True, errno.EIO)] * 2, seen


# --------------------------------------------------------------------------
# 3. -o options
