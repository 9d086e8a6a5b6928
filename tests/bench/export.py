#!/usr/bin/python3
"""strata export benchmark: `strata export` against `umoci unpack` + `tar -c`,
`tar -c` of an already unpacked tree, and `podman export` of a container.

Run as root, from the repository (release build first):

    meson setup build-bench --buildtype=release && ninja -C build-bench
    /usr/bin/python3 tests/bench/export.py --quick                 # smoke run
    flock /tmp/bench.lock /usr/bin/python3 tests/bench/export.py --out /tmp/bench-export.md

Not part of the test suite; no timing is ever asserted. The image is run.py's
benchmark image (built with umoci and cached in /var/tmp/strata-bench, ~1 GB
in 4 layers with whiteouts; --quick: its small subset), and the helpers
(image, the cached umoci-unpacked tree, scratch filesystem, unmounting in
`finally`) come from run.py. Untimed setup: the image imported into a
strata store of this run, and pulled into a podman store (graphroot on the
scratch filesystem) with one container created from it.

Subjects, interleaved run by run after one untimed warm-up round (page
cache warm); every output is a new file on a scratch ext4 and every timing
ends with `sync -f SCRATCH`, for all subjects alike:

- strata export REF FILE        (temp file, fsync, rename)
- strata export REF - | cat >FILE
- tar -c of the umoci-unpacked tree (the target: the floor of "a tar of
  the root filesystem" once a tree exists), GNU tar with --sort=name
  --format=pax --xattrs --xattrs-include='*' --numeric-owner, so its
  output holds what strata's does
- umoci unpack + the same tar -c (from the image, as strata starts)
- podman export -o FILE CONTAINER
"""
import argparse
import datetime
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench                                     # noqa: E402
from run import sh, log, rmtree, fmt_s, fmt_bytes       # noqa: E402

REPO = bench.REPO
CACHE = bench.CACHE
TAR = ["tar", "--sort=name", "--format=pax", "--xattrs",
       "--xattrs-include=*", "--numeric-owner"]


def podman(ctx, *args, capture=True):
    return sh(["podman", "--root", ctx.podman_root, "--runroot",
               ctx.podman_runroot, "--storage-driver", "overlay", *args],
              capture=capture)


class Subject:
    def __init__(self, name, label):
        self.name, self.label = name, label

    def out(self, ctx):
        return ctx.scratch / "out" / f"{self.name}.tar"

    def prepare(self, ctx):
        rmtree(ctx.scratch / "out")
        (ctx.scratch / "out").mkdir()

    def cleanup(self, ctx):
        rmtree(ctx.scratch / "out")


class StrataExport(Subject):
    def __init__(self, name, label, pipe):
        super().__init__(name, label)
        self.pipe = pipe

    def run(self, ctx):
        cmd = [ctx.strata, "--quiet", "--root", ctx.store, "export",
               "bench:latest"]
        if self.pipe:
            sh(["bash", "-c", f"set -o pipefail; "
                f"{' '.join(map(str, cmd))} - | cat > {self.out(ctx)}"])
        else:
            sh([*cmd, self.out(ctx)])


class TarTree(Subject):
    def run(self, ctx):
        sh([*TAR, "-cf", self.out(ctx), "-C", ctx.plain, "."])


class UmociTar(Subject):
    def prepare(self, ctx):
        super().prepare(ctx)
        rmtree(ctx.scratch / "bundle")

    def run(self, ctx):
        sh(["umoci", "unpack", "--image", f"{ctx.layout}:{ctx.tag}",
            ctx.scratch / "bundle"])
        sh([*TAR, "-cf", self.out(ctx), "-C", ctx.scratch / "bundle/rootfs",
            "."])

    def cleanup(self, ctx):
        super().cleanup(ctx)
        rmtree(ctx.scratch / "bundle")


class PodmanExport(Subject):
    def run(self, ctx):
        podman(ctx, "export", "-o", self.out(ctx), "bench-export")


def setup(ctx):
    ctx.store = ctx.work / "store"
    log("importing the image into a strata store (untimed)")
    bench.import_strata(ctx, ctx.store)
    ctx.podman_root = ctx.scratch / "podman"
    ctx.podman_runroot = ctx.work / "podman-run"
    log("pulling the image into a podman store, creating a container "
        "(untimed)")
    podman(ctx, "pull", "-q", f"oci:{ctx.layout}:{ctx.tag}")
    img = podman(ctx, "images", "-q").stdout.split()[0]
    podman(ctx, "create", "--name", "bench-export", img, "/nothing")


