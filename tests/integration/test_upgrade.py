"""A read-only mount carries on through an upgrade of stratafs (issue 13):
SIGUSR2 to the supervisor execs the binary now installed where the mount's
stratafs was, handing it /dev/fuse, the connection's INIT and the mount's
command line; a binary that may not run as the supervisor, or cannot take
the mount over, is refused and the old one serves on.

A user's mount (not root: fusermount3 mounts it) upgrades the same way,
from a binary that user or root owns, and ends as any user's mount does:
`fusermount3 -u` as the user, or SIGTERM to the supervisor.

Another process holds files open and a working directory in the mount and
reads throughout (test_restart.py's helper); everything is compared with
`umoci unpack` of the same image, and which binary serves is read from
/proc/PID/exe (the inode of the file installed at the time).
"""
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from conftest import (STRATAFS, as_uid, assert_same_as_umoci, is_mounted,
                      run, umoci_rootfs)
from test_lazy import chunked_image  # noqa: F401 (module fixture)
from test_restart import (CWD, FILES, HELPER, ask, expected, kernel_resends,
                          serving, supervisor_and_worker)


def ino(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def install(src, dest, mode=0o755, owner=None):
    """Put a copy of @src at @dest as an installer does: a new file
    renamed over the old one (a new inode)."""
    tmp = dest.with_name(".new-" + dest.name)
    shutil.copyfile(src, tmp)
    os.chmod(tmp, mode)
    if owner is not None:
        os.chown(tmp, owner, owner)
    os.rename(tmp, dest)
    return ino(dest)


def served_by(mnt, not_worker):
    """(supervisor, worker) of @mnt once a worker other than @not_worker
    serves it (an upgrade probes the new binary first: longer)."""
    return supervisor_and_worker(mnt, not_worker, tries=3000)


def test_upgrade_keeps_open_files_and_refuses_bad_binaries(
        chunked_image, mount, tmp_path):
    layout, tag, chunked = chunked_image
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "stratafs"
    first = install(STRATAFS, exe)
    # lazy layers, nothing prefetched: the upgraded binary fetches files
    mnt = mount(chunked, opts="prefetch=0", binary=exe)
    want = expected(umoci_rootfs(layout, tag, tmp_path / "ref"))
    sup, worker = served_by(mnt, None)
    assert ino(f"/proc/{sup}/exe") == first
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER, str(mnt), CWD, ",".join(FILES)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert helper.stdout.readline() == "ready\n"
        assert ask(helper, "check") == want

        # refused: a stratafs that speaks another handover protocol (a
        # wrapper, which a real binary could be), stratafs not owned by
        # root, stratafs in a directory others can write to, a program
        # that is not stratafs. Each time the supervisor
        # serves on; the worker it forks after (SIGUSR1, handled once
        # the upgrade was decided) is still the first binary.
        wrapper = tmp_path / "wrapper"
        wrapper.write_text("#!/bin/sh\nSTRATAFS_RESUME_PROTO=2 "
                           f"exec {STRATAFS} \"$@\"\n")
        for bad, owner, dirmode in ((wrapper, None, 0o755),
                                    (STRATAFS, 65534, 0o755),
                                    (STRATAFS, None, 0o1777),
                                    (shutil.which("echo"), None, 0o755)):
            install(bad, exe, owner=owner)
            os.chmod(bindir, dirmode)
            os.kill(sup, signal.SIGUSR2)
            os.kill(sup, signal.SIGUSR1)
            sup2, worker2 = served_by(mnt, worker)
            os.chmod(bindir, 0o755)
            assert sup2 == sup, bad
            assert ino(f"/proc/{sup}/exe") == first, bad
            assert ino(f"/proc/{worker2}/exe") == first, bad
            assert ask(helper, "check") == want, bad
            worker = worker2

        # accepted, while the helper reads: requests in flight are
        # answered by the new binary's worker
        second = install(STRATAFS, exe)
        assert second != first
        if kernel_resends():
            ask(helper, "hammer")
        os.kill(sup, signal.SIGUSR2)
        sup2, worker2 = served_by(mnt, worker)
        assert sup2 == sup
        assert ino(f"/proc/{sup}/exe") == second
        assert ino(f"/proc/{worker2}/exe") == second
        if kernel_resends():
            got = ask(helper, "stop")
            assert got["errors"] == [] and got["iters"] > 0, got
        # the node ids of the old binary's open files and cwd, and new
        # lookups from the root, compared whole with umoci's
        assert ask(helper, "check") == want
        assert_same_as_umoci(mnt, layout, tag, tmp_path / "ref2")
    finally:
        helper.kill()
        helper.wait()
    # the upgraded supervisor unmounts on SIGTERM (libfuse does not
    # know the mount it was handed) and exits, its worker with it
    os.kill(sup, signal.SIGTERM)
    for _ in range(1000):
        if not serving(mnt) and not is_mounted(mnt):
            break
        time.sleep(0.01)
    assert not serving(mnt) and not is_mounted(mnt)


def test_nosupervise_is_one_process(chunked_image, mount, tmp_path):
    """-o nosupervise (the bench's baseline): the process that mounted
    serves, no stratafs-serve child; what it serves is umoci's tree."""
    layout, tag, _ = chunked_image
    mnt = mount(f"oci:{layout}:{tag}", opts="nosupervise")
    procs = serving(mnt)
    assert [c for _, c in procs.values()] == ["stratafs"], procs
    assert_same_as_umoci(mnt, layout, tag, tmp_path / "ref")


# --- a user's mount ---------------------------------------------------------

NOBODY = 65534
OTHER = 1000	# another user: need not exist


@pytest.fixture(scope="module")
def helper_want(chunked_image, tmp_path_factory):
    """What the helper reads, from umoci's unpack of the image."""
    layout, tag, _ = chunked_image
    return expected(umoci_rootfs(layout, tag,
                                 tmp_path_factory.mktemp("upg") / "ref"))


@pytest.fixture
def user_home(chunked_image, open_dir, dev_fuse_open):
    """nobody's directory (0755, in open_dir): the image's gzip layout,
    bin/stratafs (a copy nobody owns) and mnt/; nobody's environment."""
    layout, tag, _ = chunked_image
    home = open_dir / "home"
    shutil.copytree(layout, home / "layout")
    for d in ("bin", "mnt"):
        (home / d).mkdir()
    for dirpath, dirnames, filenames in os.walk(home):
        for n in [""] + dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), NOBODY, NOBODY)
    os.chmod(home, 0o755)
    exe = home / "bin" / "stratafs"
    env = dict(os.environ, HOME=str(home), STRATA_ROOT=str(home / "store"))
    env.pop("XDG_DATA_HOME", None)
    return types.SimpleNamespace(
        home=home, bindir=home / "bin", exe=exe, mnt=home / "mnt",
        first=install(STRATAFS, exe, owner=NOBODY), env=env,
        layout=layout, tag=tag, ref=f"oci:{home}/layout:{tag}")


