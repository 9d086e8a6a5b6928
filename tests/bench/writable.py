#!/usr/bin/python3
"""strata writable-mount benchmark: stratafs vs the kernel overlay and
fuse-overlayfs on write workloads.

Run as root, from the repository (release build in build-bench):

    meson setup build-bench --buildtype=release && ninja -C build-bench
    /usr/bin/python3 tests/bench/writable.py --quick            # smoke run
    flock /tmp/bench.lock /usr/bin/python3 tests/bench/writable.py \\
        --out /tmp/bench-writable.md                            # full run

Not part of the test suite; no timing is ever asserted. The same workloads
run side by side, interleaved run by run, on

- stratafs -o lowerdir=L3:L2:L1,upperdir=U,workdir=W none MNT
- stratafs -o root=STORE,upper=U,work=W bench:latest MNT  (the same 3 layers
  imported into a store)
- the kernel overlay (mount -t overlay, the baseline of the ratios)
- fuse-overlayfs -o lowerdir=...,upperdir=U,workdir=W
- the upper filesystem itself, no overlay (the floor; for the copy-up
  workload it runs `cp --reflink=auto` of the lower file, the reference
  copy-up is compared with)

Workloads: untar of a source tree into the mount, append one byte to a
1 GiB lower file (copy-up), rm -rf of a lower tree of ~10k files, and a
build-like create/stat/rename/unlink of many small files. Every timed run
gets a fresh upper and work directory on a fresh mount (untimed), and
every timing ends with syncfs on the mount and on the upper filesystem, so
no subject is credited for dirty page cache.

The helpers (mount tracking, scratch filesystem, layer extraction, whiteout
conversion, formatting) come from run.py, the read-path benchmark.
"""
import argparse
import ctypes
import datetime
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench                                     # noqa: E402
from run import log, sh, rmtree, fmt_s, fmt_bytes, q     # noqa: E402

REPO = bench.REPO
SPEC_VERSION = 1        # bump when the lower-tree recipe changes
TAG = "bench"           # bench.import_strata imports ctx.tag as bench:latest

# sizes: (full, quick)
SIZES = {
    "big": (1 << 30, 64 << 20),           # the copy-up file
    "tree_dirs": ((20, 10), (4, 5)),      # top dirs x subdirs
    "tree_files": (50, 50),               # files per subdir
    "untar_src": ("include", "include/linux"),   # under /usr
    "meta": ((50, 5000), (10, 1000)),     # dirs, files
    "runs": (5, 3),
    "scratch_gib": (8, 2),
}


def size(key, quick):
    return SIZES[key][1 if quick else 0]


_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"syncfs {path}: {os.strerror(e)}")
    finally:
        os.close(fd)

# ---------------------------------------------------------------------------
# the lower layers: an OCI image built once with umoci, extracted into
# overlay-format lower directories and imported into a store; cached


def gen_big(path, nbytes):
    """@nbytes of incompressible, deterministic data (AES-CTR of zeros):
    no holes for anyone to skip, the same bytes on every rebuild."""
    sh(f"openssl enc -aes-128-ctr -nosalt -K {'5a' * 16} -iv {'00' * 16} "
       f"-in /dev/zero 2>/dev/null | head -c {nbytes} > {q(path)}")
    if os.path.getsize(path) != nbytes:
        raise RuntimeError(f"{path}: short write")


def gen_tree(root, quick):
    """A source-like tree: top dirs x subdirs x files, mostly small files
    (80% < 4 KiB, 18% < 32 KiB, 2% < 128 KiB), a symlink per subdir.
    Deterministic (seeded)."""
    rng = random.Random(1234)
    ntop, nsub = size("tree_dirs", quick)
    nfiles = size("tree_files", quick)
    exts = [".c", ".h", ".py", ".txt", ".json", ".o"]
    for a in range(ntop):
        for b in range(nsub):
            d = Path(root, f"mod{a:02d}", f"sub{b:02d}")
            d.mkdir(parents=True)
            for i in range(nfiles):
                x = rng.random()
                n = rng.randrange(4096) if x < 0.8 else (
                    rng.randrange(4096, 32768) if x < 0.98 else
                    rng.randrange(32768, 131072))
                (d / f"file{i:03d}{exts[i % len(exts)]}").write_bytes(
                    rng.randbytes(n))
            os.symlink(f"file000{exts[0]}", d / "link")


