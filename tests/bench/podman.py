#!/usr/bin/python3
"""strata podman benchmark: stratafs as podman's overlay mount_program,
against fuse-overlayfs in the same place and podman's native overlay
driver (the kernel overlay).

Run as root, from the repository (release build in build-bench):

    meson setup build-bench --buildtype=release && ninja -C build-bench
    /usr/bin/python3 tests/bench/podman.py --quick            # smoke run
    flock /tmp/bench.lock /usr/bin/python3 tests/bench/podman.py \\
        --out /tmp/bench-podman.md                            # full run

Not part of the test suite; no timing is ever asserted. Each subject is a
podman store of its own (graphroot on run.py's scratch ext4, runroot in
/tmp) holding the same locally built image (busybox-static plus a
file-heavy tree copied from the host, made with umoci, no network):

- stratafs:       --storage-driver overlay
                  --storage-opt overlay.mount_program=build/fs/stratafs
- fuse-overlayfs: the same with overlay.mount_program=fuse-overlayfs
- kernel overlay: --storage-driver overlay, no mount program

Workloads, run round by round with the subjects interleaved (the order
rotated each round), after an untimed warm-up round:

- commit: `podman commit` of a stopped container that changed some files
  (the container is made untimed before each run);
- build: `podman build --layers --no-cache` of a Containerfile with
  several RUN steps;
- run: a file-heavy `podman run --rm` (walk, read every file under /usr,
  write and delete a few thousand small files).

The helpers (logging, scratch filesystem, mount tracking, formatting) come
from run.py, the read-path benchmark.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench                                     # noqa: E402
from run import log, sh, rmtree, fmt_s                   # noqa: E402

REPO = bench.REPO
SPEC_VERSION = 1        # bump when the image recipe changes
TAG = "bench"

# host trees copied into the image's second layer: (full, quick)
TREES = (["usr/lib/python3.11", "usr/share/perl", "usr/include"],
         ["usr/lib/python3.11"])
RUN_OPTS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
            "--network", "none"]

# what the committed container changed (run untimed, before each commit)
COMMIT_CHANGES = (
    "echo hi > /new && echo 'bench:x:1000:1000::/:/bin/sh' >> /etc/passwd"
    " && rm /etc/group && rm -rf /usr/lib/python3.11/json"
    " && mkdir /data && cp -r /usr/lib/python3.11/email /data/"
    " && for i in $(seq 300); do echo $i > /data/f$i; done")

CONTAINERFILE = """FROM localhost/bench:latest
RUN mkdir /data && cp -r /usr/lib/python3.11/email /data/ && echo one > /one
RUN rm -rf /usr/lib/python3.11/unittest && echo two > /two
RUN find /usr -type f | wc -l > /count
RUN sed -i s/root:x/root:y/ /etc/passwd
RUN for i in $(seq 200); do echo $i > /data/f$i; done
"""

RUN_SCRIPT = (
    "find / -xdev | wc -l; tar -cf - /usr 2>/dev/null | wc -c; "
    "ls -lR /usr >/dev/null; "
    "for d in $(seq 20); do mkdir -p /w/$d; "
    "for i in $(seq 100); do echo $d $i > /w/$d/$i; done; done; "
    "cat /w/*/* | wc -l; rm -rf /w /usr/lib/python3.11/test; "
    "find /usr | wc -l")


# ---------------------------------------------------------------------------
# the image


def build_image(ctx):
    """The OCI layout (cached): layer 1 busybox-static with its applets,
    /etc; layer 2 the file-heavy trees of TREES."""
    base = ctx.cache
    stamp = base / "built.json"
    trees = TREES[1 if ctx.quick else 0]
    if stamp.exists():
        info = json.loads(stamp.read_text())
        if info.get("version") == SPEC_VERSION:
            log(f"reusing image {base / 'layout'}:{TAG}")
            return info
    log(f"building the podman benchmark image in {base} (cached)")
    rmtree(base)
    base.mkdir(parents=True)
    layout, bundle = base / "layout", base / "bundle"
    sh(["umoci", "init", "--layout", layout])
    sh(["umoci", "new", "--image", f"{layout}:{TAG}"])
    sh(["umoci", "unpack", "--image", f"{layout}:{TAG}", bundle])
    root = bundle / "rootfs"
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "run", "var/log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy("/usr/bin/busybox", root / "bin/busybox")
    applets = sh(["busybox", "--list"], capture=True).stdout.split()
    for a in applets:
        if a != "busybox" and not (root / "bin" / a).exists():
            os.symlink("busybox", root / "bin" / a)
    (root / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    sh(["umoci", "repack", "--refresh-bundle",
        "--image", f"{layout}:{TAG}", bundle])
    trees = [t for t in trees if Path("/", t).exists()]
    sh(f"tar -C / -cf - {' '.join(trees)} | tar -C {root} -xpf -")
    sh(["umoci", "repack", "--refresh-bundle",
        "--image", f"{layout}:{TAG}", bundle])
    sh(["umoci", "config", "--image", f"{layout}:{TAG}",
        "--config.cmd", "/bin/sh"])
    entries = sum(1 + len(d) + len(f) for _, d, f in os.walk(root))
    rmtree(bundle)
    info = {"version": SPEC_VERSION, "trees": trees,
            "applets": len(applets), "entries": entries}
    stamp.write_text(json.dumps(info, indent=1))
    return info

# ---------------------------------------------------------------------------
# subjects: one podman store each


class Podman:
    def __init__(self, name, label, mount_program=None):
        self.name, self.label = name, label
        self.mount_program = mount_program    # ctx attribute or None

    def setup(self, ctx):
        """Config in the run directory, graphroot on the scratch fs, the
        image pulled and tagged localhost/bench:latest (untimed)."""
        self.dir = ctx.work / f"pod-{self.name}"
        cfg = self.dir / "cfg"
        cfg.mkdir(parents=True)
        (self.dir / "tmp").mkdir()
        self.graph = ctx.scratch / f"graph-{self.name}"
        self.runroot = Path(tempfile.mkdtemp(prefix="spb-", dir="/tmp"))
        ctx.runroots.append(self.runroot)
        self.policy = cfg / "policy.json"
        self.policy.write_text(json.dumps(
            {"default": [{"type": "insecureAcceptAnything"}]}))
        (cfg / "registries.conf").write_text(
            "unqualified-search-registries = []\n")
        (cfg / "storage.conf").write_text(
            '[storage]\ndriver = "overlay"\n'
            f'graphroot = "{self.graph}"\nrunroot = "{self.runroot}"\n')
        (cfg / "containers.conf").write_text(
            '[engine]\nevents_logger = "file"\n'
            f'events_logfile_path = "{self.dir}/events.log"\n'
            'cgroup_manager = "cgroupfs"\nruntime = "runc"\n'
            f'tmp_dir = "{self.dir}/tmp"\n'
            '[containers]\nlog_driver = "k8s-file"\n')
        self.env = dict(os.environ, LC_ALL="C",
                        CONTAINERS_REGISTRIES_CONF=str(cfg / "registries.conf"),
                        CONTAINERS_STORAGE_CONF=str(cfg / "storage.conf"),
                        CONTAINERS_CONF=str(cfg / "containers.conf"),
                        TMPDIR=str(self.dir / "tmp"))
        self.base = ["podman", "--root", str(self.graph), "--runroot",
                     str(self.runroot), "--runtime", "runc",
                     "--cgroup-manager", "cgroupfs", "--events-backend",
                     "file", "--storage-driver", "overlay"]
        if self.mount_program:
            mp = getattr(ctx, self.mount_program)
            self.base += ["--storage-opt", f"overlay.mount_program={mp}"]
        iid = self.pm("pull", "-q", "--signature-policy", self.policy,
                      f"oci:{ctx.layout}:{TAG}").stdout.split()[-1]
        self.pm("tag", iid, "localhost/bench:latest")

    def pm(self, *args, check=True):
        r = subprocess.run(self.base + [str(a) for a in args], env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"podman {' '.join(map(str, args))} "
                               f"({self.name}) exited {r.returncode}: "
                               f"{r.stderr.strip()[-2000:]}")
        return r

    def teardown(self, ctx):
        self.pm("rm", "-a", "-f", check=False)
        unmount_below(self.runroot)
        unmount_below(self.graph)


def unmount_below(top):
    """Unmount everything mounted below @top, deepest first (podman's
    container roots, its bind mount of graphroot/overlay, shm mounts)."""
    prefix = str(Path(top).resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        mps = [l.split()[4].replace("\\040", " ") for l in f]
    for mp in sorted((m for m in mps if m.startswith(prefix) or
                      m + "/" == prefix), key=len, reverse=True):
        subprocess.run(["umount", mp], capture_output=True)
        bench.unmount(mp)


SUBJECTS = {
    "stratafs": Podman("stratafs", "stratafs (mount_program)", "stratafs"),
    "fuse-overlayfs": Podman("fuse-overlayfs",
                             "fuse-overlayfs (mount_program)",
                             "fuse_overlayfs"),
    "overlay": Podman("overlay", "kernel overlay (native driver)"),
}

# ---------------------------------------------------------------------------
# workloads: prepare (untimed), body (timed, returns what it saw),
# cleanup (untimed)


class Workload:
    def __init__(self, name, title, body, prepare=None, cleanup=None):
        self.name, self.title, self.body = name, title, body
        self.prepare, self.cleanup = prepare, cleanup


def commit_prepare(ctx, s):
    s.pm("run", "--name", "bench-c", "--signature-policy", s.policy,
         *RUN_OPTS, "localhost/bench:latest", "/bin/sh", "-c",
         COMMIT_CHANGES)


def commit_body(ctx, s):
    s.pm("commit", "-q", "bench-c", "localhost/bench-committed:latest")


def commit_cleanup(ctx, s):
    size = s.pm("image", "inspect", "--format", "{{.Size}}",
                "localhost/bench-committed:latest", check=False).stdout
    s.pm("rm", "-f", "bench-c", check=False)
    s.pm("rmi", "-f", "localhost/bench-committed:latest", check=False)
    return f"image {size.strip()} B"


def build_body(ctx, s):
    s.pm("build", "-q", "--layers", "--no-cache", "--signature-policy",
         s.policy, *RUN_OPTS, "-t", "localhost/bench-built:latest", "-f",
         ctx.containerfile, ctx.containerfile.parent)


def build_cleanup(ctx, s):
    size = s.pm("image", "inspect", "--format", "{{.Size}}",
                "localhost/bench-built:latest", check=False).stdout
    s.pm("rmi", "-f", "localhost/bench-built:latest", check=False)
    s.pm("image", "prune", "-f", check=False)
    return f"image {size.strip()} B"


def run_body(ctx, s):
    r = s.pm("run", "--rm", "--signature-policy", s.policy, *RUN_OPTS,
             "localhost/bench:latest", "/bin/sh", "-c", RUN_SCRIPT)
    return " ".join(r.stdout.split())


WORKLOADS = [
    Workload("commit", "podman commit (container changed ~330 files)",
             commit_body, commit_prepare, commit_cleanup),
    Workload("build", "podman build --layers --no-cache (5 RUN steps)",
             build_body, None, build_cleanup),
    Workload("run", "podman run --rm, file-heavy (walk, read /usr, "
             "2000 small files)", run_body),
]


def time_workload(ctx, wl, subs, runs, warmup):
    for rnd in range(-1 if warmup else 0, runs):
        order = subs[rnd % len(subs):] + subs[:rnd % len(subs)] \
            if rnd >= 0 else subs
        for s in order:
            if wl.prepare:
                wl.prepare(ctx, s)
            t0 = time.perf_counter()
            saw = wl.body(ctx, s)
            dt = time.perf_counter() - t0
            if wl.cleanup:
                saw = wl.cleanup(ctx, s) or saw
            if rnd < 0:
                continue
            ctx.results.setdefault((wl.name, s.name), []).append(dt)
            if saw:
                ctx.saw.setdefault((wl.name, s.name), set()).add(saw)
        if rnd >= 0:
            log(f"  round {rnd + 1}/{runs}: " + ", ".join(
                f"{s.name} {fmt_s(ctx.results[(wl.name, s.name)][-1])}"
                for s in subs))

# ---------------------------------------------------------------------------
# report


def report(ctx, args):
    subs = ctx.active
    L = lambda s: SUBJECTS[s].label                              # noqa: E731
    med = lambda w, s: (statistics.median(ctx.results[(w, s)])   # noqa: E731
                        if ctx.results.get((w, s)) else None)
    un = os.uname()
    pv = sh(["podman", "--version"], capture=True).stdout.strip()
    fo = sh(["fuse-overlayfs", "--version"], capture=True).stdout
    fo = " ".join(re.findall(r"fuse-overlayfs: version (\S+)", fo)) or "?"
    out = [f"## podman with a mount_program {datetime.date.today().isoformat()}",
           "",
           f"- machine: nproc {len(os.sched_getaffinity(0))}, kernel "
           f"{un.release} {un.machine}; {pv}, runc, fuse-overlayfs {fo}",
           "- load average (1 min) at start/end of the timed part: "
           + " / ".join(f"{x:.1f}" for x in ctx.load)
           + " (other work on the machine shows here)",
           f"- command: `{ctx.command}`",
           f"- strata build: `{ctx.build}`",
           f"- image: 2 layers made with umoci: busybox-static with "
           f"{ctx.info['applets']} applets, and {', '.join(ctx.info['trees'])}"
           f" copied from the host; {ctx.info['entries']} entries",
           "- stores: one per subject, graphroot on a scratch ext4 "
           "(`nodiscard`), runroot in /tmp; podman `--runtime runc "
           "--cgroup-manager cgroupfs --network none`",
           f"- commit: a container ran `{COMMIT_CHANGES}` (untimed), then "
           "`podman commit -q` is timed; the container and image are "
           "removed after each run",
           "- build: `podman build -q --layers --no-cache` of "
           + "; ".join(f"`{l}`" for l in CONTAINERFILE.strip().splitlines())
           + "; the image and its intermediates are removed after each run",
           f"- run: `podman run --rm IMAGE sh -c '{RUN_SCRIPT}'`",
           f"- runs: median of {args.runs} rounds (after one untimed "
           "warm-up round), subjects interleaved in an order rotated "
           "each round, min–max in brackets; ratio = median / median",
           "", "### Time", ""]
    hdr = ["workload"] + [L(s) for s in subs]
    out += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for wl in ctx.ran:
        cells = []
        for s in subs:
            v = ctx.results.get((wl.name, s))
            cells.append(f"{fmt_s(statistics.median(v))} ({fmt_s(min(v))}–"
                         f"{fmt_s(max(v))})" if v else "—")
        out.append(f"| {wl.title} | " + " | ".join(cells) + " |")
    out += ["", "### Ratios", ""]
    pairs = [(a, b) for a, b in (("stratafs", "fuse-overlayfs"),
                                 ("stratafs-before", "fuse-overlayfs"),
                                 ("stratafs", "stratafs-before"),
                                 ("stratafs", "overlay"),
                                 ("fuse-overlayfs", "overlay"))
             if a in subs and b in subs]
    hdr = ["workload"] + [f"{L(a)} / {L(b)}" for a, b in pairs]
    out += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for wl in ctx.ran:
        cells = []
        for a, b in pairs:
            ma, mb = med(wl.name, a), med(wl.name, b)
            if ma is None or not mb:
                cells.append("—")
                continue
            r = ma / mb
            bad = a == "stratafs" and b == "fuse-overlayfs" and r > 1.0
            cells.append(f"**{r:.2f}**" if bad else f"{r:.2f}")
        out.append(f"| {wl.title} | " + " | ".join(cells) + " |")
    out += ["", "Bold: stratafs (this build) slower than fuse-overlayfs.", "",
            "### What each subject saw (must agree)", "",
            "| workload | " + " | ".join(L(s) for s in subs) + " |",
            "|---|" + "---|" * len(subs)]
    for wl in ctx.ran:
        row = ["; ".join(sorted(ctx.saw.get((wl.name, s), []))) or "—"
               for s in subs]
        out.append(f"| {wl.title} | " + " | ".join(row) + " |")
    out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small image, 3 rounds (a smoke run)")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--runs", type=int, help="timed rounds (default 5, quick 3)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed warm-up round")
    ap.add_argument("--build", default=os.environ.get(
        "STRATA_BUILD", str(REPO / "build-bench")),
        help="meson build dir (default $STRATA_BUILD or build-bench)")
    ap.add_argument("--before", metavar="DIR",
                    help="also measure the stratafs of build dir DIR (e.g. "
                    "a build of the main branch) as a fourth subject")
    ap.add_argument("--only", help="regex: run only matching workloads "
                    "(commit, build, run)")
    ap.add_argument("--subjects", help="comma list: restrict to these "
                    f"subjects ({','.join(SUBJECTS)})")
    ap.add_argument("--rebuild", action="store_true",
                    help="rebuild the cached image")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("podman.py: run as root (podman's overlay driver, mounts)")
    args.runs = args.runs or (3 if args.quick else 5)

    ctx = bench.Ctx()
    ctx.command = " ".join(["/usr/bin/python3", "tests/bench/podman.py"]
                           + sys.argv[1:])
    ctx.quick = args.quick
    ctx.build = Path(args.build).resolve()
    stratafs = ctx.build / "fs" / "stratafs"
    if not os.access(stratafs, os.X_OK):
        sys.exit(f"podman.py: no {stratafs}; build first: meson setup "
                 f"build-bench --buildtype=release && ninja -C build-bench")
    ctx.cache = bench.CACHE / f"podman-{'quick' if args.quick else 'full'}"
    if args.rebuild:
        rmtree(ctx.cache)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    ctx.work = bench.CACHE / f"podman-run-{os.getpid()}"
    ctx.results, ctx.saw, ctx.ran, ctx.runroots = {}, {}, [], []
    set_up = []
    try:
        ctx.work.mkdir(parents=True)
        # a copy of the binary: a rebuild during the run changes nothing
        (ctx.work / "bin").mkdir()
        ctx.stratafs = ctx.work / "bin" / "stratafs"
        shutil.copy2(stratafs, ctx.stratafs)
        ctx.fuse_overlayfs = shutil.which("fuse-overlayfs")
        if args.before:
            ctx.stratafs_before = ctx.work / "bin" / "stratafs-before"
            shutil.copy2(Path(args.before) / "fs" / "stratafs",
                         ctx.stratafs_before)
            SUBJECTS["stratafs-before"] = Podman(
                "stratafs-before", f"stratafs of {args.before}",
                "stratafs_before")
        ctx.info = build_image(ctx)
        ctx.layout = ctx.cache / "layout"
        ctx.containerfile = ctx.work / "ctx" / "Containerfile"
        ctx.containerfile.parent.mkdir()
        ctx.containerfile.write_text(CONTAINERFILE)
        bench.make_scratch(ctx, 4 if args.quick else 8)
        wanted = args.subjects.split(",") if args.subjects else list(SUBJECTS)
        ctx.active = [s for s in SUBJECTS if s in wanted]
        for s in ctx.active:
            log(f"setting up {s} (pull into its own store)")
            set_up.append(SUBJECTS[s])
            SUBJECTS[s].setup(ctx)
        ctx.load = [os.getloadavg()[0]]
        for wl in WORKLOADS:
            if args.only and not re.search(args.only, wl.name):
                continue
            ctx.ran.append(wl)
            log(f"{wl.title}: {'warm-up + ' if not args.no_warmup else ''}"
                f"{args.runs} rounds")
            time_workload(ctx, wl, [SUBJECTS[s] for s in ctx.active],
                          args.runs, not args.no_warmup)
        ctx.load.append(os.getloadavg()[0])
        text = report(ctx, args)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
            log(f"report written to {args.out}")
    finally:
        for s in reversed(set_up):
            try:
                s.teardown(ctx)
            except Exception as e:      # keep unmounting the rest
                log(f"teardown {s.name}: {e}")
        if getattr(ctx, "scratch", None):
            unmount_below(ctx.scratch)
        bench.unmount_all()
        for rr in ctx.runroots:
            unmount_below(rr)
            shutil.rmtree(rr, ignore_errors=True)
        left = [m for m in bench.MOUNTS if bench.is_mounted(m)]
        if left:
            log(f"WARNING: still mounted: {left}")
        else:
            img = ctx.work / "scratch.img"
            if img.exists():
                img.unlink()
            rmtree(ctx.work)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("podman.py: interrupted (all mounts unmounted)")
