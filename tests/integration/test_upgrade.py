"""A read-only mount carries on through an upgrade of stratafs (issue 13):
SIGUSR2 to the supervisor execs the binary now installed where the mount's
stratafs was, handing it /dev/fuse, the connection's INIT and the mount's
command line; a binary that may not run as the supervisor, or cannot take
the mount over, is refused and the old one serves on.

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

from conftest import STRATAFS, assert_same_as_umoci, is_mounted, umoci_rootfs
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