def mutate_top(rootfs):
    """The top layer: delete every 97th file of the tree (file whiteouts)
    and one subdir (a directory whiteout), append to every 53rd file
    (modified copies in the top layer), add a file."""
    files = sorted(p for p in Path(rootfs, "tree").rglob("*")
                   if p.is_file() and not p.is_symlink())
    subdirs = sorted(p for p in Path(rootfs, "tree").glob("*/*") if p.is_dir())
    victim = subdirs[len(subdirs) // 3]
    n_del = n_mod = 0
    for i, f in enumerate(files):
        if victim in f.parents:
            continue
        if i % 97 == 5:
            f.unlink()
            n_del += 1
        elif i % 53 == 7:
            with open(f, "ab") as fh:
                fh.write(b"\n/* modified in the top layer */\n")
            n_mod += 1
    bench.rmtree(victim)
    Path(rootfs, "etc").mkdir(exist_ok=True)
    Path(rootfs, "etc", "bench.conf").write_text("top layer\n")
    return {"deleted files": n_del, "modified files": n_mod,
            "deleted dirs": 1}


def build_layers(ctx):
    """Layout, lowers, merged tree, untar source; cached in ctx.cache."""
    base = ctx.cache
    stamp = base / "built.json"
    if stamp.exists():
        info = json.loads(stamp.read_text())
        if info.get("version") == SPEC_VERSION:
            log(f"reusing lowers in {base}")
            return info
    log(f"building the writable benchmark layers in {base} (cached)")
    rmtree(base)
    base.mkdir(parents=True)
    layout, bundle = base / "layout", base / "bundle"
    sh(["umoci", "init", "--layout", layout])
    sh(["umoci", "new", "--image", f"{layout}:{TAG}"])
    sh(["umoci", "unpack", "--image", f"{layout}:{TAG}", bundle])
    rootfs = bundle / "rootfs"
    info = {"version": SPEC_VERSION}
    steps = [
        ("big", lambda: (Path(rootfs, "big").mkdir(),
                         gen_big(rootfs / "big" / "file.bin",
                                 size("big", ctx.quick)))),
        ("tree", lambda: gen_tree(rootfs / "tree", ctx.quick)),
        ("top", lambda: info.setdefault("top", mutate_top(rootfs))),
    ]
    for name, fill in steps:
        fill()
        sh(["umoci", "repack", "--refresh-bundle", "--no-history",
            "--image", f"{layout}:{TAG}", bundle])
        log(f"  layer {name} packed")
    rmtree(bundle)
    blobs, digest = bench.image_layers(layout, TAG)
    for i, blob in enumerate(blobs):
        lower = base / f"lower{i}"
        bench.extract_layer(blob, lower)
        bench.convert_whiteouts(lower)
    info["digest"] = digest
    info["blob_bytes"] = sum(b.stat().st_size for b in blobs)
    # the merged tree, for the no-overlay floor of rm -rf: read through a
    # read-only kernel overlay of the lowers
    ro = base / "mnt-ro"
    ro.mkdir()
    lowers = ":".join(str(base / f"lower{i}")
                      for i in reversed(range(len(blobs))))
    bench.MOUNTS.append(str(ro))
    try:
        sh(["mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={lowers}", ro])
        sh(["cp", "-a", ro / "tree", base / "merged-tree"])
    finally:
        bench.unmount(ro)
    ro.rmdir()
    # the untar source
    src = size("untar_src", ctx.quick)
    sh(["tar", "-C", "/usr", "-cf", base / "untar.tar", src])
    stamp.write_text(json.dumps(info, indent=1))
    return info


def count_tree(root):
    n = 0
    for dp, dns, fns in os.walk(root):
        n += len(dns) + len(fns)
    return n


def import_store(ctx):
    """The store stratafs -o upper= mounts, imported once (untimed), keyed
    by manifest digest and the strata binaries."""
    h = hashlib.sha256()
    for b in (ctx.strata, ctx.stratafs):
        h.update(Path(b).read_bytes())
    key = ctx.info["digest"] + " " + h.hexdigest()
    store, stamp = ctx.cache / "store", ctx.cache / "store.key"
    if not (stamp.exists() and stamp.read_text() == key and store.exists()):
        log("importing the layers into the store (untimed)")
        rmtree(store)
        bench.import_strata(ctx, store)
        stamp.write_text(key)
    ctx.store = store

# ---------------------------------------------------------------------------
# subjects


class RwMount(bench.MountSubject):
    """A writable mount whose upper and work directories live on the
    scratch filesystem; reset() gives it empty ones on a fresh mount."""

    def setup(self, ctx):
        self.root = ctx.work / f"mnt-{self.name}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.upper = ctx.scratch / self.name / "upper"
        self.workdir = ctx.scratch / self.name / "work"

    def reset(self, ctx):
        self.unmount(ctx)
        if is_still_mounted(self.root):
            raise RuntimeError(f"cannot unmount {self.root}")
        rmtree(self.upper.parent)
        self.upper.mkdir(parents=True)
        self.workdir.mkdir()

    def clear(self, ctx):
        self.unmount(ctx)
        rmtree(self.upper.parent)

    def sync(self):
        syncfs(self.root)


def is_still_mounted(p):
    return bench.is_mounted(p)


class Floor(bench.Subject):
    """The upper filesystem itself: no overlay, no FUSE."""

    def setup(self, ctx):
        self.root = ctx.scratch / "plain" / "root"
        self.upper = self.root

    def reset(self, ctx):
        rmtree(self.root.parent)
        self.root.mkdir(parents=True)

    def clear(self, ctx):
        rmtree(self.root.parent)

    def mount(self, ctx):
        pass

    def unmount(self, ctx=None):
        pass

    def sync(self):
        pass


def lowers_spec(ctx):
    return ":".join(str(l) for l in reversed(ctx.lowers))      # top first


def stratafs_dirs_cmd(ctx, mnt):
    s = SUBJECTS["stratafs-dirs"]
    return [ctx.stratafs, "-o", f"lowerdir={lowers_spec(ctx)},"
            f"upperdir={s.upper},workdir={s.workdir}", "none", mnt]


def stratafs_image_cmd(ctx, mnt):
    s = SUBJECTS["stratafs-image"]
    return [ctx.stratafs, "-o", f"root={ctx.store},upper={s.upper},"
            f"work={s.workdir}", f"{TAG}:latest", mnt]


def overlay_cmd(ctx, mnt):
    s = SUBJECTS["overlay"]
    return ["mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={lowers_spec(ctx)},upperdir={s.upper},"
            f"workdir={s.workdir}", mnt]


def fuse_overlayfs_cmd(ctx, mnt):
    s = SUBJECTS["fuse-overlayfs"]
    return ["fuse-overlayfs", "-o", f"lowerdir={lowers_spec(ctx)},"
            f"upperdir={s.upper},workdir={s.workdir}", mnt]


SUBJECTS = {
    "stratafs-dirs": RwMount("stratafs-dirs", "stratafs lowerdir=",
                             stratafs_dirs_cmd, daemon="stratafs"),
    "stratafs-image": RwMount("stratafs-image", "stratafs image upper=",
                              stratafs_image_cmd, daemon="stratafs"),
    "overlay": RwMount("overlay", "kernel overlay", overlay_cmd),
    "fuse-overlayfs": RwMount("fuse-overlayfs", "fuse-overlayfs",
                              fuse_overlayfs_cmd, daemon="fuse-overlayfs"),
    "plain": Floor("plain", "upper fs, no overlay"),
}
BASELINE = "overlay"
STRATAFS = ["stratafs-dirs", "stratafs-image"]

# ---------------------------------------------------------------------------
# workloads


class Workload:
    def __init__(self, name, body, prepare=None, check=None, floor=None):
        self.name, self.body = name, body
        self.prepare = prepare          # extra untimed setup after reset
        self.check = check              # untimed: what the subject saw
        self.floor = floor              # what the floor column means


WORKLOADS = []


def workload(name, **kw):
    def reg(fn):
        WORKLOADS.append(Workload(name, fn, **kw))
        return fn
    return reg


def finish(ctx, subj):
    """End of every timing: syncfs on the mount, then on the upper fs."""
    subj.sync()
    syncfs(ctx.scratch)


# 1. untar

def untar_check(ctx, subj):
    return f"{count_tree(subj.root / 'new')} entries"


@workload("untar /usr/{src} (tar -xf into MNT/new)", check=untar_check)
def w_untar(ctx, subj):
    (subj.root / "new").mkdir()
    sh(["tar", "-C", subj.root / "new", "-xf", ctx.cache / "untar.tar"])
    finish(ctx, subj)


# 2. copy-up

def copyup_check(ctx, subj):
    if subj.name == "plain":
        p = subj.root / "file.bin"
        return f"{os.path.getsize(p)} B (cp)"
    st = os.stat(subj.root / "big" / "file.bin")
    up = os.stat(subj.upper / "big" / "file.bin")
    return (f"{st.st_size} B, upper file {up.st_size} B, "
            f"{up.st_blocks * 512 >> 20} MiB allocated")


@workload("append 1 byte to a {big} lower file (copy-up)",
          check=copyup_check, floor="`cp --reflink=auto` of the lower file")
def w_copyup(ctx, subj):
    if subj.name == "plain":
        sh(["cp", "--reflink=auto", ctx.big, subj.root / "file.bin"])
    else:
        with open(subj.root / "big" / "file.bin", "ab") as f:
            f.write(b"\n")
    finish(ctx, subj)


# 3. rm -rf of a lower tree

def rm_prepare(ctx, subj):
    if subj.name == "plain":
        sh(["cp", "-a", ctx.cache / "merged-tree", subj.root / "tree"])
        os.sync()


def rm_check(ctx, subj):
    gone = not os.path.lexists(subj.root / "tree")
    return (f"{'gone' if gone else 'STILL THERE'}, "
            f"{count_tree(subj.upper)} left in upper")


@workload("rm -rf a lower tree ({tree} entries)", prepare=rm_prepare,
          check=rm_check, floor="rm -rf of a copy of the merged tree")
def w_rm(ctx, subj):
    sh(["rm", "-rf", subj.root / "tree"])
    finish(ctx, subj)


# 4. build-like metadata workload

def meta_check(ctx, subj):
    left = count_tree(subj.root / "build") if \
        os.path.lexists(subj.root / "build") else 0
    return f"{ctx.meta_ops} ops, {left} left"


@workload("create/stat/rename/unlink {meta} small files (build-like)",
          check=meta_check)
def w_meta(ctx, subj):
    ndirs, nfiles = size("meta", ctx.quick)
    per = nfiles // ndirs
    base = str(subj.root / "build")
    payload = bytes(range(256)) * 8
    os.mkdir(base)
    ops = 1
    paths = []
    for d in range(ndirs):
        dp = f"{base}/obj{d:03d}"
        os.mkdir(dp)
        ops += 1
        for i in range(per):
            p = f"{dp}/unit{i:04d}.o.tmp"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, payload[:100 + (i * 37) % 1900])
            os.close(fd)
            paths.append(p)
    ops += len(paths)
    for p in paths:                          # stat all
        os.stat(p)
    ops += len(paths)
    for j in range(0, len(paths), 2):        # rename half into place
        os.rename(paths[j], paths[j][:-4])
        paths[j] = paths[j][:-4]
    ops += (len(paths) + 1) // 2
    for p in paths:                          # unlink all
        os.unlink(p)
    ops += len(paths)
    for d in range(ndirs):
        os.rmdir(f"{base}/obj{d:03d}")
    os.rmdir(base)
    ops += ndirs + 1
    ctx.meta_ops = ops
    finish(ctx, subj)

