#!/usr/bin/python3
"""Lazy zstd:chunked layers: mounting before the bytes arrive.

    /usr/bin/python3 tests/bench/lazy.py [--quick] [--runs N] [--build DIR]
    /usr/bin/python3 tests/bench/lazy.py --mount-only --build A --build B
    /usr/bin/python3 tests/bench/lazy.py --gzip [--no-warm] --build A --build B
    /usr/bin/python3 tests/bench/lazy.py --gzip --registry [--build A]
    /usr/bin/python3 tests/bench/lazy.py --fill --build A --build B


Takes the benchmark image of run.py (built and cached by it in
/var/tmp/strata-bench), converts it once with skopeo to zstd:chunked
(`skopeo copy --dest-compress-format zstd:chunked`, cached beside it), and
times, each run into a fresh store with the page cache dropped:

  lazy       stratafs -o prefetch=0 on the zstd:chunked layout: the command
             returns once the mount is live (every TOC read and verified)
  full zstd  stratafs -o lazy=0 on the same layout: today's path, every
             layer unpacked before the mount
  full gzip  stratafs on the original gzip layout (today's import)
  lazy reg   stratafs -o prefetch=0 on docker://, the zstd:chunked image
             pushed by skopeo to Debian's docker-registry on 127.0.0.1
  full reg   stratafs -o lazy=0 on that docker:// reference: pulled and
             unpacked in full before the mount

then, on the lazy mount, the bytes the daemon read from the blobs
(/proc/PID/io rchar) for `find` over the whole tree, for `ls -lR`, and
for reading one file (the largest under usr/share), against the total
size of the zstd:chunked blobs. Prints medians (min-max) and ratios;
asserts nothing; not part of the test suite. Run as root.

With --mount-only, only the lazy mounts (layout and registry), each
--build given in turn in every run (interleaved, for a before/after on a
noisy machine), with the mount command's user and system CPU time (its
rusage: the work before the daemon forks); each first into a fresh store
(the TOCs read and the cache entries built), then again into that store
(the entries there: a second mount of the image).

With --fill, the background fill of the zstd:chunked image from the
loopback registry (prefetch=all), each --build in turn in every run: the
time from the mount command until every file is filled and every layer
checked (diff_id recorded), and the bytes the registry sent meanwhile
(its wchar) against the blobs' size.

With --gzip, the original gzip layout instead (store/layer/lazy-zran.c), each
--build in turn in every run, with the command's CPU time:

  first ls   stratafs -o lazy=all,prefetch=0 then `ls /`: the metadata
             pass (blob copy, decompress, check entries, hash the blob,
             index, access points)
  full gzip  stratafs -o lazy=0 then `ls /`: today's full import
  warm read  every file read (`tar c . | cat >/dev/null`) with a cold page
             cache, on a lazy layer the background fill has completed,
             against the same on the fully unpacked store

With --gzip --registry, the same first ls (no warm reads) from docker://,
the gzip layout pushed as it is by skopeo to Debian's docker-registry on
127.0.0.1: the lazy pass reads the download as it arrives, the full pull
unpacks it as it arrives.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402


def convert(layout, tag, quick):
    dst = bench.CACHE / f"image-{'quick' if quick else 'full'}-zchunked"
    stamp = dst / "built.json"
    src_index = (layout / "index.json").read_text()
    if stamp.exists() and json.loads(stamp.read_text()).get("from") == \
            src_index:
        bench.log(f"reusing {dst}")
        return dst
    bench.rmtree(dst)
    bench.log("converting the image to zstd:chunked with skopeo")
    bench.sh(["skopeo", "copy", "-q", "--dest-compress-format",
              "zstd:chunked", f"oci:{layout}:{tag}", f"oci:{dst}:{tag}"])
    stamp.write_text(json.dumps({"from": src_index}))
    return dst


def blob_bytes(layout, tag):
    return sum(Path(p).stat().st_size
               for p in bench.image_layers(layout, tag)[0])


def rchar(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def mount_time(build, ref, opts, work, store=None):
    store, mnt = store or work / "store", work / "mnt"
    bench.rmtree(store)
    mnt.mkdir(exist_ok=True)
    env = dict(os.environ, STRATA_ROOT=str(store))
    bench.drop_caches()
    t = time.monotonic()
    bench.sh([build / "fs/stratafs", "-o", opts, ref, mnt], env=env)
    dt = time.monotonic() - t
    bench.MOUNTS.append(str(mnt))
    return dt, mnt


def mount_cpu(build, ref, opts, work, store=None, fresh=True):
    """mount_time() with the command's (wall, user, sys) seconds; with
    fresh false, in the store as the last mount left it (the image's
    lazy cache entries already built)."""
    store, mnt = store or work / "store", work / "mnt"
    if fresh:
        bench.rmtree(store)
    mnt.mkdir(exist_ok=True)
    env = dict(os.environ, STRATA_ROOT=str(store))
    bench.drop_caches()
    t = time.monotonic()
    p = subprocess.Popen([str(build / "fs/stratafs"), "-o", opts, ref,
                          str(mnt)], env=env)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.monotonic() - t
    bench.MOUNTS.append(str(mnt))
    if status != 0:
        raise SystemExit(f"stratafs {ref} failed ({status})")
    return dt, ru.ru_utime, ru.ru_stime


def main_mount_only(a, builds, zc, tag):
    res = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as w:
        work = Path(w)
        reg = None
        try:
            reg, rref = start_registry(work, zc, tag)
            cases = [("layout", f"oci:{zc}:{tag}", "prefetch=0"),
                     ("registry", rref, "prefetch=0,tls_verify=false")]
            for _ in range(a.runs):
                for name, ref, opts in cases:
                    for b in builds:
                        for when in ("first", "second"):
                            r = mount_cpu(b, ref, opts, work,
                                          fresh=when == "first")
                            res.setdefault((name, when, str(b)),
                                           []).append(r)
                            bench.unmount(work / "mnt")
        finally:
            bench.unmount_all()
            if reg:
                os.killpg(reg.pid, 9)
                reg.wait()
    print(f"## lazy mount until live ({'quick' if a.quick else 'full'} "
          f"image, {a.runs} interleaved runs, page cache dropped; first: "
          f"a fresh store, second: the same store again)\n")
    print("| from | mount | build | wall median | min-max | user | sys | "
          "runs |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, when, b), rs in res.items():
        w = [r[0] for r in rs]
        print(f"| {name} | {when} | {b} | "
              f"{bench.fmt_s(statistics.median(w))} | "
              f"{bench.fmt_s(min(w))}-{bench.fmt_s(max(w))} | "
              f"{statistics.median(r[1] for r in rs):.2f} s | "
              f"{statistics.median(r[2] for r in rs):.2f} s | "
              f"{', '.join(f'{x:.2f}' for x in w)} |")


def wchar(pid):
    """Bytes process @pid wrote (a registry: what it sent)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def main_fill(a, builds, zc, tag):
    """--fill: the background fill of the zstd:chunked image from the
    loopback registry, each --build in turn: from the mount command to
    every file filled and every layer checked (its diff_id recorded),
    and the bytes the registry sent meanwhile (its /proc/PID/io wchar),
    against the blobs' total size."""
    res = {}
    total = blob_bytes(zc, tag)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as w:
        work = Path(w)
        reg = None
        try:
            reg, rref = start_registry(work, zc, tag)
            ctx = argparse.Namespace(work=work)
            bench.make_scratch(ctx, 8)
            store = ctx.scratch / "store"
            for _ in range(a.runs):
                for b in builds:
                    sent = wchar(reg.pid)
                    t = time.monotonic()
                    mount_cpu(b, rref, "prefetch=all,tls_verify=false",
                              work, store)
                    while not lazy_filled(store):
                        time.sleep(0.1)
                    res.setdefault(str(b), []).append(
                        (time.monotonic() - t, wchar(reg.pid) - sent))
                    bench.unmount(work / "mnt")
        finally:
            bench.unmount_all()
            if reg:
                os.killpg(reg.pid, 9)
                reg.wait()
    size = "quick" if a.quick else "full"
    print(f"## background fill from docker:// ({size} image, "
          f"{total / 2**20:.0f} MiB of zstd:chunked blobs, {a.runs} "
          f"interleaved runs, prefetch=all)\n")
    print("| build | mount to filled and checked, median | min-max | "
          "registry sent (median) | sent / blobs |")
    print("|---|---|---|---|---|")
    for b, rs in res.items():
        w = [r[0] for r in rs]
        rd = statistics.median(r[1] for r in rs)
        print(f"| {b} | {bench.fmt_s(statistics.median(w))} | "
              f"{bench.fmt_s(min(w))}-{bench.fmt_s(max(w))} | "
              f"{rd / 2**20:.0f} MiB | {rd / total:.2f} |")


