#!/usr/bin/python3
"""What supervision costs a read-only mount (fs/resume.c).

    /usr/bin/python3 tests/bench/supervise.py [--quick] [--runs N] [--build DIR]

On run.py's benchmark image (built and cached in /var/tmp/strata-bench),
imported once into a scratch store, times with the page cache dropped
(interleaved, each round all three, for a noisy machine):

  unsupervised  stratafs -o nosupervise: one process, clone_fd
  supervised    the default: a supervisor and its stratafs-serve child,
                which reads /dev/fuse without clone_fd; on a kernel with
                FUSE_NOTIFY_RESEND (6.9) no request is copied
  copying       supervised with STRATAFS_RESUME_REPLAY=slots: each request
                also copied to shared memory (older kernels' path, and
                every kernel's before this change)

for `find . | wc -l` (lookups, getattr, readdir) and `tar cf - . | cat`
(every file read), each on a fresh mount, and the CPU time of the process
that serves (the child when supervised). With --warm the page cache is
not dropped: the store's files stay cached, a fresh mount's own pages are
empty, so what is timed is FUSE's and the daemon's cost alone. Prints
medians (min-max) and ratios to unsupervised; asserts nothing; not part
of the test suite. Run as root.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

KINDS = {
    "unsupervised": ("nosupervise", {}),
    "supervised": ("", {}),
    "copying": ("", {"STRATAFS_RESUME_REPLAY": "slots"}),
}
WORK = {
    "find": "find . | wc -l",
    "tar": "tar cf - . | cat >/dev/null",
}


def cpu(pid):
    """utime + stime of @pid, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(cmd, cwd):
    t = time.monotonic()
    subprocess.run(cmd, shell=True, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - t


def row(name, times, base_kind):
    out = f"{name:14}"
    for work in WORK:
        v = times[(name, work)]
        base = statistics.median(times[(base_kind, work)])
        med = statistics.median(v)
        out += (f"{bench.fmt_s(med):>9} ({bench.fmt_s(min(v))}-"
                f"{bench.fmt_s(max(v))}) x{med / base:.2f}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--build", default="build-bench")
    ap.add_argument("--warm", action="store_true")
    a = ap.parse_args()
    stratafs = Path(a.build).resolve() / "fs" / "stratafs"
    layout, tag, _ = bench.build_image(a.quick)
    tmp = Path(tempfile.mkdtemp(prefix="strata-sup-", dir="/var/tmp"))
    env = dict(os.environ, STRATA_ROOT=str(tmp / "store"))
    mnt = tmp / "mnt"
    mnt.mkdir()
    times = {(k, w): [] for k in KINDS for w in WORK}
    cpus = {(k, w): [] for k in KINDS for w in WORK}
    try:
        for r in range(a.runs):
            for kind, (opts, extra) in KINDS.items():
                for work, cmd in WORK.items():
                    args = [stratafs] + (["-o", opts] if opts else [])
                    bench.sh(args + [f"oci:{layout}:{tag}", mnt],
                             env=dict(env, **extra))
                    bench.MOUNTS.append(str(mnt))
                    pid = bench.daemon_pid(mnt, "stratafs")
                    if not a.warm:
                        bench.drop_caches()
                    c = cpu(pid)
                    t = timed(cmd, mnt)
                    c = cpu(pid) - c
                    times[(kind, work)].append(t)
                    cpus[(kind, work)].append(c)
                    bench.unmount(mnt)
                    bench.log(f"run {r + 1} {kind:12} {work:4} "
                              f"{bench.fmt_s(t)} daemon CPU "
                              f"{bench.fmt_s(c)}")
    finally:
        bench.unmount_all()
        bench.rmtree(tmp)
    for title, t in (("wall", times), ("daemon CPU", cpus)):
        print(f"\n{title:14}" + "".join(f"{w:>28}" for w in WORK))
        for kind in KINDS:
            print(row(kind, t, "unsupervised"))


if __name__ == "__main__":
    main()