# ---------------------------------------------------------------------------
# runner


def mount_line(path):
    """fstype and options of the mount at @path, from /proc/self/mounts
    (the upper/work/lower paths shortened)."""
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mp, fstype, opts = line.split()[:4]
            if mp == path:
                opts = re.sub(r"(lowerdir|upperdir|workdir)=[^,]*", r"\1=…",
                              opts)
                return f"{fstype} {opts}"
    return "?"


def daemon_stats(subj):
    """(VmHWM KiB, CPU seconds) of the FUSE daemon serving @subj."""
    if not getattr(subj, "daemon", None):
        return None
    pid = subj.pid()
    if pid is None:
        return None
    hwm = bench.proc_status(pid, "VmHWM")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return hwm, cpu


def run_one(ctx, wl, subj, timed):
    """Untimed: fresh upper/work, mount, workload prepare, optional
    drop_caches. Timed: the body (ending with syncfs). Untimed: what the
    subject saw, daemon stats, unmount and remove the upper."""
    subj.reset(ctx)
    subj.mount(ctx)
    if subj.name not in ctx.mount_opts and isinstance(subj, RwMount):
        ctx.mount_opts[subj.name] = mount_line(subj.root)
    if wl.prepare:
        wl.prepare(ctx, subj)
    os.sync()
    if ctx.drop_caches:
        bench.drop_caches()
    try:
        t0 = time.perf_counter()
        wl.body(ctx, subj)
        dt = time.perf_counter() - t0
        if timed:
            ctx.saw.setdefault((wl.name, subj.name), set()).add(
                wl.check(ctx, subj))
            ds = daemon_stats(subj)
            if ds:
                ctx.daemons.setdefault((wl.name, subj.name), []).append(ds)
    finally:
        subj.clear(ctx)
    return dt