@pytest.fixture
def user_allow_other():
    """user_allow_other in /etc/fuse.conf for the test, then put back."""
    conf = Path("/etc/fuse.conf")
    old = conf.read_bytes() if conf.exists() else None
    try:
        with open(conf, "ab") as f:
            f.write(b"\nuser_allow_other\n")
        yield
    finally:
        if old is None:
            conf.unlink()
        else:
            conf.write_bytes(old)


def user_mount(mount, u, opts=None):
    """nobody mounts @u's layout from @u's bin/stratafs: (mount point,
    supervisor pid, worker pid)."""
    mnt = mount(u.ref, mnt=u.mnt, opts=opts, env=u.env,
                preexec_fn=as_uid(NOBODY), binary=u.exe)
    sup, worker = served_by(mnt, None)
    assert os.stat(f"/proc/{sup}").st_uid == NOBODY
    assert os.stat(f"/proc/{worker}").st_uid == NOBODY
    assert ino(f"/proc/{sup}/exe") == u.first
    return mnt, sup, worker


def errno_as(uid, path):
    """What os.listdir(@path) gives user @uid: "ok" or the errno's name."""
    r = subprocess.run(
        ["/usr/bin/python3", "-c", "import errno, os, sys\ntry:\n"
         " os.listdir(sys.argv[1]); print('ok')\nexcept OSError as e:\n"
         " print(errno.errorcode[e.errno])", str(path)],
        capture_output=True, text=True, preexec_fn=as_uid(uid), cwd="/")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def gone(mnt):
    """Wait until nothing serves or mounts @mnt; say whether so."""
    for _ in range(1000):
        if not serving(mnt) and not is_mounted(mnt):
            return True
        time.sleep(0.01)
    return False


def user_unmounts(mnt):
    """`fusermount3 -u` as nobody succeeds; supervisor and worker end."""
    r = run(["fusermount3", "-u", mnt], check=False,
            preexec_fn=as_uid(NOBODY), cwd="/")
    assert r.returncode == 0, r.stderr
    assert gone(mnt), serving(mnt)


