#!/usr/bin/python3
"""strata commit benchmark: `strata commit` vs `umoci repack`, tar|gzip, pigz.

Run as root, from anywhere (release build first):

    cd /work/main && meson setup build-bench --buildtype=release && ninja -C build-bench
    /usr/bin/python3 tests/bench/commit.py --quick              # smoke run, < 1 min
    flock /tmp/bench.lock /usr/bin/python3 tests/bench/commit.py --out /tmp/bench-commit.md

The full run takes about 11 minutes, plus about 5 the first time (the
images are built with umoci from host directories and cached in
/var/tmp/strata-bench/commit-*). Not part of the test suite; no timing is
ever asserted. Helpers (sh, log, rmtree, the scratch filesystem, unmounting
in `finally`) come from run.py.

Two parts, each side by side in one run, subjects interleaved run by run:

A. A one-file change (one line appended to usr/share/zoneinfo/zone.tab) on
   a large image (usr/share + usr/lib/x86_64-linux-gnu, about 1.8 GiB and
   70k entries in 2 layers) and on a small one (usr/share/zoneinfo):
   `strata commit --upper U --from oci:L:bench oci:L:new` against
   `umoci repack --image L:new BUNDLE` (BUNDLE from `umoci unpack` into the
   scratch filesystem, untimed, with the same file changed). umoci walks and hashes the whole rootfs;
   strata reads the upper directory only.

B. The same one-file change plus 500 MiB of copies of real /usr/lib files
   (python, postgresql, git, gcc, llvm: several thousand files, compressible
   like real binaries and sources) under opt/bench-add: strata commit with
   gzip on all CPUs, gzip --threads 1, zstd, zstd:chunked, none, against
   `umoci repack` of the same change (on the large and on the small image)
   and against
   `tar -cf - -C U . | gzip` / `| pigz` / no compression.

Every timed run writes a fresh destination: a layout made untimed from
hardlinks to the base layout's blobs (index.json copied), or a new output
file, removed untimed afterwards. Everything written is on a scratch ext4
(loop-mounted, nodiscard, removed at the end); each timing ends with
`sync -f SCRATCH` (syncfs of the scratch filesystem) for every subject
alike, after an untimed one before it starts. The report gives median
(min-max) of --runs runs, ratios, the compressed output sizes and the
entry count of each output layer.
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench                                     # noqa: E402
from run import sh, log, rmtree, fmt_s, fmt_bytes       # noqa: E402

REPO = bench.REPO
CACHE = bench.CACHE
IMAGE_VERSION = 1              # bump when an image recipe changes
TAG, NEWTAG = "bench", "new"
CHANGE = "usr/share/zoneinfo/zone.tab"
CHANGE_LINE = b"# strata-bench: one changed line\n"

# name -> layers (name, host paths, excludes), each layer one umoci repack
IMAGES = {
    "large": [("share", ["usr/share"], []),
              ("lib", ["usr/lib/x86_64-linux-gnu"],
               ["usr/lib/x86_64-linux-gnu/fpc"])],
    "small": [("zoneinfo", ["usr/share/zoneinfo"], [])],
    "quick-large": [("share", ["usr/share/perl", "usr/share/zoneinfo",
                               "usr/share/i18n"], []),
                    ("lib", ["usr/lib/git-core"], [])],
}

# part B: regular files from these host trees, in this order, sorted, until
# the total reaches the target size
ADD_SOURCES = ["usr/lib/python3", "usr/lib/postgresql", "usr/lib/git-core",
               "usr/lib/gcc", "usr/lib/llvm-14", "usr/lib/jvm"]
ADD_DIR = "opt/bench-add"

# ---------------------------------------------------------------------------
# images


def tree_stats(root):
    """(entries including root, bytes in regular files)."""
    n, size = 1, 0
    for dp, dns, fns in os.walk(root):
        n += len(dns) + len(fns)
        for fn in fns:
            st = os.lstat(os.path.join(dp, fn))
            if (st.st_mode & 0o170000) == 0o100000:
                size += st.st_size
    return n, size


def build_image(name):
    """Build (or reuse) image @name: CACHE/commit-NAME/layout, tag bench."""
    layers = IMAGES[name]
    base = CACHE / f"commit-{name}"
    stamp = base / "built.json"
    spec = {"version": IMAGE_VERSION, "layers": layers}
    if stamp.exists():
        info = json.loads(stamp.read_text())
        if info.get("spec") == json.loads(json.dumps(spec)) and \
                (base / "layout" / "index.json").exists():
            log(f"reusing image {base}/layout:{TAG}")
            return base, info
    log(f"building the {name} image in {base} (cached for reruns)")
    rmtree(base)
    base.mkdir(parents=True)
    layout, build = base / "layout", base / "build"
    sh(["umoci", "init", "--layout", layout])
    sh(["umoci", "new", "--image", f"{layout}:{TAG}"])
    sh(["umoci", "unpack", "--image", f"{layout}:{TAG}", build])
    for lname, paths, excludes in layers:
        paths = [p for p in paths if Path("/", p).exists()]
        excl = " ".join(f"--exclude={e}" for e in excludes)
        sh(f"tar -C / -cf - {excl} {' '.join(paths)} | "
           f"tar -C {build}/rootfs -xpf -")
        sh(["umoci", "repack", "--refresh-bundle", "--no-history",
            "--image", f"{layout}:{TAG}", build])
        log(f"  layer {lname} packed")
    blobs, _ = bench.image_layers(layout, TAG)
    entries, size = tree_stats(build / "rootfs")
    rmtree(build)
    info = {"spec": spec, "entries": entries, "unpacked": size,
            "compressed": sum(b.stat().st_size for b in blobs),
            "layers": len(blobs)}
    stamp.write_text(json.dumps(info, indent=1))
    return base, info


def add_file_list(target):
    """Host files (relative to /) for part B, about @target bytes."""
    out, total = [], 0
    for src in ADD_SOURCES:
        for dp, dns, fns in os.walk(Path("/", src)):
            dns.sort()
            for fn in sorted(fns):
                p = os.path.join(dp, fn)
                st = os.lstat(p)
                if (st.st_mode & 0o170000) != 0o100000 or st.st_size == 0:
                    continue
                out.append(os.path.relpath(p, "/"))
                total += st.st_size
                if total >= target:
                    return out, total
    return out, total

# ---------------------------------------------------------------------------
# subjects


def syncfs(ctx):
    sh(["sync", "-f", ctx.scratch])


def fresh_layout(src, dst):
    """A copy of layout @src at @dst sharing its blobs (hardlinks);
    index.json and oci-layout are real copies, so no tool can change the
    base layout through them."""
    dst.mkdir(parents=True)
    sh(["cp", "-al", src / "blobs", dst / "blobs"])
    for f in ("index.json", "oci-layout"):
        shutil.copy2(src / f, dst / f)


def new_layer(layout):
    """(blob path, size) of the top layer of layout:NEWTAG."""
    blobs, _ = bench.image_layers(layout, NEWTAG)
    return blobs[-1], blobs[-1].stat().st_size


class Subject:
    """run(ctx) is timed; prepare/cleanup are not. output(ctx) -> path of
    the compressed layer / stream the run wrote."""

    def __init__(self, name, label, image=None):
        self.name, self.label, self.image = name, label, image
        self.info = None            # strata's own summary line

    def dst(self, ctx):
        return ctx.scratch / "dst" / self.name

    def prepare(self, ctx):
        rmtree(self.dst(ctx))

    def cleanup(self, ctx):
        rmtree(self.dst(ctx))


class StrataCommit(Subject):
    def __init__(self, name, label, image, upper, opts=()):
        super().__init__(name, label, image)
        self.upper, self.opts = upper, list(opts)

    def prepare(self, ctx):
        super().prepare(ctx)
        fresh_layout(ctx.layouts[self.image], self.dst(ctx))

    def run(self, ctx):
        d = self.dst(ctx)
        r = sh([ctx.strata, "commit", "--upper", ctx.uppers[self.upper],
                "--from", f"oci:{d}:{TAG}", *self.opts, f"oci:{d}:{NEWTAG}"],
               capture=True, env=ctx.env)
        self.info = r.stderr.strip()

    def output(self, ctx):
        return new_layer(self.dst(ctx))[0]


class UmociRepack(Subject):
    def __init__(self, name, label, image):
        super().__init__(name, label, image)

    def prepare(self, ctx):
        super().prepare(ctx)
        fresh_layout(ctx.layouts[self.image], self.dst(ctx))

    def run(self, ctx):
        sh(["umoci", "repack", "--image", f"{self.dst(ctx)}:{NEWTAG}",
            ctx.bundles[self.image]])

    def output(self, ctx):
        return new_layer(self.dst(ctx))[0]


class TarPipe(Subject):
    def __init__(self, name, label, upper, filt):
        super().__init__(name, label)
        self.upper, self.filt = upper, filt

    def prepare(self, ctx):
        super().prepare(ctx)
        self.dst(ctx).mkdir(parents=True)

    def run(self, ctx):
        out = self.dst(ctx) / "layer.tar"
        sh(["bash", "-c", f"set -o pipefail; tar -cf - -C "
            f"{ctx.uppers[self.upper]} . | {self.filt} > {out}"])

    def output(self, ctx):
        return self.dst(ctx) / "layer.tar"


def subjects_a(ctx):
    return [
        StrataCommit("strata-large", "strata commit", ctx.large, "a"),
        StrataCommit("strata-small", "strata commit", "small", "a"),
        UmociRepack("umoci-large", "umoci repack", ctx.large),
        UmociRepack("umoci-small", "umoci repack", "small"),
    ]


def subjects_b(ctx):
    subs = [
        StrataCommit("strata-gzip", f"strata commit (gzip, default threads "
                     f"= {min(os.sysconf('SC_NPROCESSORS_ONLN'), 4)})", ctx.large, "b"),
        StrataCommit("strata-gzip-1", "strata commit --threads 1 (gzip)",
                     ctx.large, "b", ["--threads", "1"]),
        StrataCommit("strata-zstd", "strata commit --compression zstd",
                     ctx.large, "b", ["--compression", "zstd"]),
        StrataCommit("strata-zchunked",
                     "strata commit --compression zstd:chunked",
                     ctx.large, "b", ["--compression", "zstd:chunked"]),
        StrataCommit("strata-none", "strata commit --compression none",
                     ctx.large, "b", ["--compression", "none"]),
        UmociRepack("umoci-large", "umoci repack", ctx.large),
        UmociRepack("umoci-small", "umoci repack", "small"),
        TarPipe("tar-gzip", "tar -cf - \\| gzip", "b", "gzip"),
    ]
    if shutil.which("pigz"):
        subs.append(TarPipe("tar-pigz", "tar -cf - \\| pigz", "b", "pigz"))
    else:
        log("pigz not installed: apt-get install -y pigz; skipping tar | pigz")
    subs.append(TarPipe("tar-cat", "tar -cf - \\| cat (no compression)",
                        "b", "cat"))
    return subs


def time_part(ctx, part, subjects, runs):
    """Interleaved: run 1 of every subject, then run 2, ... Returns
    {name: [seconds]} and fills ctx.sizes / ctx.entries from the last run."""
    times = {}
    for i in range(runs):
        for s in subjects:
            s.prepare(ctx)
            syncfs(ctx)
            t0 = time.perf_counter()
            s.run(ctx)
            syncfs(ctx)
            dt = time.perf_counter() - t0
            times.setdefault(s.name, []).append(dt)
            out = s.output(ctx)
            ctx.sizes.setdefault((part, s.name), set()).add(out.stat().st_size)
            if i == runs - 1:
                ctx.entries[(part, s.name)] = count_entries(out)
                if s.info:
                    ctx.infos[(part, s.name)] = s.info
            s.cleanup(ctx)
            log(f"  {part} run {i + 1}/{runs} {s.name}: {fmt_s(dt)}")
    return times


def count_entries(path):
    """Entries in a (compressed) tar: GNU tar detects gzip/zstd on read."""
    r = sh(f"tar -tf {path} | wc -l", capture=True)
    return int(r.stdout.strip())

# ---------------------------------------------------------------------------
# report


def cell(v):
    return f"{fmt_s(statistics.median(v))} ({fmt_s(min(v))}–{fmt_s(max(v))})"


def sizes(ctx, part, name):
    s = ctx.sizes.get((part, name))
    return " / ".join(fmt_bytes(x) for x in sorted(s)) if s else "—"


def ratio(a, b):
    return f"{a / b:.2f}" if a >= 0.1 * b else f"{a / b:.4f}"


def report(ctx, args, ta, tb):
    out = []
    un = os.uname()
    med = lambda t, n: statistics.median(t[n]) if n in t else None  # noqa
    out.append(f"## Commit benchmark {datetime.date.today().isoformat()}")
    out.append("")
    out.append(f"- machine: {os.cpu_count()} CPUs (nproc "
               f"{len(os.sched_getaffinity(0))}), "
               f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB RAM, "
               f"kernel {un.release} {un.machine}")
    out.append("- load average (1 min) at start/end of the timed part: "
               + " / ".join(f"{x:.1f}" for x in ctx.load)
               + " (other work on the machine shows here)")
    out.append(f"- command: `{ctx.command}`")
    out.append(f"- strata build: `{ctx.build}`; umoci "
               f"{ctx.versions['umoci']}; {ctx.versions['gzip']}; "
               f"pigz {ctx.versions['pigz']}")
    for name in (ctx.large, "small"):
        i = ctx.images[name]
        src = "; ".join(", ".join(l[1]) + (f" minus {', '.join(l[2])}" if l[2] else "")
                        for l in IMAGES[name])
        out.append(f"- image {name}: {i['layers']} layer(s) made with umoci "
                   f"({src}): {fmt_bytes(i['compressed'])} compressed, "
                   f"{fmt_bytes(i['unpacked'])} in regular files, "
                   f"{i['entries']} entries")
    out.append(f"- one-file change: one line appended to `/{CHANGE}` "
               f"(the same in the umoci bundles and in the upper directory, "
               f"which holds that file and its parents)")
    out.append(f"- 500 MiB change (part B): the one-file change plus "
               f"{ctx.add_files} regular files, {fmt_bytes(ctx.add_bytes)}, "
               f"copied from {', '.join('/' + s for s in ctx.add_used)} "
               f"to `/{ADD_DIR}/...`")
    out.append(f"- runs: median of {args.runs} runs, min–max in brackets, "
               f"subjects interleaved run by run; page cache warm (sources "
               f"read once untimed); each run writes a fresh destination "
               f"(a hardlinked copy of the layout, or a new file) on a "
               f"scratch ext4; every timing ends with `sync -f SCRATCH` "
               f"(syncfs), for all subjects alike")
    out.append("")

    out.append("### A. One-file change: strata commit vs umoci repack")
    out.append("")
    out.append("| subject | image | time | new layer (gzip) | entries in layer "
               "| umoci repack (same image) ÷ this |")
    out.append("|---|---|---|---|---|---|")
    for n, label, img in (("strata-large", "strata commit", ctx.large),
                          ("strata-small", "strata commit", "small"),
                          ("umoci-large", "umoci repack", ctx.large),
                          ("umoci-small", "umoci repack", "small")):
        if n not in ta:
            continue
        u = "umoci-large" if img == ctx.large else "umoci-small"
        r = f"**{med(ta, u) / med(ta, n):.0f}x**" if n.startswith("strata") \
            and u in ta else "—"
        out.append(f"| {label} | {img} | {cell(ta[n])} | {sizes(ctx, 'A', n)} "
                   f"| {ctx.entries.get(('A', n), '—')} | {r} |")
    out.append("")
    if "strata-large" in ta and "strata-small" in ta:
        out.append(f"strata commit large ÷ small image: "
                   f"{med(ta, 'strata-large') / med(ta, 'strata-small'):.2f}; "
                   f"umoci repack large ÷ small image: "
                   f"{med(ta, 'umoci-large') / med(ta, 'umoci-small'):.1f}.")
        out.append("")

    out.append("### B. 500 MiB change: strata commit vs umoci repack, "
               "tar | gzip, tar | pigz")
    out.append("")
    base = {"gz": "tar-gzip", "pigz": "tar-pigz", "umoci": "umoci-large"}
    hdr = ["subject", "time", "output (compressed)", "÷ uncompressed tar",
           "entries", "time ÷ tar\\|gzip", "time ÷ tar\\|pigz",
           "umoci repack (large) ÷ this"]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    raw = min(ctx.sizes.get(("B", "strata-none"), {0}) or {0})
    for s in ctx.subjects_b:
        n = s.name
        if n not in tb:
            continue
        label = s.label + (f" ({s.image} image)"
                           if isinstance(s, UmociRepack) else "")
        m = med(tb, n)
        sz = min(ctx.sizes[("B", n)])
        cols = [label, cell(tb[n]), sizes(ctx, "B", n),
                f"{sz / raw:.3f}" if raw else "—",
                str(ctx.entries.get(("B", n), "—"))]
        for k in ("gz", "pigz"):
            cols.append(ratio(m, med(tb, base[k])) if base[k] in tb else "—")
        cols.append(f"{med(tb, base['umoci']) / m:.1f}x"
                    if base["umoci"] in tb else "—")
        if n.startswith("strata"):
            cols[0] = f"**{cols[0]}**"
        out.append("| " + " | ".join(cols) + " |")
    out.append("")
    out.append("Entries: GNU tar writes `./` and strata/umoci layers the "
               "parent directories of every changed path, so counts may differ "
               "by a few; `÷ uncompressed tar` is relative to strata's "
               "`--compression none` layer.")
    out.append("")
    if ctx.infos:
        out.append("strata's own summary (last run):")
        out.append("")
        for (p, n), v in sorted(ctx.infos.items()):
            v = v.replace("\n", " ")
            out.append(f"- {p} {n}: `{v}`")
        out.append("")
    return "\n".join(out)

# ---------------------------------------------------------------------------
# setup of one run


def copy_tree(src, dst):
    sh(["cp", "-a", src, dst])


def setup(ctx, args):
    sc = ctx.scratch
    ctx.layouts, ctx.bundles, ctx.uppers = {}, {}, {}
    for name in (ctx.large, "small"):
        base = CACHE / f"commit-{name}"
        log(f"{name} image: copying the layout to the scratch filesystem "
            f"and unpacking it with umoci (untimed)")
        (sc / name).mkdir()
        layout, bundle = sc / name / "layout", sc / name / "bundle"
        copy_tree(base / "layout", layout)
        # unpacked here, not copied: a copied tree's directory sizes differ
        # from the bundle's mtree, and umoci repack would add them all
        sh(["umoci", "unpack", "--image", f"{layout}:{TAG}", bundle])
        ctx.layouts[name], ctx.bundles[name] = layout, bundle
    # part A's upper: the changed file and its parents (metadata of the
    # parents as in the image, as a copy-up leaves them)
    ua = sc / "upper-a"
    ua.mkdir()
    src = ctx.bundles["small"] / "rootfs"
    sh(["cp", "-a", "--parents", CHANGE, ua], cwd=src)
    for root in [ua] + [b / "rootfs" for b in ctx.bundles.values()]:
        with open(root / CHANGE, "ab") as f:
            f.write(CHANGE_LINE)
    ctx.uppers["a"] = ua
    ctx.env = dict(os.environ, STRATA_ROOT=str(sc / "store"))
    ctx.env.pop("SOURCE_DATE_EPOCH", None)


def setup_b(ctx, target):
    """Part B: the 500 MiB addition, in a copy of part A's upper and in
    every bundle (real copies, no hardlinks between them)."""
    sc = ctx.scratch
    files, total = add_file_list(target)
    ctx.add_files, ctx.add_bytes = len(files), total
    ctx.add_used = [s for s in ADD_SOURCES
                    if any(f.startswith(s + "/") for f in files)]
    ub = sc / "upper-b"
    copy_tree(ctx.uppers["a"], ub)
    lst = sc / "add-list"
    lst.write_text("\n".join(files) + "\n")
    (ub / ADD_DIR).mkdir(parents=True)
    log(f"part B: copying {len(files)} files, {fmt_bytes(total)}")
    sh(f"tar -C / -cf - --no-recursion -T {lst} | tar -C {ub / ADD_DIR} -xpf -")
    for b in ctx.bundles.values():
        copy_tree(ub / "opt", b / "rootfs" / "opt")
    ctx.uppers["b"] = ub


def warm(paths):
    for p in paths:
        sh(f"tar -cf - -C {p} . | cat >/dev/null")


def versions():
    v = {}
    v["umoci"] = sh(["umoci", "--version"], capture=True).stdout.split()[-1]
    v["gzip"] = sh(["gzip", "--version"], capture=True).stdout.splitlines()[0]
    v["pigz"] = (sh(["pigz", "--version"], capture=True).stdout.strip() or "?") \
        if shutil.which("pigz") else "not installed"
    v["pigz"] = v["pigz"].replace("pigz ", "")
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small image and a 30 MiB change (a smoke run)")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--runs", type=int, help="timed runs (default 3, quick 2)")
    ap.add_argument("--build", default=os.environ.get(
        "STRATA_BUILD", str(REPO / "build-bench")),
        help="meson build dir with tools/strata (default $STRATA_BUILD or "
             "build-bench)")
    ap.add_argument("--parts", default="AB", help="A, B or AB (default)")
    ap.add_argument("--change-mib", type=int,
                    help="size of part B's change (default 500, quick 30)")
    ap.add_argument("--rebuild-image", action="store_true",
                    help="rebuild the cached images")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("commit.py: run as root")
    args.runs = args.runs or (2 if args.quick else 3)
    mib = args.change_mib or (30 if args.quick else 500)

    ctx = bench.Ctx()
    ctx.command = " ".join(["/usr/bin/python3", "tests/bench/commit.py"]
                           + sys.argv[1:])
    ctx.build = Path(args.build).resolve()
    ctx.strata = ctx.build / "tools" / "strata"
    if not os.access(ctx.strata, os.X_OK):
        sys.exit(f"commit.py: no {ctx.strata}; build first: meson setup "
                 f"build-bench --buildtype=release && ninja -C build-bench")
    ctx.large = "quick-large" if args.quick else "large"
    ctx.sizes, ctx.entries, ctx.infos = {}, {}, {}
    ctx.versions = versions()

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    ctx.work = CACHE / f"commit-run-{os.getpid()}"
    try:
        ctx.images = {}
        for name in (ctx.large, "small"):
            if args.rebuild_image:
                rmtree(CACHE / f"commit-{name}")
            _, ctx.images[name] = build_image(name)
        ctx.work.mkdir(parents=True)
        need = sum(i["unpacked"] + i["compressed"] for i in ctx.images.values())
        need += 6 * (mib << 20) + (1 << 30)
        bench.make_scratch(ctx, max(2, -(-need // (1 << 30))))
        setup(ctx, args)
        ctx.add_files, ctx.add_bytes, ctx.add_used = 0, 0, []
        ctx.load = [os.getloadavg()[0]]
        ta, tb = {}, {}
        ctx.subjects_b = subjects_b(ctx)
        if "A" in args.parts:
            log("warming the page cache (untimed)")
            warm([*ctx.bundles.values(), *ctx.uppers.values()])
            log(f"part A: one-file change, {args.runs} runs")
            ta = time_part(ctx, "A", subjects_a(ctx), args.runs)
        if "B" in args.parts:
            setup_b(ctx, mib << 20)     # adds to the bundles: after part A
            log("warming the page cache (untimed)")
            warm([*ctx.bundles.values(), ctx.uppers["b"]])
            log(f"part B: {mib} MiB change, {args.runs} runs")
            tb = time_part(ctx, "B", ctx.subjects_b, args.runs)
        ctx.load.append(os.getloadavg()[0])
        text = report(ctx, args, ta, tb)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
            log(f"report written to {args.out}")
    finally:
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
        sys.exit("commit.py: interrupted (all mounts unmounted)")