def time_workload(ctx, wl, subjects, runs, warmup):
    """Every subject once per round, rounds repeated; a subject that fails
    is reported and dropped from this workload."""
    live = list(subjects)
    for rnd in range(-1 if warmup else 0, runs):
        # rotate the order every round: nobody always runs first, or
        # always right after the same neighbour's cleanup
        k = rnd % len(live) if live else 0
        for subj in live[k:] + live[:k]:
            if subj not in live:
                continue
            try:
                dt = run_one(ctx, wl, subj, rnd >= 0)
            except Exception as e:
                log(f"  {subj.name} FAILED: {e}")
                ctx.failed[(wl.name, subj.name)] = str(e)[:300]
                live.remove(subj)
                continue
            if rnd >= 0:
                ctx.results.setdefault((wl.name, subj.name), []).append(dt)
        if rnd >= 0 and live:
            log(f"  round {rnd + 1}/{runs}: " + ", ".join(
                f"{s.name} {fmt_s(ctx.results[(wl.name, s.name)][-1])}"
                for s in live))


def med(ctx, wl, s):
    v = ctx.results.get((wl.name, s))
    return statistics.median(v) if v else None


def report(ctx, args):
    subs = [s for s in SUBJECTS if s in ctx.active]
    L = lambda s: SUBJECTS[s].label                              # noqa: E731
    out = []
    un = os.uname()
    fstype = lambda p: sh(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", "-T", p],  # noqa: E731
                          capture=True).stdout.strip()
    ndirs, nfiles = size("meta", ctx.quick)
    out.append(f"## Writable mounts {datetime.date.today().isoformat()}")
    out.append("")
    out.append(f"- machine: nproc {len(os.sched_getaffinity(0))}, "
               f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB RAM, "
               f"kernel {un.release} {un.machine}; fuse-overlayfs "
               f"{ctx.fo_version}")
    out.append("- load average (1 min) at start/end of the timed part: "
               + " / ".join(f"{x:.1f}" for x in ctx.load)
               + " (other work on the machine shows here)")
    out.append(f"- command: `{ctx.command}`")
    out.append(f"- strata build: `{ctx.build}` ({ctx.source})")
    out.append("- mounts (as in /proc/mounts): " + "; ".join(
        f"{L(s)}: `{ctx.mount_opts[s]}`" for s in subs
        if s in ctx.mount_opts))
    out.append(f"- lowers: 3 layers made with umoci ({fmt_bytes(ctx.info['blob_bytes'])} "
               f"of blobs), extracted into overlay-format lower directories "
               f"on the root fs (`{fstype(ctx.cache)}`) and imported into a "
               f"strata store for `stratafs -o upper=`: layer 1 `big/file.bin` "
               f"({fmt_bytes(ctx.big.stat().st_size)}, incompressible), layer 2 "
               f"`tree/` (generated source-like tree), layer 3 deletes "
               f"{ctx.info['top']['deleted files']} files and one directory "
               f"of it and modifies {ctx.info['top']['modified files']}; "
               f"merged `tree/`: {ctx.tree_entries} entries")
    out.append("- upper and work directories: on a scratch ext4 (loop "
               "device with direct I/O, `nodiscard`, the file preallocated) "
               "fresh for every timed run; the `cp --reflink=auto` "
               "reference writes to the same filesystem (ext4 cannot "
               "reflink, and the lower is on another filesystem, so cp "
               "copies with read/write)")
    out.append(f"- untar: `tar -xf` of a tar of `/usr/{size('untar_src', ctx.quick)}` "
               f"({fmt_bytes(ctx.tar_bytes)}, {ctx.tar_entries} entries, made "
               f"once, in the page cache); build-like: {nfiles} files in "
               f"{ndirs} dirs (mkdir, create + write 100–2000 B, stat all, "
               f"rename half, unlink all, rmdir) from python")
    out.append("- every timing ends with syncfs on the mount and then on "
               "the upper filesystem, so all pay for writeback; each "
               "subject has its default durability (none is `volatile`: "
               "the kernel overlay and stratafs fsync a copied-up file "
               "before it appears, fuse-overlayfs does not)")
    out.append("- page cache: "
               + ("dropped (`echo 3 > drop_caches`) after each mount, before "
                  "every timed run" if ctx.drop_caches else
                  "not dropped: the lower files are warm in the page cache "
                  "for every subject (one untimed warm-up round); the mounts "
                  "themselves are fresh"))
    out.append(f"- runs: median of {args.runs} rounds (each round runs every "
               f"subject once, in an order rotated from round to round), "
               f"min–max in brackets; ratio = median / median")
    out.append("")
    out.append("### Time")
    out.append("")
    hdr = ["workload"] + [L(s) for s in subs]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    for wl in WORKLOADS:
        if wl not in ctx.ran:
            continue
        cells = []
        for s in subs:
            v = ctx.results.get((wl.name, s))
            if (wl.name, s) in ctx.failed:
                cells.append("FAILED")
            elif not v:
                cells.append("—")
            else:
                cells.append(f"{fmt_s(statistics.median(v))} "
                             f"({fmt_s(min(v))}–{fmt_s(max(v))})")
        out.append(f"| {wl.title} | " + " | ".join(cells) + " |")
    floors = [wl for wl in WORKLOADS if wl.floor and wl in ctx.ran]
    if floors and "plain" in subs:
        out.append("")
        out.append(f"{L('plain')}: the workload on the upper filesystem "
                   "directly; " + "; ".join(f"for {wl.title.split(' (')[0]}: "
                                            f"{wl.floor}" for wl in floors) + ".")
    out.append("")
    out.append("### Ratios")
    out.append("")
    pairs = [(s, BASELINE) for s in subs if s not in (BASELINE, "plain")] + \
            [(s, "fuse-overlayfs") for s in STRATAFS if s in subs]
    pairs = [(a, b) for a, b in pairs if a in subs and b in subs]
    hdr = ["workload"] + [f"{L(a)} / {L(b)}" for a, b in pairs]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    for wl in WORKLOADS:
        if wl not in ctx.ran:
            continue
        cells = []
        for a, b in pairs:
            ma, mb = med(ctx, wl, a), med(ctx, wl, b)
            if ma is None or not mb:
                cells.append("—")
                continue
            r = ma / mb
            bad = a in STRATAFS and b == "fuse-overlayfs" and r > 1.0
            cells.append(f"**{r:.2f}**" if bad else f"{r:.2f}")
        out.append(f"| {wl.title} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Bold: stratafs slower than fuse-overlayfs (the target is "
               "at least as fast).")
    out.append("")
    if w_copyup_wl in ctx.ran and "plain" in subs:
        cp = med(ctx, w_copyup_wl, "plain")
        out.append("### Copy-up against `cp --reflink=auto` of the same "
                   "file to the upper filesystem")
        out.append("")
        out.append("| subject | copy-up | cp --reflink=auto | ratio (target ≤ 1.2 for stratafs) |")
        out.append("|---|---|---|---|")
        for s in subs:
            if s == "plain":
                continue
            m = med(ctx, w_copyup_wl, s)
            r = f"{m / cp:.2f}" if m and cp else "—"
            if m and cp and s in STRATAFS and m / cp > 1.2:
                r = f"**{r}**"
            out.append(f"| {L(s)} | {fmt_s(m)} | {fmt_s(cp)} | {r} |")
        out.append("")
    out.append("### What each subject saw (must agree)")
    out.append("")
    out.append("| workload | " + " | ".join(L(s) for s in subs) + " |")
    out.append("|---|" + "---|" * len(subs))
    for wl in WORKLOADS:
        if wl not in ctx.ran:
            continue
        row = []
        for s in subs:
            v = ctx.saw.get((wl.name, s))
            row.append("; ".join(sorted(v)) if v else "—")
        out.append(f"| {wl.title} | " + " | ".join(row) + " |")
    out.append("")
    dsubs = [s for s in subs if getattr(SUBJECTS[s], "daemon", None)]
    if dsubs and ctx.daemons:
        out.append("### FUSE daemons (fresh mount per run: VmHWM and CPU "
                   "time of the daemon after the workload, median)")
        out.append("")
        out.append("| workload | " + " | ".join(
            f"{L(s)} VmHWM | {L(s)} CPU" for s in dsubs) + " |")
        out.append("|---|" + "---|---|" * len(dsubs))
        for wl in WORKLOADS:
            if wl not in ctx.ran:
                continue
            row = []
            for s in dsubs:
                v = ctx.daemons.get((wl.name, s))
                if not v:
                    row += ["—", "—"]
                    continue
                row.append(fmt_bytes(statistics.median(x[0] for x in v) * 1024))
                row.append(fmt_s(statistics.median(x[1] for x in v)))
            out.append(f"| {wl.title} | " + " | ".join(row) + " |")
        out.append("")
    if ctx.failed:
        out.append("### Failures")
        out.append("")
        for (w, s), e in ctx.failed.items():
            t = next((x.title for x in WORKLOADS if x.name == w), w)
            out.append(f"- {t} on {L(s)}: `{e}`")
        out.append("")
    return "\n".join(out)