def test_user_upgrade_keeps_open_files_refuses_others_binaries(
        user_home, mount, helper_want, tmp_path):
    """nobody's mount (no allow_other) upgrades to a binary nobody owns in
    a directory only nobody can write, while another process of nobody's
    reads; a binary another user could have written is refused; other
    users are refused the mount before and after; `fusermount3 -u` by
    nobody ends it all."""
    u, want = user_home, helper_want
    mnt, sup, worker = user_mount(mount, u)
    assert errno_as(OTHER, mnt) == "EACCES"
    helper = subprocess.Popen(
        ["/usr/bin/python3", "-c", HELPER, str(mnt), CWD, ",".join(FILES)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        preexec_fn=as_uid(NOBODY), cwd="/")
    try:
        assert helper.stdout.readline() == "ready\n"
        assert ask(helper, "check") == want
        # refused: stratafs itself (it would take the mount over), but a
        # file or directory another user owns or may write to; the
        # supervisor serves on, a new worker (SIGUSR1) of the first binary
        for what, mode, owner, dmode, downer in (
                ("writable by all", 0o777, NOBODY, 0o755, NOBODY),
                ("writable by its group", 0o775, NOBODY, 0o755, NOBODY),
                ("in a 1777 directory", 0o755, NOBODY, 0o1777, NOBODY),
                ("another user's", 0o755, OTHER, 0o755, NOBODY),
                ("in another user's directory", 0o755, NOBODY, 0o755,
                 OTHER)):
            install(STRATAFS, u.exe, mode=mode, owner=owner)
            os.chown(u.bindir, downer, downer)
            os.chmod(u.bindir, dmode)
            os.kill(sup, signal.SIGUSR2)
            os.kill(sup, signal.SIGUSR1)
            sup2, worker2 = served_by(mnt, worker)
            os.chown(u.bindir, NOBODY, NOBODY)
            os.chmod(u.bindir, 0o755)
            assert sup2 == sup, what
            assert ino(f"/proc/{sup}/exe") == u.first, what
            assert ino(f"/proc/{worker2}/exe") == u.first, what
            assert ask(helper, "check") == want, what
            worker = worker2

        # accepted: nobody's own, while the helper reads
        second = install(STRATAFS, u.exe, owner=NOBODY)
        if kernel_resends():
            ask(helper, "hammer")
        os.kill(sup, signal.SIGUSR2)
        sup2, worker2 = served_by(mnt, worker)
        assert sup2 == sup
        assert ino(f"/proc/{sup}/exe") == second
        assert ino(f"/proc/{worker2}/exe") == second
        assert os.stat(f"/proc/{worker2}").st_uid == NOBODY
        if kernel_resends():
            got = ask(helper, "stop")
            assert got["errors"] == [] and got["iters"] > 0, got
        assert ask(helper, "check") == want
        assert_same_as_umoci(mnt, u.layout, u.tag, tmp_path / "ref",
                             uid=NOBODY)
        assert errno_as(OTHER, mnt) == "EACCES"
    finally:
        helper.kill()
        helper.wait()
    user_unmounts(mnt)


def test_user_upgrade_allow_other_then_sigterm(
        user_home, user_allow_other, mount, tmp_path):
    """nobody's allow_other mount upgrades to root's binary installed in
    nobody's directory; another user reads umoci's tree before and after;
    SIGTERM to the upgraded supervisor unmounts (through fusermount3: a
    user cannot umount2) and both processes end. fusermount3 is not on
    the daemon's PATH: libfuse mounts with its own, and so must the
    upgraded daemon unmount."""
    u = user_home
    u.env["PATH"] = str(u.bindir)
    mnt, sup, worker = user_mount(mount, u, opts="allow_other")
    assert_same_as_umoci(mnt, u.layout, u.tag, tmp_path / "ref", uid=OTHER)
    second = install(STRATAFS, u.exe, owner=0)
    os.kill(sup, signal.SIGUSR2)
    sup2, worker2 = served_by(mnt, worker)
    assert sup2 == sup
    assert ino(f"/proc/{sup}/exe") == second
    assert ino(f"/proc/{worker2}/exe") == second
    assert_same_as_umoci(mnt, u.layout, u.tag, tmp_path / "ref2", uid=OTHER)
    os.kill(sup, signal.SIGTERM)
    assert gone(mnt), serving(mnt)


def test_user_failed_upgrade_then_fusermount(user_home, mount, tmp_path):
    """An upgrade of nobody's mount the probe refuses (a stratafs of
    another handover protocol) leaves the first binary serving, and
    `fusermount3 -u` by nobody then ends it all."""
    u = user_home
    mnt, sup, worker = user_mount(mount, u)
    wrapper = u.home / "wrapper"
    wrapper.write_text("#!/bin/sh\nSTRATAFS_RESUME_PROTO=2 "
                       f"exec {STRATAFS} \"$@\"\n")
    install(wrapper, u.exe, owner=NOBODY)
    os.kill(sup, signal.SIGUSR2)
    os.kill(sup, signal.SIGUSR1)
    sup2, worker2 = served_by(mnt, worker)
    assert sup2 == sup
    assert ino(f"/proc/{sup}/exe") == u.first
    assert ino(f"/proc/{worker2}/exe") == u.first
    assert_same_as_umoci(mnt, u.layout, u.tag, tmp_path / "ref", uid=NOBODY)
    user_unmounts(mnt)
