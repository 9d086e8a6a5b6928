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
from pathlib import Path

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


RECORDS = ("trusted.overlay.strata.base", "trusted.overlay.strata.mount",
           "user.overlay.strata.base", "user.overlay.strata.mount")


def root_xattrs(p):
    """Every xattr of directory @p that its caller (root) can list, and
    which of the records getxattr shows there (none should be)."""
    def shown(x):
        try:
            return os.getxattr(p, x)
        except OSError:
            return None
    return sorted((x, os.getxattr(p, x)) for x in os.listxattr(p)) + \
        [(x, shown(x)) for x in RECORDS]


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

def test_second_image_mount_of_an_upper_refused(images, mount, tmp_path):
    """Before: the second mount went ahead, and both served (and cached)
    one upper directory."""
    ref_a = images[0]
    up = tmp_path / "up"
    m1 = mount(ref_a, opts=f"upper={up}")
    (m1 / "added").write_bytes(b"one\n")
    r = mount(ref_a, opts=f"upper={up}", check=False)
    m2 = tmp_path / "mnt2"
    assert r.returncode == 1, r
    assert not is_mounted(m2)
    err = r.stderr
    assert f"upper directory {up} is in use by the mount on {m1}" in err, err
    assert f"stratafs pid {daemon_pid(m1)}" in err, err
    # the first mount goes on as before
    (m1 / "added").write_bytes(b"two\n")
    assert (m1 / "added").read_bytes() == b"two\n"
    # its work directory is untouched by the refused mount: a copy-up works
    (m1 / "etc/conf").write_bytes(b"x\n")
    assert (up / "etc/conf").read_bytes() == b"x\n"


def test_second_lowerdir_mount_refused_as_kernel_overlay(tmp_path,
                                                         ovl_mounts):
    """lowerdir= mounts of one upper (another work dir) or of one work
    dir (another upper): the kernel overlay (index=on) refuses both, and so
    does stratafs. Before: stratafs mounted both."""
    lowers = od.build_lowers(tmp_path / "low")
    for d in ("ku", "kw", "ku2", "kw2", "k1", "k2", "k3",
              "su", "sw", "su2", "sw2", "s1", "s2", "s3"):
        (tmp_path / d).mkdir()
    t = tmp_path
    ovl_mounts.kernel(lowers, t / "ku", t / "kw", t / "k1")
    for upper, work, mnt in ((t / "ku", t / "kw2", t / "k2"),
                             (t / "ku2", t / "kw", t / "k3")):
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={':'.join(map(str, lowers))},"
                            f"upperdir={upper},workdir={work},"
                            f"{od.KERNEL_OPTS}", str(mnt)],
                           capture_output=True, text=True)
        ovl_mounts.track(mnt)
        assert r.returncode != 0 and not is_mounted(mnt), r

    s1 = ovl_mounts.impl(lowers, t / "su", t / "sw", t / "s1",
                         impl="stratafs")
    pid = daemon_pid(s1)
    for upper, work, mnt, what in ((t / "su", t / "sw2", t / "s2", "upper"),
                                   (t / "su2", t / "sw", t / "s3", "work")):
        cmd = ovl_mounts.impl_cmd(lowers, upper, work, mnt, impl="stratafs")
        ovl_mounts.track(mnt)
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 1 and not is_mounted(mnt), r
        assert f"{what} directory" in r.stderr, r.stderr
        assert f"in use by the mount on {s1} (stratafs pid {pid})" \
            in r.stderr, r.stderr
    (s1 / "new").write_bytes(b"still mine\n")
    assert (t / "su/new").read_bytes() == b"still mine\n"