w_copyup_wl = WORKLOADS[1]


def source_state(ctx):
    """What the binaries were built from, as far as timestamps tell: the
    last commit to the sources before the build, later commits (not in
    it), uncommitted edits older (in it) and newer (not in it) than it."""
    def git(*a):
        return sh(["git", "-C", REPO, *a], capture=True, check=False
                  ).stdout.rstrip("\n")
    src = ["fs", "store", "tools", "meson.build"]
    built = os.path.getmtime(ctx.stratafs)
    log_ = [l.split(" ", 1) for l in
            git("log", "--format=%ct %h", "--", *src).splitlines()]
    before = next((h for t, h in log_ if int(t) <= built), "?")
    after = [h for t, h in log_ if int(t) > built]
    dirty = [l[3:] for l in git("status", "--porcelain", "--", *src
                                ).splitlines()]
    newer = [f for f in dirty if os.path.exists(REPO / f)
             and os.path.getmtime(REPO / f) > built]
    older = [f for f in dirty if f not in newer]
    sha = hashlib.sha256(Path(ctx.stratafs).read_bytes()).hexdigest()[:12]
    s = (f"HEAD {git('log', '-1', '--format=%h')}; stratafs built "
         f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(built))} from "
         f"{before}, sha256 {sha}")
    if after:
        s += (f"; later commits to the sources NOT included: "
              f"{', '.join(after)}")
    if older:
        s += f"; uncommitted source edits included: {', '.join(older)}"
    if newer:
        s += (f"; uncommitted edits made after the build, NOT included: "
              f"{', '.join(newer)}")
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, 3 runs (a smoke run)")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--runs", type=int, help="timed rounds (default 5, quick 3)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed warm-up round")
    ap.add_argument("--drop-caches", action="store_true",
                    help="drop the page cache before every run (default: warm)")
    ap.add_argument("--build", default=os.environ.get(
        "STRATA_BUILD", str(REPO / "build-bench")),
        help="meson build dir (default $STRATA_BUILD or build-bench)")
    ap.add_argument("--only", help="regex: run only matching workloads")
    ap.add_argument("--subjects", help="comma list: restrict to these "
                    f"subjects ({','.join(SUBJECTS)})")
    ap.add_argument("--rebuild", action="store_true",
                    help="rebuild the cached lowers and store")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("writable.py: run as root (mounts, syncfs, drop_caches)")
    args.runs = args.runs or size("runs", args.quick)

    ctx = bench.Ctx()
    ctx.command = " ".join(["/usr/bin/python3", "tests/bench/writable.py"]
                           + sys.argv[1:])
    ctx.quick = args.quick
    ctx.drop_caches = args.drop_caches
    ctx.build = Path(args.build).resolve()
    ctx.strata = ctx.build / "tools" / "strata"
    ctx.stratafs = ctx.build / "fs" / "stratafs"
    for b in (ctx.strata, ctx.stratafs):
        if not os.access(b, os.X_OK):
            sys.exit(f"writable.py: no {b}; build first: meson setup "
                     f"build-bench --buildtype=release && ninja -C build-bench")
    ctx.cache = bench.CACHE / f"writable-{'quick' if args.quick else 'full'}"
    ctx.source = source_state(ctx)
    if args.rebuild:
        rmtree(ctx.cache)
    fo = sh(["fuse-overlayfs", "--version"], capture=True).stdout
    ctx.fo_version = " ".join(re.findall(r"fuse-overlayfs: version (\S+)",
                                         fo)) or "?"

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    ctx.work = bench.CACHE / f"writable-run-{os.getpid()}"
    ctx.results, ctx.saw, ctx.daemons, ctx.failed = {}, {}, {}, {}
    ctx.ran = []
    set_up = []
    try:
        ctx.work.mkdir(parents=True)
        # run copies of the binaries: build-bench is shared, a rebuild in
        # the middle of the run must not change what is measured
        (ctx.work / "bin").mkdir()
        for attr in ("strata", "stratafs"):
            dst = ctx.work / "bin" / attr
            shutil.copy2(getattr(ctx, attr), dst)
            setattr(ctx, attr, dst)
        ctx.mount_opts = {}
        ctx.info = build_layers(ctx)
        ctx.layout, ctx.tag = ctx.cache / "layout", TAG
        nl = len(bench.image_layers(ctx.layout, TAG)[0])
        ctx.lowers = [ctx.cache / f"lower{i}" for i in range(nl)]
        ctx.big = ctx.lowers[0] / "big" / "file.bin"
        ctx.tree_entries = count_tree(ctx.cache / "merged-tree")
        tar = ctx.cache / "untar.tar"
        ctx.tar_bytes = tar.stat().st_size
        ctx.tar_entries = len(sh(["tar", "-tf", tar], capture=True
                                 ).stdout.splitlines())
        import_store(ctx)
        gib = size("scratch_gib", args.quick)
        bench.make_scratch(ctx, gib)
        # allocate the scratch image's blocks now, so the first runs do
        # not pay for allocation in the root fs that later ones reuse
        sh(["fallocate", "-l", f"{gib}G", ctx.work / "scratch.img"])

        wanted = args.subjects.split(",") if args.subjects else list(SUBJECTS)
        ctx.active = [s for s in SUBJECTS if s in wanted]
        for s in ctx.active:
            SUBJECTS[s].setup(ctx)
            set_up.append(SUBJECTS[s])
        for b in (ctx.big, ctx.cache / "untar.tar"):     # into the cache
            sh(["cat", b], capture=False)
        fmt = {"src": size("untar_src", ctx.quick),
               "big": fmt_bytes(ctx.big.stat().st_size).replace(".0 ", " "),
               "tree": ctx.tree_entries, "meta": size("meta", ctx.quick)[1]}
        for wl in WORKLOADS:
            wl.title = wl.name.format(**fmt)
        ctx.load = [os.getloadavg()[0]]
        for wl in WORKLOADS:
            if args.only and not re.search(args.only, wl.title):
                continue
            ctx.ran.append(wl)
            subs = [SUBJECTS[s] for s in ctx.active]
            log(f"{wl.title}: {'warm-up + ' if not args.no_warmup else ''}"
                f"{args.runs} rounds on {', '.join(s.name for s in subs)}")
            time_workload(ctx, wl, subs, args.runs, not args.no_warmup)
        ctx.load.append(os.getloadavg()[0])
        text = report(ctx, args)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
            log(f"report written to {args.out}")
    finally:
        for subj in reversed(set_up):
            try:
                subj.unmount(ctx)
            except Exception as e:
                log(f"unmount {subj.name}: {e}")
        bench.unmount_all()
        left = [m for m in bench.MOUNTS if bench.is_mounted(m)]
        if left:
            log(f"WARNING: still mounted: {left}")
        else:
            rmtree(ctx.work)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("writable.py: interrupted (all mounts unmounted)")
