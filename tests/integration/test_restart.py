"""A read-only mount outlives the process serving it (issue 13): the
supervisor (the stratafs process that mounted) keeps /dev/fuse and forks a
new worker when the old one dies, so open files, working directories and
requests in flight carry on, and the kernel connection never aborts.

Checked from another process that holds open files and a working
directory in the mount and reads throughout, dropping their cached pages
and listing and looking up new names (so the new worker, not the kernel's
cache, answers for the old node ids); everything compared with `umoci
unpack` of the same image. The image is the busybox one test_lazy.py builds, mounted
from its gzip layout and, converted by skopeo, as lazy zstd:chunked
layers (files fetched after the restart).
"""
import errno
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from conftest import (assert_same_as_umoci, is_mounted, umoci_rootfs,
                      unmount)
from test_lazy import chunked_image  # noqa: F401 (module fixture)

FILES = ["bin/busybox", "etc/hello", "var/lib/y/z"]
CWD = "var/lib/y"

# Holds FILES open and CWD as its working directory; answers "check" with
# what it reads (page cache dropped first), "hammer" starts reading in a
# loop, "stop" ends that and says what failed.
HELPER = r"""
import hashlib, json, os, sys, threading
mnt = sys.argv[1]
fds = {f: os.open(os.path.join(mnt, f), os.O_RDONLY)
       for f in sys.argv[3].split(",")}
os.chdir(os.path.join(mnt, sys.argv[2]))

n = [0]
def look():
    out = {}
    for f, fd in fds.items():
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        size = os.fstat(fd).st_size
        out[f] = hashlib.sha256(os.pread(fd, size, 0)).hexdigest()
    # the listing cached in the kernel dropped too, and a name never
    # looked up: both asked of the daemon, for the cwd's node id
    dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    os.posix_fadvise(dfd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(dfd)
    out["ls ."] = sorted(os.listdir("."))
    try:
        os.stat("never-looked-up-%d" % n[0])
    except FileNotFoundError:
        out["stat new"] = "ENOENT"
    n[0] += 1
    with open("z", "rb") as f:
        out["./z"] = hashlib.sha256(f.read()).hexdigest()
    out["stat ."] = oct(os.stat(".").st_mode)
    return out

stop, errors, iters = threading.Event(), [], [0]
def hammer(want):
    while not stop.is_set():
        try:
            got = look()
            if got != want:
                errors.append("differs: %r" % got)
        except OSError as e:
            errors.append(repr(e))
        iters[0] += 1

print("ready", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "check":
        try:
            print(json.dumps(look()), flush=True)
        except OSError as e:
            print(json.dumps({"error": repr(e)}), flush=True)
    elif cmd == "hammer":
        t = threading.Thread(target=hammer, args=(look(),))
        t.start()
        print("started", flush=True)
    elif cmd == "stop":
        stop.set()
        t.join()
        print(json.dumps({"iters": iters[0], "errors": errors[:5]}),
              flush=True)
"""