@pytest.fixture
def nobody_dir():
    """A directory of uid 65534 under /tmp (searchable by it)."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="strata-claim-nobody-"))
    os.chmod(d, 0o755)
    os.chown(d, 65534, 65534)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def test_users_mount_holds_its_upper_against_root(nobody_dir, images, mount,
                                                  dev_fuse_open, tmp_path):
    """A user's mount holds its upper directory against a second mount of
    the user's and against root's: the lock is on the directory, not in a
    per-user place, and the refusal names the user's mount from the
    record the unprivileged daemon keeps in user.* xattrs. Before: both
    mounted. (nobody_dir comes first: made before the mounts, removed
    after them.)"""
    _, _, (la, ta), _ = images
    lay = nobody_dir / "layout"
    shutil.copytree(la, lay)
    for sub in ("store", "mnt1", "mnt2"):
        (nobody_dir / sub).mkdir()
    run(["chown", "-R", "65534:65534", nobody_dir])
    up = nobody_dir / "up"
    env = dict(os.environ, STRATA_ROOT=str(nobody_dir / "store"),
               HOME=str(nobody_dir))
    ref = f"oci:{lay}:{ta}"
    m1 = mount(ref, opts=f"upper={up}", mnt=nobody_dir / "mnt1", env=env,
               preexec_fn=as_nobody)
    pid = daemon_pid(m1)
    names = os.listxattr(up)
    assert "user.overlay.strata.mount" in names, names
    assert "user.overlay.strata.base" in names, names
    r = mount(ref, opts=f"upper={up}", mnt=nobody_dir / "mnt2", env=env,
              preexec_fn=as_nobody, check=False)
    assert r.returncode == 1 and not is_mounted(nobody_dir / "mnt2"), r
    assert f"in use by the mount on {m1} (stratafs pid {pid})" in r.stderr
    work = tmp_path.parent / f"{tmp_path.name}-rootwork"  # same fs as up
    try:
        r = mount(ref, opts=f"upper={up},work={work}", check=False)
        assert r.returncode == 1, r
        assert f"in use by the mount on {m1} (stratafs pid {pid})" \
            in r.stderr, r.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_lock_of_another_process_named(images, mount, tmp_path):
    """An upper directory some other process holds the lock of: the
    refusal names that process (from /proc/locks). Before: mounted."""
    up = tmp_path / "up"
    up.mkdir()
    fd = os.open(up, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        r = mount(images[0], opts=f"upper={up}", check=False)
        assert r.returncode == 1, r
        assert f"upper directory {up} is locked by another process " \
            f"(pid {os.getpid()})" in r.stderr, r.stderr
    finally:
        os.close(fd)
    mount(images[0], opts=f"upper={up}")


def test_remount_right_after_unmount(images, mount, tmp_path):
    """fusermount3 -u returns before the daemon has exited: the next mount
    of the same upper waits for it instead of failing."""
    up = tmp_path / "up"
    for i in range(5):
        m = mount(images[0], opts=f"upper={up}")
        (m / f"f{i}").write_bytes(b"%d\n" % i)
        run(["fusermount3", "-u", m])
    m = mount(images[0], opts=f"upper={up}")
    assert sorted(p.name for p in m.glob("f*")) == [f"f{i}" for i in range(5)]


def test_killed_daemon_leaves_the_upper_free(images, mount, tmp_path):
    """The lock dies with the daemon: after a kill -9 the upper directory
    can be mounted again at once (the dead mount aside)."""
    up = tmp_path / "up"
    dead = tmp_path / "dead"
    dead.mkdir()
    p = subprocess.Popen([str(STRATAFS), "-f", "-o", f"upper={up}",
                          images[0], str(dead)], stderr=subprocess.PIPE)
    try:
        for _ in range(500):
            if is_mounted(dead) or p.poll() is not None:
                break
            time.sleep(0.01)
        assert is_mounted(dead), p.stderr.read() if p.poll() else ""
        (dead / "made").write_bytes(b"before the kill\n")
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        m = mount(images[0], opts=f"upper={up}")
        assert (m / "made").read_bytes() == b"before the kill\n"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
        unmount(dead)


def test_records_leave_the_kernel_overlay_view_alone(images, mount, tmp_path,
                                                     ovl_mounts):
    """What stratafs records on the upper directory (its image, its
    holder) adds no file there, and the kernel overlay given that upper
    (over `umoci unpack` of the image) shows exactly the tree the mount
    shows, root xattrs included."""
    ref_a, _, (la, ta), _ = images
    up = tmp_path / "up"
    m = mount(ref_a, opts=f"upper={up}")
    edits(m)
    seen = od.snapshot(m)
    assert [v for x, v in root_xattrs(m) if "strata" in x] == [None] * 4
    run(["fusermount3", "-u", m])
    names = sorted(os.listdir(up))
    assert names == ["added", "etc", "opq", "usr"], names
    rootfs = umoci_rootfs(la, ta, tmp_path / "ua")
    (tmp_path / "kw").mkdir()
    (tmp_path / "km").mkdir()
    km = ovl_mounts.kernel([rootfs], up, tmp_path / "kw", tmp_path / "km",
                           od.KERNEL_READ_OPTS)
    kv = view(km)
    ovl_mounts.umount(km)
    m2 = mount(ref_a, opts=f"upper={up}")
    same_view(view(m2), kv, "stratafs", "kernel overlay")
    d = od.diff_snapshots(seen, od.snapshot(m2), "first mount", "remount")
    assert not d, "\n".join(d)


# --------------------------------------------------------------------------
# 2. one image

def test_upper_of_another_image_refused_unless_rebase(images, mount,
                                                      tmp_path, ovl_mounts):
    """Before: the changes made on image a were laid over image b without
    a word. Now refused, naming both; -o rebase lays them over b, and the
    mount then shows what the kernel overlay shows for that upper over
    b's rootfs; b is then the upper's image."""
    ref_a, ref_b, (la, ta), (lb, tb) = images
    up = tmp_path / "up"
    m = mount(ref_a, opts=f"upper={up}")
    edits(m)
    run(["fusermount3", "-u", m])
    r = mount(ref_b, opts=f"upper={up}", check=False)
    assert r.returncode == 1, r
    dig_a = run(["skopeo", "inspect", "--format", "{{.Digest}}",
                 f"oci:{la}:{ta}"]).stdout.strip()
    dig_b = run(["skopeo", "inspect", "--format", "{{.Digest}}",
                 f"oci:{lb}:{tb}"]).stdout.strip()
    for s in (str(up), ref_a, ref_b, dig_a, dig_b, "-o rebase"):
        assert s in r.stderr, (s, r.stderr)
    assert not is_mounted(tmp_path / "mnt2")

    mb = mount(ref_b, opts=f"upper={up},rebase")
    run(["fusermount3", "-u", mb])
    rootfs = umoci_rootfs(lb, tb, tmp_path / "ub")
    for d in ("kw", "km"):
        (tmp_path / d).mkdir()
    km = ovl_mounts.kernel([rootfs], up, tmp_path / "kw", tmp_path / "km",
                           od.KERNEL_READ_OPTS)
    kv = view(km)
    ovl_mounts.umount(km)
    mb = mount(ref_b, opts=f"upper={up}")        # b is its image now
    same_view(view(mb), kv, "stratafs", "kernel overlay")
    assert not (mb / "etc/gone").exists()        # b's file, whited out
    assert sorted(os.listdir(mb / "opq")) == ["new"]
    assert (mb / "etc/only-b").read_bytes() == b"only in b\n"
    assert (mb / "etc/conf").read_bytes() == b"changed\n"
    run(["fusermount3", "-u", mb])
    r = mount(ref_a, opts=f"upper={up}", check=False)
    assert r.returncode == 1 and "-o rebase" in r.stderr, r


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


def test_upper_made_by_kernel_overlay_accepted_and_recorded(
        images, mount, tmp_path, ovl_mounts):
    """An upper directory with no record (the kernel overlay made it) is
    mounted, shows what the kernel overlay showed, and from then on
    belongs to that image."""
    ref_a, ref_b, (la, ta), _ = images
    rootfs = umoci_rootfs(la, ta, tmp_path / "ua")
    up = tmp_path / "up"
    for d in ("up", "kw", "km"):
        (tmp_path / d).mkdir()
    km = ovl_mounts.kernel([rootfs], up, tmp_path / "kw", tmp_path / "km",
                           od.KERNEL_READ_OPTS)
    edits(km)
    kv = view(km)
    ovl_mounts.umount(km)
    m = mount(ref_a, opts=f"upper={up}")
    same_view(view(m), kv, "stratafs", "kernel overlay")
    run(["fusermount3", "-u", m])
    r = mount(ref_b, opts=f"upper={up}", check=False)
    assert r.returncode == 1 and ref_a in r.stderr, r


def test_continue_records_the_new_image(images, mount, strata, tmp_path):
    """strata commit --continue: the mount goes on from the committed
    image, and so does its upper directory: remounted on the old image it
    is refused (its changes are made on the new one), on the new one it
    is mounted. Before: the old image took it."""
    ref_a, _, (la, ta), _ = images
    up = tmp_path / "up"
    m = mount(ref_a, opts=f"upper={up}")
    (m / "one").write_bytes(b"one\n")
    strata("commit", "--continue", str(m), ":c1")
    (m / "one").unlink()                    # a change made on c1
    run(["fusermount3", "-u", m])
    r = mount(ref_a, opts=f"upper={up}", check=False)
    assert r.returncode == 1, r
    assert f"oci:{la}:{ta}" in r.stderr and f"oci:{la}@sha256:" in r.stderr
    m = mount(f"oci:{la}:c1", opts=f"upper={up}")
    assert not (m / "one").exists()
    assert (m / "etc/conf").read_bytes() == b"a\n"


def test_records_never_committed(images, mount, strata, tmp_path):
    """The layer a commit writes holds none of the records, neither from
    a live mount nor from the upper directory alone."""
    ref_a, _, (la, ta), _ = images
    up = tmp_path / "up"
    m = mount(ref_a, opts=f"upper={up}")
    edits(m)
    strata("commit", str(m), ":live")
    run(["fusermount3", "-u", m])
    strata("commit", "--upper", str(up), "--from", ref_a, ":off")
    import json
    for tag in ("live", "off"):
        idx = json.loads((la / "index.json").read_text())
        desc = next(d for d in idx["manifests"]
                    if d["annotations"]["org.opencontainers.image.ref.name"]
                    == tag)
        blob = lambda d: la / "blobs" / d.replace(":", "/")  # noqa: E731
        man = json.loads(blob(desc["digest"]).read_text())
        with tarfile.open(blob(man["layers"][-1]["digest"])) as t:
            for ti in t:
                bad = [k for k in ti.pax_headers if "strata" in k or
                       "overlay" in k]
                assert not bad, (tag, ti.name, bad)


def test_lowerdir_mount_records_no_image(tmp_path, ovl_mounts):
    """A lowerdir= mount has no image: it leaves no base record, and an
    image's record does not stop it (podman remounts with its own
    lowers)."""
    lowers = od.build_lowers(tmp_path / "low")
    for d in ("u", "w", "m"):
        (tmp_path / d).mkdir()
    m = ovl_mounts.impl(lowers, tmp_path / "u", tmp_path / "w",
                        tmp_path / "m", impl="stratafs")
    (m / "x").write_bytes(b"x\n")
    ovl_mounts.umount(m)
    assert not [x for x in os.listxattr(tmp_path / "u") if "base" in x]
    os.setxattr(tmp_path / "u", "trusted.overlay.strata.base",
                b"sha256:" + b"0" * 64 + b" other:image")
    m = ovl_mounts.impl(lowers, tmp_path / "u", tmp_path / "w",
                        tmp_path / "m", impl="stratafs")
    assert (m / "x").read_bytes() == b"x\n"


# --------------------------------------------------------------------------
# 3. -o options

def test_misspelt_option_is_an_error(images, mount, tmp_path):
    """`-o uppr=DIR`: before, a warning and a read-only mount; now exit 2,
    naming the option, what it may have meant and what -o takes."""
    up = tmp_path / "up"
    r = mount(images[0], opts=f"uppr={up}", check=False)
    assert r.returncode == 2, r
    assert f'unknown option "uppr={up}" (did you mean upper=?)' in r.stderr
    for s in ("upper=", "lowerdir=", "rebase", "nofail", "x-*"):
        assert s in r.stderr, (s, r.stderr)
    assert not is_mounted(tmp_path / "mnt1")
    assert not up.exists()
    r = mount(images[0], opts="context=system_u:object_r:tmp_t:s0",
              check=False)
    assert r.returncode == 2 and "context=" in r.stderr, r


def test_mount8_options_taken_everywhere(images, mount, tmp_path):
    """What /etc/fstab and mount(8) pass (through mount.fuse3 or not)."""
    opts = "defaults,nofail,_netdev,auto,noauto,user,users,x-systemd." \
        "automount,x-gvfs-show,comment=x,noatime,nodev,nosuid,noexec"
    m = mount(images[0], opts=f"{opts},upper={tmp_path / 'up'}")
    (m / "w").write_bytes(b"writable\n")
    mnt = tmp_path / "viafuse"
    mnt.mkdir()
    try:
        r = run(["mount", "-t", "fuse", f"{STRATAFS}#{images[0]}", mnt,
                 "-o", f"{opts},upper={tmp_path / 'up2'}"], check=False)
        assert r.returncode == 0 and is_mounted(mnt), r
        (mnt / "w").write_bytes(b"writable\n")
    finally:
        unmount(mnt)
    r = run(["mount", "-t", "fuse", f"{STRATAFS}#{images[0]}", mnt,
             "-o", f"uppr={tmp_path / 'up3'}"], check=False)
    try:
        assert r.returncode != 0 and not is_mounted(mnt), r
        assert "uppr=" in r.stderr, r
    finally:
        unmount(mnt)


@pytest.mark.parametrize("impl", ["fuse-overlayfs", "stratafs"])
def test_dropin_takes_fuse_overlayfs_options(impl, tmp_path, ovl_mounts):
    """A lowerdir= mount is given fuse-overlayfs's own options by
    containers-storage and by fstab lines written for fuse-overlayfs:
    whatever fuse-overlayfs takes, stratafs takes, with a warning for what
    it does not use."""
    lowers = od.build_lowers(tmp_path / "low")
    for d in ("u", "w", "m"):
        (tmp_path / d).mkdir()
    extra = "noxattrs=0,fsync=0,static_nlink,noacl,,writeback=1," \
        "fast_ino=0,threaded=0,nofail"
    cmd = ovl_mounts.impl_cmd(lowers, tmp_path / "u", tmp_path / "w",
                              tmp_path / "m", impl=impl, extra=extra)
    ovl_mounts.track(tmp_path / "m")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and is_mounted(tmp_path / "m"), r
    (tmp_path / "m/new").write_bytes(b"n\n")
    if impl == "stratafs":
        assert 'ignoring unknown option "static_nlink"' in r.stderr, r
        assert "nofail" not in r.stderr, r