def fetched(mnt, cmd):
    pid = bench.daemon_pid(mnt, "stratafs")
    before = rchar(pid)
    subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=mnt)
    return rchar(pid) - before


def start_registry(work, zc, tag):
    """docker-registry on a free port, the layout @zc (the zstd:chunked
    image, or the gzip one) pushed to it by skopeo; returns (process,
    docker:// reference)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = work / "registry.yml"
    conf.write_text("version: 0.1\nlog:\n  level: error\nstorage:\n"
                    f"  filesystem:\n    rootdirectory: {work}/data\n"
                    f"http:\n  addr: 127.0.0.1:{port}\n")
    reg = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(conf)],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            time.sleep(0.025)
    policy = work / "policy.json"
    policy.write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    ref = f"docker://127.0.0.1:{port}/bench/lazy:{tag}"
    bench.sh(["skopeo", "--policy", policy, "copy", "--dest-tls-verify=false",
              f"oci:{zc}:{tag}", ref])
    return reg, ref


def first_ls(build, ref, opts, work, store=None):
    t = time.monotonic()
    dt, mnt = mount_time(build, ref, opts, work, store)
    subprocess.run(["ls", mnt], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - t, mnt


def read_all(mnt):
    bench.drop_caches()
    t = time.monotonic()
    subprocess.run("tar cf - . | cat >/dev/null", shell=True, cwd=mnt,
                   check=True)
    return time.monotonic() - t


def lazy_filled(store):
    """Have all lazy layers of @store every content file, and has the fill
    checked their diff_id (it reads the whole stream)?"""
    import struct
    d = store / "layers" / "lazy"
    for p in d.iterdir():
        if p.is_dir() and p.name != "content":
            n = struct.unpack("<I", (p / "contents").read_bytes()[8:12])[0]
            if len(os.listdir(p / "data")) < n or \
                    not (p / "diff_id").exists():
                return False
    return True


def main_gzip(a, builds, layout, tag):
    """Each run: for each build in turn, the full import then the lazy
    pass (first ls, with the command's CPU time); the last build then
    fills and reads everything warm, against its own unpacked store."""
    times = {}
    ref, extra, reg = f"oci:{layout}:{tag}", "", None
    with tempfile.TemporaryDirectory(dir="/var/tmp") as w:
        work = Path(w)
        try:
            if a.registry:
                reg, ref = start_registry(work, layout, tag)
                extra, a.no_warm = ",tls_verify=false", True
            # the store on run.py's scratch ext4 (no discard): on a root
            # filesystem mounted with discard, the removal of the previous
            # run's store makes the next run's fsyncs wait
            ctx = argparse.Namespace(work=work)
            bench.make_scratch(ctx, 8)
            store = ctx.scratch / "store"
            mnt = work / "mnt"
            for _ in range(a.runs):
                for b in builds:
                    for case, opts in (("full gzip", "lazy=0"),
                                       ("lazy gzip", "lazy=all,prefetch=0")):
                        r = mount_cpu(b, ref, opts + extra, work, store)
                        t = time.monotonic()
                        subprocess.run(["ls", mnt], stdout=subprocess.DEVNULL,
                                       check=True)
                        r = (r[0] + time.monotonic() - t,) + r[1:]
                        times.setdefault((f"first ls, {case}", str(b)),
                                         []).append(r)
                        if case == "full gzip" and b == builds[-1] and \
                                not a.no_warm:
                            times.setdefault(("warm read, unpacked", str(b)),
                                             []).append((read_all(mnt), 0, 0))
                        bench.unmount(mnt)
                if a.no_warm:
                    continue
                b = builds[-1]
                # the fill, then a warm mount of the filled layers
                mount_cpu(b, ref, "lazy=all", work, store)
                t = time.monotonic()
                while not lazy_filled(store):
                    time.sleep(0.2)
                fill = time.monotonic() - t
                bench.unmount(mnt)
                env = dict(os.environ, STRATA_ROOT=str(store))
                bench.sh([b / "fs/stratafs", "-o", "lazy=all,prefetch=0",
                          ref, mnt], env=env)
                bench.MOUNTS.append(str(mnt))
                times.setdefault(("warm read, lazy filled", str(b)),
                                 []).append((read_all(mnt), 0, 0))
                bench.unmount(mnt)
                bench.log(f"background fill took {fill:.1f} s")
        finally:
            bench.unmount_all()
            if reg:
                os.killpg(reg.pid, 9)
                reg.wait()
    print(f"## lazy gzip mount{' from docker://' if a.registry else ''} "
          f"({'quick' if a.quick else 'full'} image, "
          f"{blob_bytes(layout, tag) / 2**20:.0f} MiB of gzip blobs, "
          f"{a.runs} runs, cold cache)\n")
    print("| case | build | wall median | min-max | CPU (user+sys) median "
          "| runs |")
    print("|---|---|---|---|---|---|")
    for (name, b), rs in times.items():
        w = [r[0] for r in rs]
        cpu = statistics.median(r[1] + r[2] for r in rs)
        print(f"| {name} | {b} | {bench.fmt_s(statistics.median(w))} | "
              f"{bench.fmt_s(min(w))}-{bench.fmt_s(max(w))} | "
              f"{cpu:.2f} s | {', '.join(f'{x:.2f}' for x in w)} |")
    base = ("first ls, full gzip", str(builds[0]))
    print()
    for (name, b), rs in times.items():
        if name == "first ls, lazy gzip" and base in times:
            f = times[base]
            print(f"{b}: lazy first ls / full import of {builds[0]}: wall "
                  f"{statistics.median(r[0] for r in rs) / statistics.median(r[0] for r in f):.3f}, "
                  f"CPU {statistics.median(r[1] + r[2] for r in rs) / statistics.median(r[1] + r[2] for r in f):.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gzip", action="store_true",
                    help="the gzip image: first ls and warm reads")
    ap.add_argument("--registry", action="store_true",
                    help="with --gzip: from docker:// (loopback registry)")
    ap.add_argument("--mount-only", action="store_true",
                    help="only the lazy mounts, of each --build in turn")
    ap.add_argument("--fill", action="store_true",
                    help="the background fill from docker://, each "
                    "--build in turn")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-warm", action="store_true",
                    help="with --gzip: first ls only, no fill and warm reads")
    ap.add_argument("--build", action="append", help="build directory "
                    "(several with --mount-only)")
    a = ap.parse_args()
    builds = [Path(b) for b in a.build or [os.environ.get(
        "STRATA_BUILD", str(bench.REPO / "build-bench"))]]
    build = builds[0]
    layout, tag, _ = bench.build_image(a.quick)
    if a.gzip:
        return main_gzip(a, builds, layout, tag)
    zc = convert(layout, tag, a.quick)
    if a.mount_only:
        return main_mount_only(a, builds, zc, tag)
    if a.fill:
        return main_fill(a, builds, zc, tag)
    total = blob_bytes(zc, tag)
    times = {"lazy": [], "full zstd": [], "full gzip": [], "lazy reg": [],
             "full reg": []}
    cases = [("lazy", f"oci:{zc}:{tag}", "prefetch=0"),
             ("full zstd", f"oci:{zc}:{tag}", "lazy=0"),
             ("full gzip", f"oci:{layout}:{tag}", "lazy=0")]
    io = {}
    reg = None
    with tempfile.TemporaryDirectory(dir="/var/tmp") as w:
        work = Path(w)
        try:
            reg, rref = start_registry(work, zc, tag)
            cases += [("lazy reg", rref, "prefetch=0,tls_verify=false"),
                      ("full reg", rref, "lazy=0,tls_verify=false")]
            for _ in range(a.runs):
                for name, ref, opts in cases:
                    dt, mnt = mount_time(build, ref, opts, work)
                    times[name].append(dt)
                    if name == "lazy" and not io:
                        big = max((p for p in (mnt / "usr/share").rglob("*")
                                   if p.is_file() and not p.is_symlink()),
                                  key=lambda p: p.stat().st_size)
                        io["find"] = fetched(mnt, "find . >/dev/null")
                        io["ls -lR"] = fetched(mnt, "ls -lR >/dev/null")
                        io[f"cat one file ({big.stat().st_size} B)"] = \
                            fetched(mnt, f"cat '{big}' >/dev/null")
                    bench.unmount(mnt)
        finally:
            bench.unmount_all()
            if reg:
                os.killpg(reg.pid, 9)
                reg.wait()
    base = statistics.median(times["full gzip"])
    print(f"## lazy zstd:chunked mount ({'quick' if a.quick else 'full'} "
          f"image, {total / 2**20:.0f} MiB of zstd:chunked blobs, "
          f"{a.runs} runs, cold cache)\n")
    print("| mount until live | median | min-max | vs full gzip |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {bench.fmt_s(m)} | {bench.fmt_s(min(ts))}-"
              f"{bench.fmt_s(max(ts))} | {m / base:.3f} |")
    print("\n| on the lazy mount | bytes read from blobs | of all blobs |")
    print("|---|---|---|")
    for k, v in io.items():
        print(f"| {k} | {bench.fmt_bytes(v)} | {100 * v / total:.3f}% |")


if __name__ == "__main__":
    main()