def time_all(ctx, subjects, runs):
    times, sizes = {}, {}
    for i in range(-1, runs):          # -1: the untimed warm-up round
        for s in subjects:
            s.prepare(ctx)
            sh(["sync", "-f", ctx.scratch])
            t0 = time.perf_counter()
            s.run(ctx)
            sh(["sync", "-f", ctx.scratch])
            dt = time.perf_counter() - t0
            sizes[s.name] = s.out(ctx).stat().st_size
            s.cleanup(ctx)
            if i >= 0:
                times.setdefault(s.name, []).append(dt)
            log(f"  run {i + 1}/{runs} {s.name}: {fmt_s(dt)}"
                + (" (warm-up)" if i < 0 else ""))
    return times, sizes


def report(ctx, args, subjects, times, sizes):
    med = {n: statistics.median(v) for n, v in times.items()}
    base = med["tar"]
    un = os.uname()
    out = [f"## Export benchmark {datetime.date.today().isoformat()}", "",
           f"- machine: {os.cpu_count()} CPUs, kernel {un.release} "
           f"{un.machine}; load average (1 min) at start/end: "
           + " / ".join(f"{x:.1f}" for x in ctx.load),
           f"- command: `{ctx.command}`; strata build `{ctx.build}`",
           f"- image: run.py's {'quick' if args.quick else 'full'} bench "
           f"image, {len(ctx.blobs)} layers, {ctx.n_entries} entries, "
           f"{fmt_bytes(ctx.unpacked_bytes)} in regular files",
           f"- median of {args.runs} runs (min–max), subjects interleaved "
           f"after an untimed warm-up round; outputs on a scratch ext4, "
           f"each timing ends with `sync -f`", "",
           "| subject | time | tar size | ÷ tar -c of the unpacked tree |",
           "|---|---|---|---|"]
    for s in subjects:
        v = times[s.name]
        out.append(f"| {s.label} | {fmt_s(med[s.name])} ({fmt_s(min(v))}–"
                   f"{fmt_s(max(v))}) | {fmt_bytes(sizes[s.name])} | "
                   f"{med[s.name] / base:.2f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small image")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--runs", type=int, help="timed runs (default 3, quick 2)")
    ap.add_argument("--build", default=os.environ.get(
        "STRATA_BUILD", str(REPO / "build-bench")),
        help="meson build dir (default $STRATA_BUILD or build-bench)")
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("export.py: run as root")
    args.runs = args.runs or (2 if args.quick else 3)

    ctx = bench.Ctx()
    ctx.quick = args.quick
    ctx.command = " ".join(["/usr/bin/python3", "tests/bench/export.py"]
                           + sys.argv[1:])
    ctx.build = Path(args.build).resolve()
    ctx.strata = ctx.build / "tools" / "strata"
    if not os.access(ctx.strata, os.X_OK):
        sys.exit(f"export.py: no {ctx.strata}; build first: meson setup "
                 f"build-bench --buildtype=release && ninja -C build-bench")
    use_podman = not args.no_podman and shutil.which("podman")

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    ctx.work = CACHE / f"export-run-{os.getpid()}"
    try:
        ctx.work.mkdir(parents=True)
        ctx.layout, ctx.tag, _ = bench.build_image(args.quick)
        ctx.blobs, ctx.manifest_digest = bench.image_layers(ctx.layout,
                                                            ctx.tag)
        bench.prepare_trees(ctx)
        ctx.unpacked_bytes = bench.tree_bytes(ctx.plain)
        gib = -(-ctx.unpacked_bytes // (1 << 30))
        bench.make_scratch(ctx, 4 * gib + 2)
        setup(ctx)
        subjects = [StrataExport("strata", "strata export REF FILE", False),
                    StrataExport("strata-pipe", "strata export REF - \\| cat",
                                 True),
                    TarTree("tar", "tar -c of the umoci-unpacked tree"),
                    UmociTar("umoci-tar", "umoci unpack + tar -c")]
        if use_podman:
            subjects.append(PodmanExport("podman", "podman export"))
        else:
            log("podman: skipped")
        ctx.load = [os.getloadavg()[0]]
        times, sizes = time_all(ctx, subjects, args.runs)
        ctx.load.append(os.getloadavg()[0])
        text = report(ctx, args, subjects, times, sizes)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
            log(f"report written to {args.out}")
    finally:
        if getattr(ctx, "podman_root", None) and use_podman:
            subprocess.run(["podman", "--root", str(ctx.podman_root),
                            "--runroot", str(ctx.podman_runroot),
                            "--storage-driver", "overlay", "rm", "-f",
                            "bench-export"], capture_output=True)
            subprocess.run(["podman", "--root", str(ctx.podman_root),
                            "--runroot", str(ctx.podman_runroot),
                            "--storage-driver", "overlay", "system",
                            "reset", "-f"], capture_output=True)
        bench.unmount_all()
        left = [m for m in bench.MOUNTS if bench.is_mounted(m)]
        if left:
            log(f"WARNING: still mounted: {left}")
        elif ctx.work.exists():
            img = ctx.work / "scratch.img"
            if img.exists():
                img.unlink()
            rmtree(ctx.work)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