def serving(mnt):
    """{pid: (ppid, comm)} of the live stratafs processes of @mnt."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        if (str(mnt).encode() not in cmd or not comm.startswith("stratafs")
                or st[st.rindex(")") + 2] == "Z"):
            continue
        out[int(d)] = (int(st[st.rindex(")") + 2:].split()[1]), comm)
    return out


def supervisor_and_worker(mnt, not_worker=None, tries=1000):
    """(supervisor pid, worker pid) once a worker other than @not_worker
    serves @mnt (polled @tries times, 10 ms apart)."""
    for _ in range(tries):
        p = serving(mnt)
        sup = [pid for pid, (_, comm) in p.items() if comm == "stratafs"]
        work = [pid for pid, (pp, comm) in p.items()
                if comm == "stratafs-serve" and pp in sup and
                pid != not_worker]
        if len(sup) == 1 and len(work) == 1:
            return sup[0], work[0]
        time.sleep(0.01)
    raise AssertionError(f"no supervisor and new worker for {mnt}: "
                         f"{serving(mnt)}")


def expected(rootfs):
    out = {f: hashlib.sha256((rootfs / f).read_bytes()).hexdigest()
           for f in FILES}
    out["ls ."] = sorted(os.listdir(rootfs / CWD))
    out["./z"] = out["var/lib/y/z"]
    out["stat new"] = "ENOENT"
    out["stat ."] = oct(os.stat(rootfs / CWD).st_mode)
    return out


def ask(helper, cmd):
    helper.stdin.write(cmd + "\n")
    helper.stdin.flush()
    # not a timing check: a request nobody answers would hang the test
    ready, _, _ = select.select([helper.stdout], [], [], 300)
    assert ready, f"no answer to {cmd}: a request was never answered"
    line = helper.stdout.readline()
    assert line, f"helper died on {cmd}"
    return line if cmd == "hammer" else json.loads(line)


def kernel_resends():
    """Does this kernel queue a dead worker's requests again when asked
    (FUSE_NOTIFY_RESEND, Linux 6.9)?"""
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) >= (6, 9)


# "kernel": the kernel re-queues the requests the dead worker had read;
# "slots": stratafs replays its own copies of them, as on kernels before
# 6.9, which misses one the kernel handed over in the microseconds before
# the copy: so no reads during the kill there.
@pytest.mark.parametrize("kind,replay", [("gzip", "slots"),
                                         ("zstd:chunked", "kernel")])
def test_open_files_and_cwd_survive_worker_kill(chunked_image, mount,
                                                tmp_path, kind, replay):
    layout, tag, chunked = chunked_image
    ref = f"oci:{layout}:{tag}" if kind == "gzip" else chunked
    if replay == "kernel" and not kernel_resends():
        pytest.skip("the kernel cannot queue requests again (before 6.9)")
    env = dict(os.environ)
    if replay == "slots":
        env["STRATAFS_RESUME_REPLAY"] = "slots"
    # prefetch=0: lazy files not read before the kill are fetched by the
    # new worker
    mnt = mount(ref, opts="prefetch=0", env=env)
    want = expected(umoci_rootfs(layout, tag, tmp_path / "ref"))
    sup, worker = supervisor_and_worker(mnt)
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER, str(mnt), CWD, ",".join(FILES)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert helper.stdout.readline() == "ready\n"
        assert ask(helper, "check") == want
        # killed while the helper reads: requests in flight are answered
        # by the next worker; then a restart asked of the supervisor
        if replay == "kernel":
            ask(helper, "hammer")
        os.kill(worker, signal.SIGKILL)
        sup2, worker2 = supervisor_and_worker(mnt, not_worker=worker)
        assert sup2 == sup
        os.kill(sup, signal.SIGUSR1)
        _, worker3 = supervisor_and_worker(mnt, not_worker=worker2)
        if replay == "kernel":
            got = ask(helper, "stop")
            assert got["errors"] == [] and got["iters"] > 0, got
        # the open files and the cwd keep node ids only the dead worker
        # had handed out
        assert ask(helper, "check") == want
        # a walk from the root, compared whole with umoci's
        assert_same_as_umoci(mnt, layout, tag, tmp_path / "ref2")
        assert serving(mnt).keys() == {sup, worker3}
    finally:
        helper.kill()
        helper.wait()
    # unmounted: the supervisor reaps its worker and exits, nothing left
    unmount(mnt)
    for _ in range(1000):
        if not serving(mnt):
            break
        time.sleep(0.01)
    assert not serving(mnt) and not is_mounted(mnt)


def test_writable_mount_crash_is_enotconn_and_remount_keeps_writes(
        chunked_image, mount, tmp_path):
    """A writable mount is one process, not restarted (stratafs(1),
    "Restarts and crashes"): its kill -9 aborts the connection, an open
    file then fails with ENOTCONN, and a new mount of the upper directory
    has what was written before."""
    layout, tag, _ = chunked_image
    upper = tmp_path / "upper"
    mnt = mount(f"oci:{layout}:{tag}", opts=f"upper={upper}")
    procs = serving(mnt)
    assert [c for _, c in procs.values()] == ["stratafs"], procs
    fd = os.open(mnt / "etc/hello", os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.write(fd, b"before\n") == 7
        os.kill(next(iter(procs)), signal.SIGKILL)
        with pytest.raises(OSError) as e:
            os.write(fd, b"after\n")
        assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        with pytest.raises(OSError) as e:
            os.stat(mnt / "etc/not-looked-up-before")
        assert e.value.errno == errno.ENOTCONN
    finally:
        os.close(fd)
    unmount(mnt)
    mnt2 = mount(f"oci:{layout}:{tag}", opts=f"upper={upper}")
    assert (mnt2 / "etc/hello").read_bytes() == b"before\n"
