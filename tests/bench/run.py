#!/usr/bin/python3
"""strata benchmarks: stratafs vs the kernel overlay, fuse-overlayfs, umoci.

Run as root, from anywhere:

    /usr/bin/python3 tests/bench/run.py [--quick] [--out FILE.md]

Not part of the test suite; no timing is ever asserted. Everything runs side
by side in one run on one locally built image (no network), and the report
is a markdown table of medians (with min/max) and ratios against a baseline
subject (the kernel overlay for reads, tar for import).

Structure (meant to be extended):

- SUBJECTS: what is measured. A Subject has a root directory and optional
  mount()/unmount() (every mount is tracked in MOUNTS and unmounted in a
  finally block, also on errors and Ctrl-C).
- GROUPS: a report section: its subjects, its baseline subject, its modes.
- SCENARIOS: registered with @scenario(group, name): body(ctx, subj) is the
  timed part; prepare(ctx, subj, mode) / cleanup(ctx, subj) are untimed and
  run around every timed run. The default prepare for "cold" remounts the
  subject and drops the page cache; for "warm" one untimed run precedes the
  timed ones.

A writable-mount group would add subjects (e.g. stratafs -o upper=, overlay
with upperdir) with their own mount(), a new GROUPS entry with the overlay
as baseline, and scenarios whose prepare() resets the upper directory.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/tmp/strata-bench")
IMAGE_SPEC_VERSION = 2          # bump when the image recipe changes
NEEDLE = "strata-bench-needle-7f3a"

# ---------------------------------------------------------------------------
# small helpers

def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, check=True, capture=False, env=None, cwd=None):
    """Run @cmd (list, or str for sh -c); raise with stderr on failure."""
    shell = isinstance(cmd, str)
    r = subprocess.run(cmd if shell else [str(c) for c in cmd], shell=shell,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd!r} exited {r.returncode}: {r.stderr.strip()}")
    return r


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def rmtree(p):
    p = Path(p)
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        # overlay lowers hold chattr-free files only; plain rmtree is enough
        shutil.rmtree(p)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path:
                return True
    return False


def wait_mounted(path, timeout=30.0):
    end = time.monotonic() + timeout
    while not is_mounted(path):
        if time.monotonic() > end:
            raise RuntimeError(f"{path} not mounted after {timeout}s")
        time.sleep(0.001)


MOUNTS = []     # every mountpoint we mounted, for the finally block


def unmount(path):
    """Unmount @path (FUSE or kernel), lazily if busy; never raise."""
    for i in range(100):
        if not is_mounted(path):
            break
        r = subprocess.run(["fusermount3", "-u", "-q", str(path)],
                           capture_output=True)
        if r.returncode != 0:
            r = subprocess.run(["umount", str(path)], capture_output=True)
        if r.returncode != 0 and i > 20:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        time.sleep(0.02)
    if str(path) in MOUNTS and not is_mounted(path):
        MOUNTS.remove(str(path))


def unmount_all():
    for m in reversed(list(MOUNTS)):
        unmount(m)


def daemon_pid(mountpoint, exe_suffix):
    """pid of the FUSE daemon serving @mountpoint: a process whose argv[0]
    ends with @exe_suffix and whose argv names the mountpoint."""
    mp = os.path.realpath(mountpoint)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in argv if a]
        if not argv or not argv[0].endswith(exe_suffix):
            continue
        if any(os.path.realpath(a) == mp for a in argv[1:] if a.startswith("/")):
            return serving_child(int(d))
    return None


def serving_child(pid):
    """stratafs supervising a read-only mount serves it from a child
    named stratafs-serve (fs/resume.c): that child, else @pid. Also when
    @pid is that child already (its argv is its parent's)."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() == "stratafs-serve":
            return pid
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pid
    for k in kids:
        try:
            if Path(f"/proc/{k}/comm").read_text().strip() == \
                    "stratafs-serve":
                return int(k)
        except OSError:
            pass
    return pid


def proc_status(pid, key):
    """VmHWM/VmRSS of @pid in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def rss_parts(pid):
    """KiB resident at the end: private anonymous memory, file-backed
    pages, and of those the strata layer indexes (clean page-cache pages
    of the mapped index files, which the kernel can reclaim)."""
    parts = {"anon": proc_status(pid, "RssAnon"),
             "file": proc_status(pid, "RssFile"), "index": 0}
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                name = head[5] if len(head) > 5 else ""
            elif head and head[0] == "Rss:" and name.endswith("/index"):
                parts["index"] += int(head[1])
    return parts


def fmt_s(x):
    if x is None:
        return "—"
    if x < 0.001:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.1f} ms" if x < 0.1 else f"{x * 1e3:.0f} ms"
    return f"{x:.2f} s"


def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024

# ---------------------------------------------------------------------------
# the benchmark image

# Each layer: (name, paths copied from the host, mutate function or None).
# Paths are relative to /, copied with tar, excluding EXCLUDES.
FULL_LAYERS = [
    ("share", ["usr/share"],
     ["usr/share/fpcsrc", "usr/share/package-lists", "usr/share/locale"]),
    ("lib", ["usr/lib/python3", "usr/lib/python3.11", "usr/lib/git-core",
             "usr/lib/postgresql", "usr/lib/x86_64-linux-gnu/perl"], []),
    # files over 100 MB, put under big/ (outside usr/, which the top
    # layer's mutations walk)
    ("big", ["usr/lib/jvm/java-17-openjdk-amd64",
             "usr/lib/x86_64-linux-gnu/libLLVM-14.so.1",
             "usr/lib/x86_64-linux-gnu/libLLVM-15.so.1"], [],
     "--transform=s,^usr/lib,big,"),
    ("include", ["usr/include"], []),
]
QUICK_LAYERS = [
    ("share", ["usr/share/perl", "usr/share/zoneinfo", "usr/share/i18n"], []),
    ("lib", ["usr/lib/git-core"], []),
    ("include", ["usr/include/linux"], []),
]


def mutate_top(rootfs):
    """Top-layer changes: delete whole directories (directory whiteouts),
    delete single files (file whiteouts), rewrite files (copy-up of
    modified content), replace a directory by one with other content, and
    plant NEEDLE for the grep scenario. Deterministic for a given host."""
    rootfs = Path(rootfs)
    dirs, files = [], []
    for dp, dns, fns in os.walk(rootfs / "usr"):
        dns.sort()
        rel = Path(dp).relative_to(rootfs)
        if rel.parts[:2] == ("usr", "include"):
            continue        # only lower layers are changed
        if len(rel.parts) == 3:
            dirs.append(Path(dp))
        for fn in sorted(fns):
            p = Path(dp) / fn
            if p.is_file() and not p.is_symlink():
                files.append(p)
    deleted = dirs[::10]
    for d in deleted:
        shutil.rmtree(d)
    gone = tuple(str(d) + "/" for d in deleted)
    files = [f for f in files if not str(f).startswith(gone)]
    n_del = n_mod = 0
    for i, f in enumerate(files):
        if i % 97 == 5:
            f.unlink()
            n_del += 1
        elif i % 53 == 7:
            with open(f, "ab") as fh:
                fh.write(f"\n{NEEDLE} {i}\n".encode())
            n_mod += 1
    # a directory replaced by a different one of the same name
    left = [d for d in dirs if d not in deleted and d.exists()]
    if left:
        victim = left[len(left) // 2]
        shutil.rmtree(victim)
        victim.mkdir()
        (victim / "replaced.txt").write_text(f"replaced {NEEDLE}\n")
    return {"deleted_dirs": len(deleted), "deleted_files": n_del,
            "modified_files": n_mod}


def build_image(quick):
    """Build (or reuse) the benchmark OCI layout; returns (layout, tag, info)."""
    name = "quick" if quick else "full"
    base = CACHE / f"image-{name}"
    layout, tag = base / "layout", "bench"
    stamp = base / "built.json"
    if stamp.exists():
        info = json.loads(stamp.read_text())
        if info.get("version") == IMAGE_SPEC_VERSION and layout.exists():
            log(f"reusing image {layout}:{tag}")
            return layout, tag, info
    log(f"building the {name} benchmark image in {base} (cached for reruns)")
    rmtree(base)
    base.mkdir(parents=True)
    bundle = base / "bundle"
    sh(["umoci", "init", "--layout", layout])
    sh(["umoci", "new", "--image", f"{layout}:{tag}"])
    sh(["umoci", "unpack", "--image", f"{layout}:{tag}", bundle])
    rootfs = bundle / "rootfs"
    info = {"version": IMAGE_SPEC_VERSION, "layers": []}
    layers = QUICK_LAYERS if quick else FULL_LAYERS
    for i, (lname, paths, excludes, *opts) in enumerate(layers):
        paths = [p for p in paths if Path("/", p).exists()]
        excl = [f"--exclude={e}" for e in excludes]
        sh(f"tar -C / -cf - {' '.join(excl)} {' '.join(opts)} "
           f"{' '.join(paths)} | tar -C {rootfs} -xpf -")
        if i == len(layers) - 1:
            info["top_changes"] = mutate_top(rootfs)
        sh(["umoci", "repack", "--refresh-bundle", "--no-history",
            "--image", f"{layout}:{tag}", bundle])
        info["layers"].append({"name": lname, "from": paths,
                               "excluding": excludes, "tar": opts})
        log(f"  layer {i + 1}/{len(layers)} ({lname}) packed")
    rmtree(bundle)
    stamp.write_text(json.dumps(info, indent=1))
    return layout, tag, info


def image_layers(layout, tag):
    """Layer blob paths (bottom first) and manifest digest of layout:tag."""
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            break
    else:
        raise RuntimeError(f"no tag {tag} in {layout}")
    dig = m["digest"]
    man = json.loads((layout / "blobs" / Path(*dig.split(":"))).read_text())
    blobs = [layout / "blobs" / Path(*l["digest"].split(":"))
             for l in man["layers"]]
    return blobs, dig


def convert_whiteouts(lower):
    """OCI whiteouts in an extracted layer -> kernel overlay format."""
    n = 0
    for dp, dns, fns in os.walk(lower):
        for fn in fns:
            if not fn.startswith(".wh."):
                continue
            p = os.path.join(dp, fn)
            os.unlink(p)
            if fn == ".wh..wh..opq":
                os.setxattr(dp, "trusted.overlay.opaque", b"y")
            else:
                target = os.path.join(dp, fn[4:])
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            n += 1
    return n


def extract_layer(blob, dest, pigz=False):
    dest.mkdir(parents=True)
    comp = ["-I", "pigz"] if pigz else ["-z"]
    sh(["tar", "-C", dest, *comp, "-xpf", blob, "--numeric-owner",
        "--xattrs", "--xattrs-include=*"])


def prepare_trees(ctx):
    """Per-layer overlay lowers and the umoci-unpacked rootfs, cached next
    to the image keyed by the manifest digest."""
    base = CACHE / f"trees-{'quick' if ctx.quick else 'full'}"
    stamp = base / "digest"
    lowers = [base / f"lower{i}" for i in range(len(ctx.blobs))]
    plain = base / "umoci" / "rootfs"
    if not (stamp.exists() and stamp.read_text() == ctx.manifest_digest):
        log(f"extracting overlay lowers and umoci rootfs into {base}")
        rmtree(base)
        base.mkdir(parents=True)
        for blob, lower in zip(ctx.blobs, lowers):
            extract_layer(blob, lower)
            convert_whiteouts(lower)
        sh(["umoci", "unpack", "--image", f"{ctx.layout}:{ctx.tag}",
            base / "umoci"])
        stamp.write_text(ctx.manifest_digest)
    ctx.lowers, ctx.plain = lowers, plain
    # the stat scenario's sample: the same random paths on every subject
    rels = []
    for dp, dns, fns in os.walk(plain):
        rel = os.path.relpath(dp, plain)
        for n in dns + fns:
            rels.append(n if rel == "." else os.path.join(rel, n))
    rels.sort()
    ctx.n_entries = len(rels) + 1
    rng = random.Random(42)
    ctx.stat_paths = rng.sample(rels, min(10000, len(rels)))

def make_scratch(ctx, size_gib):
    """A loop-mounted ext4 (no discard) for import destinations. The root
    filesystem here may be mounted with `discard`, which makes deleting a
    tree of 500 MB take minutes and every fsync/syncfs after it wait for
    the discards; the scratch filesystem keeps cleanup cheap and timings
    independent of the previous run's deletions. Created per run and
    removed at the end."""
    img = ctx.work / "scratch.img"
    mnt = ctx.work / "scratch"
    with open(img, "wb") as f:
        f.truncate(size_gib << 30)
    sh(["mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0",
        img])
    mnt.mkdir()
    MOUNTS.append(str(mnt))
    sh(["mount", "-o", "loop,nodiscard", img, mnt])
    loopdev = sh(["findmnt", "-n", "-o", "SOURCE", mnt], capture=True).stdout.strip()
    # direct I/O on the loop device: no second page cache for the image file
    subprocess.run(["losetup", "--direct-io=on", loopdev], capture_output=True)
    ctx.scratch = mnt


def read_store(ctx):
    """The store stratafs mounts from: the image imported once (untimed),
    cached beside the trees and keyed by the strata binary, since the
    cache format may change with the code."""
    h = hashlib.sha256()
    for b in (ctx.strata, ctx.stratafs):
        h.update(Path(b).read_bytes())
    key = ctx.manifest_digest + " " + h.hexdigest()
    base = CACHE / f"trees-{'quick' if ctx.quick else 'full'}"
    store, stamp = base / "store", base / "store.key"
    if not (stamp.exists() and stamp.read_text() == key and store.exists()):
        log("importing the image into the read store (untimed)")
        if store.exists():
            old = base / f"store.old-{os.getpid()}"
            store.rename(old)
            rmtree(old)
        import_strata(ctx, store)
        stamp.write_text(key)
    ctx.store = store

# ---------------------------------------------------------------------------
# subjects

class Subject:
    """Something measured. root is where read scenarios look."""
    mounted_fs = False
    daemon = None           # argv[0] suffix of a FUSE daemon, for memory

    def __init__(self, name, label=None):
        self.name = name
        self.label = label or name
        self.root = None

    def setup(self, ctx):
        pass

    def teardown(self, ctx):
        pass

    def remount(self, ctx):
        pass

    def pid(self):
        return None


class DirSubject(Subject):
    """A plain directory (the floor: no overlay, no FUSE)."""
    def __init__(self, name, label, attr):
        super().__init__(name, label)
        self.attr = attr

    def setup(self, ctx):
        self.root = getattr(ctx, self.attr)


class MountSubject(Subject):
    """A mount made by mount_cmd(ctx, mnt); unmounted in teardown."""
    mounted_fs = True

    def __init__(self, name, label, mount_cmd, daemon=None):
        super().__init__(name, label)
        self.mount_cmd = mount_cmd
        self.daemon = daemon

    def setup(self, ctx):
        self.root = ctx.work / f"mnt-{self.name}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.mount(ctx)

    def mount(self, ctx):
        if is_mounted(self.root):
            return
        MOUNTS.append(str(self.root))
        sh(self.mount_cmd(ctx, self.root))
        wait_mounted(self.root)

    def unmount(self, ctx=None):
        unmount(self.root)

    def remount(self, ctx):
        self.unmount(ctx)
        self.mount(ctx)

    def teardown(self, ctx):
        if self.root is not None:
            self.unmount(ctx)

    def pid(self):
        return daemon_pid(self.root, self.daemon) if self.daemon else None


def stratafs_cmd(ctx, mnt):
    return [ctx.stratafs, "-o", f"root={ctx.store}", ctx.image_ref, mnt]


def overlay_cmd(ctx, mnt):
    lowers = ":".join(str(l) for l in reversed(ctx.lowers))   # top first
    return ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowers}", mnt]


def fuse_overlayfs_cmd(ctx, mnt):
    lowers = ":".join(str(l) for l in reversed(ctx.lowers))
    return ["fuse-overlayfs", "-o", f"lowerdir={lowers}", mnt]


class ToolSubject(Subject):
    """An import tool: run(ctx, dest) does the whole job into @dest."""
    def __init__(self, name, label, run, needs=None):
        super().__init__(name, label)
        self.run = run
        self.needs = needs

    def available(self):
        return self.needs is None or shutil.which(self.needs) is not None


def import_strata(ctx, dest):
    sh([ctx.strata, "--quiet", "--root", dest, "import",
        f"oci:{ctx.layout}:{ctx.tag}", "bench:latest"])


def import_umoci(ctx, dest):
    sh(["umoci", "unpack", "--image", f"{ctx.layout}:{ctx.tag}", dest])


def import_tar(ctx, dest, pigz=False):
    for i, blob in enumerate(ctx.blobs):
        extract_layer(blob, dest / f"lower{i}", pigz=pigz)


SUBJECTS = {
    "stratafs": MountSubject("stratafs", "stratafs", stratafs_cmd,
                             daemon="stratafs"),
    "overlay": MountSubject("overlay", "kernel overlay", overlay_cmd),
    "fuse-overlayfs": MountSubject("fuse-overlayfs", "fuse-overlayfs",
                                   fuse_overlayfs_cmd,
                                   daemon="fuse-overlayfs"),
    "plain": DirSubject("plain", "plain dir (umoci unpack)", "plain"),
    "strata-import": ToolSubject("strata-import", "strata import",
                                 import_strata),
    "umoci-unpack": ToolSubject("umoci-unpack", "umoci unpack",
                                import_umoci),
    "tar": ToolSubject("tar", "tar -xzf per layer", import_tar),
    "tar-pigz": ToolSubject("tar-pigz", "tar -I pigz -xf per layer",
                            lambda c, d: import_tar(c, d, pigz=True),
                            needs="pigz"),
}

# A report section: which subjects, which is the baseline for ratios, modes.
GROUPS = {
    "import": {"title": "Import / unpack (whole image, fresh destination, "
                        "timed up to and including `sync`)",
               "subjects": ["strata-import", "umoci-unpack", "tar",
                            "tar-pigz"],
               "baseline": "tar", "modes": ["warm"], "runs": 3},
    "read": {"title": "Read paths on the mounted image",
             "subjects": ["stratafs", "overlay", "fuse-overlayfs", "plain"],
             "baseline": "overlay", "modes": ["warm", "cold"]},
}

# ---------------------------------------------------------------------------
# scenarios

SCENARIOS = []


class Scenario:
    def __init__(self, group, name, body, prepare=None, cleanup=None,
                 subjects=None, modes=None, warmup=True):
        self.group, self.name, self.body = group, name, body
        self.prepare, self.cleanup = prepare, cleanup
        self.subjects = subjects      # None: the group's subjects
        self.modes = modes            # None: the group's modes
        self.warmup = warmup          # untimed run before warm timings


def scenario(group, name, **kw):
    """Decorator: register body(ctx, subj) as a timed scenario."""
    def reg(fn):
        SCENARIOS.append(Scenario(group, name, fn, **kw))
        return fn
    return reg


def default_prepare(ctx, subj, mode):
    if mode == "cold":
        subj.remount(ctx)       # fresh daemon / fresh overlay dentries
        drop_caches()


def run_shell(cmd, capture=False):
    r = subprocess.run(cmd, shell=True, env=ctx_env(),
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    return r


def ctx_env():
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    return env


def q(p):
    return "'" + str(p).replace("'", "'\\''") + "'"


# --- import

def import_prepare(ctx, subj, mode):
    rmtree(ctx.scratch / f"import-{subj.name}")
    os.sync()


def import_cleanup(ctx, subj):
    rmtree(ctx.scratch / f"import-{subj.name}")


@scenario("import", "import image", prepare=import_prepare,
          cleanup=import_cleanup, warmup=False)
def s_import(ctx, subj):
    subj.run(ctx, ctx.scratch / f"import-{subj.name}")
    os.sync()

# --- read paths


@scenario("read", "find MNT | wc -l")
def s_find(ctx, subj):
    r = run_shell(f"find {q(subj.root)} | wc -l", capture=True)
    return int(r.stdout.strip())


@scenario("read", "ls -lR MNT")
def s_ls(ctx, subj):
    run_shell(f"ls -lR {q(subj.root)} >/dev/null")


@scenario("read", "du -s MNT")
def s_du(ctx, subj):
    r = run_shell(f"du -s {q(subj.root)}", capture=True)
    return int(r.stdout.split()[0])


@scenario("read", "tar -cf - MNT | cat >/dev/null")
def s_tar(ctx, subj):
    # piped through cat: GNU tar skips reading file data when its archive
    # is /dev/null, which would measure nothing
    run_shell(f"tar -C {q(subj.root)} -cf - . 2>/dev/null | cat >/dev/null")


@scenario("read", f"grep -r NEEDLE MNT")
def s_grep(ctx, subj):
    r = run_shell(f"grep -r {NEEDLE} {q(subj.root)} | wc -l", capture=True)
    return int(r.stdout.strip())


@scenario("read", "lstat 10k random paths (python)")
def s_stat(ctx, subj):
    root = str(subj.root)
    missing = 0
    for rel in ctx.stat_paths:
        try:
            os.lstat(os.path.join(root, rel))
        except FileNotFoundError:
            missing += 1
    return missing


def mount_prepare(ctx, subj, mode):
    subj.unmount(ctx)
    if mode == "cold":
        drop_caches()


@scenario("read", "mount until live", prepare=mount_prepare,
          subjects=["stratafs", "overlay", "fuse-overlayfs"], warmup=True)
def s_mount(ctx, subj):
    subj.mount(ctx)

# ---------------------------------------------------------------------------
# runner


class Ctx:
    pass


def time_scenario(ctx, scn, subjects, mode, runs, results, notes):
    """Time @scn on every subject, interleaved run by run, so drift hits
    all subjects alike."""
    prepare = scn.prepare or default_prepare
    if mode == "warm" and scn.warmup:
        for subj in subjects:
            prepare(ctx, subj, mode)
            scn.body(ctx, subj)
            if scn.cleanup:
                scn.cleanup(ctx, subj)
    for _ in range(runs):
        for subj in subjects:
            prepare(ctx, subj, mode)
            t0 = time.perf_counter()
            out = scn.body(ctx, subj)
            dt = time.perf_counter() - t0
            if scn.cleanup:
                scn.cleanup(ctx, subj)
            results.setdefault((scn.group, scn.name, mode, subj.name),
                               []).append(dt)
            if out is not None:
                notes.setdefault((scn.group, scn.name, subj.name), set()).add(out)


def measure_memory(ctx, subjects):
    """VmHWM of each FUSE daemon on a fresh mount after ls -lR, then after
    also reading every byte (tar)."""
    rows = []
    for subj in subjects:
        if not subj.daemon:
            continue
        subj.remount(ctx)
        pid = subj.pid()
        if pid is None:
            rows.append((subj.label, None, None, None, None))
            continue
        start = proc_status(pid, "VmHWM")
        s_ls(ctx, subj)
        after_ls = proc_status(pid, "VmHWM")
        s_tar(ctx, subj)
        after_tar = proc_status(pid, "VmHWM")
        rows.append((subj.label, start, after_ls, after_tar, rss_parts(pid)))
    return rows


def report(ctx, results, notes, memory, args):
    out = []
    un = os.uname()
    out.append(f"## Results {datetime.date.today().isoformat()}")
    out.append("")
    out.append(f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
               f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB RAM, "
               f"kernel {un.release} {un.machine}")
    out.append(f"- load average (1 min) at start/end of the timed part: "
               + " / ".join(f"{x:.1f}" for x in ctx.load)
               + " (other work on the machine shows here)")
    out.append(f"- command: `{' '.join(['/usr/bin/python3', 'tests/bench/run.py'] + sys.argv[1:])}`")
    out.append(f"- strata build: `{ctx.build}` (release)")
    blobsz = sum(b.stat().st_size for b in ctx.blobs)
    out.append(f"- image: {len(ctx.blobs)} layers made with umoci, "
               f"{fmt_bytes(blobsz)} compressed, {fmt_bytes(ctx.unpacked_bytes)} unpacked, "
               f"{ctx.n_entries} entries in the merged tree; top layer: "
               + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in
                           ctx.image_info.get("top_changes", {}).items())
               + ", one directory replaced")
    for i, l in enumerate(ctx.image_info["layers"]):
        ex = f" minus {', '.join(l['excluding'])}" if l["excluding"] else ""
        ex += f" (tar {' '.join(l['tar'])})" if l.get("tar") else ""
        out.append(f"  - layer {i + 1} ({l['name']}): {', '.join(l['from'])}{ex}")
    out.append(f"- runs: median of {args.runs} warm runs (import: "
               f"{min(args.runs, GROUPS['import'].get('runs', args.runs))}) (after one untimed "
               f"warm-up) and {args.cold_runs} cold runs (remount, then "
               f"`sync; echo 3 > /proc/sys/vm/drop_caches`), min–max in "
               f"brackets; ratio = median / baseline median")
    out.append("")
    for gname, g in GROUPS.items():
        subs = [s for s in g["subjects"] if s in ctx.active]
        if not subs:
            continue
        base = g["baseline"]
        others = [s for s in subs if s != base]
        out.append(f"### {g['title']}")
        out.append("")
        hdr = ["scenario", "cache"] + [SUBJECTS[s].label for s in subs] + \
              [f"{SUBJECTS[s].label} / {SUBJECTS[base].label}" for s in others
               if base in subs]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        for scn in SCENARIOS:
            if scn.group != gname:
                continue
            for mode in (scn.modes or g["modes"]):
                cells, med = [], {}
                for s in subs:
                    v = results.get((gname, scn.name, mode, s))
                    if not v:
                        cells.append("—")
                        continue
                    med[s] = statistics.median(v)
                    cells.append(f"{fmt_s(med[s])} ({fmt_s(min(v))}–{fmt_s(max(v))})")
                if not med:
                    continue
                ratios = []
                if base in subs:
                    for s in others:
                        if s in med and med.get(base):
                            r = med[s] / med[base]
                            ratios.append(f"**{r:.2f}**" if s == "stratafs"
                                          and r > 1.3 else f"{r:.2f}")
                        else:
                            ratios.append("—")
                name = scn.name.replace("|", "\\|")
                out.append(f"| {name} | {mode} | " + " | ".join(cells + ratios) + " |")
        out.append("")
    # the answers each subject gave: all mounts must agree
    out.append("### What each subject saw (must agree)")
    out.append("")
    out.append("| scenario | " + " | ".join(SUBJECTS[s].label for s in GROUPS["read"]["subjects"] if s in ctx.active) + " |")
    out.append("|---|" + "---|" * len([s for s in GROUPS["read"]["subjects"] if s in ctx.active]))
    for scn, what in (("find MNT | wc -l", "entries"),
                      ("grep -r NEEDLE MNT", "matching lines"),
                      ("lstat 10k random paths (python)", "paths missing"),
                      ("du -s MNT", "du KiB")):
        row = []
        for s in GROUPS["read"]["subjects"]:
            if s not in ctx.active:
                continue
            v = notes.get(("read", scn, s))
            row.append(", ".join(str(x) for x in sorted(v)) if v else "—")
        out.append(f"| {what} | " + " | ".join(row) + " |")
    out.append("")
    if memory:
        out.append("### FUSE daemon memory (VmHWM, fresh mount)")
        out.append("")
        out.append("| daemon | after mount | after `ls -lR` | after `ls -lR` + `tar` of every byte | per entry | resident at the end: anonymous / file-backed (of which layer indexes) |")
        out.append("|---|---|---|---|---|---|")
        for label, a, b, c, parts in memory:
            f = lambda k: "—" if k is None else fmt_bytes(k * 1024)
            per = "—" if c is None else f"{c * 1024 / ctx.n_entries:.0f} B"
            res = "—" if not parts else (
                f"{f(parts['anon'])} / {f(parts['file'])}"
                + (f" ({f(parts['index'])})" if parts["index"] else ""))
            out.append(f"| {label} | {f(a)} | {f(b)} | {f(c)} | {per} | {res} |")
        out.append("")
        out.append("Per entry: peak (VmHWM) over the entries of the merged "
                   "tree. File-backed pages are shared, clean and "
                   "reclaimable: libraries and, for stratafs, the mapped "
                   "layer indexes.")
        out.append("")
    return "\n".join(out)


def tree_bytes(root):
    n = 0
    for dp, dns, fns in os.walk(root):
        for fn in fns:
            try:
                st = os.lstat(os.path.join(dp, fn))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                n += st.st_size
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small image, fewer runs (a smoke run)")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--runs", type=int, help="warm runs (default 5, quick 3)")
    ap.add_argument("--cold-runs", type=int,
                    help="cold runs (default 3, quick 2)")
    ap.add_argument("--build", default=os.environ.get(
        "STRATA_BUILD", str(REPO / "build-bench")),
        help="meson build dir with tools/strata and fs/stratafs "
             "(default $STRATA_BUILD or build-bench)")
    ap.add_argument("--only", help="regex: run only matching scenarios")
    ap.add_argument("--subjects", help="comma list: restrict to these subjects")
    ap.add_argument("--rebuild-image", action="store_true",
                    help="rebuild the cached image and trees")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run.py: run as root (mounts, drop_caches)")
    args.runs = args.runs or (3 if args.quick else 5)
    args.cold_runs = args.cold_runs or (2 if args.quick else 3)

    ctx = Ctx()
    ctx.quick = args.quick
    ctx.build = Path(args.build).resolve()
    ctx.strata = ctx.build / "tools" / "strata"
    ctx.stratafs = ctx.build / "fs" / "stratafs"
    for b in (ctx.strata, ctx.stratafs):
        if not os.access(b, os.X_OK):
            sys.exit(f"run.py: no {b}; build first: meson setup build-bench "
                     f"--buildtype=release && ninja -C build-bench")
    if args.rebuild_image:
        for n in ("image", "trees"):
            rmtree(CACHE / f"{n}-{'quick' if args.quick else 'full'}")

    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally block unmounts
    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    ctx.work = CACHE / f"run-{os.getpid()}"
    ctx.active = []
    set_up = []
    try:
        ctx.work.mkdir(parents=True)
        ctx.layout, ctx.tag, ctx.image_info = build_image(args.quick)
        ctx.blobs, ctx.manifest_digest = image_layers(ctx.layout, ctx.tag)
        prepare_trees(ctx)
        ctx.unpacked_bytes = tree_bytes(ctx.plain)
        log(f"image: {len(ctx.blobs)} layers, {ctx.n_entries} entries, "
            f"{fmt_bytes(ctx.unpacked_bytes)}")
        ctx.image_ref = "bench:latest"
        read_store(ctx)
        ctx.load = [os.getloadavg()[0]]
        if not args.only or re.search(args.only, "import image"):
            make_scratch(ctx, 4)

        wanted = set(args.subjects.split(",")) if args.subjects else None
        for g in GROUPS.values():
            for s in g["subjects"]:
                subj = SUBJECTS[s]
                if wanted and s not in wanted:
                    continue
                if isinstance(subj, ToolSubject) and not subj.available():
                    log(f"skipping {s}: {subj.needs} not installed")
                    continue
                if s not in ctx.active:
                    ctx.active.append(s)
        for s in ctx.active:
            SUBJECTS[s].setup(ctx)
            set_up.append(SUBJECTS[s])

        results, notes = {}, {}
        for scn in SCENARIOS:
            if args.only and not re.search(args.only, scn.name):
                continue
            g = GROUPS[scn.group]
            subs = [SUBJECTS[s] for s in (scn.subjects or g["subjects"])
                    if s in ctx.active]
            for mode in (scn.modes or g["modes"]):
                runs = args.cold_runs if mode == "cold" else \
                    min(args.runs, g.get("runs", args.runs))
                log(f"{scn.group}: {scn.name} [{mode}] x{runs} on "
                    f"{', '.join(s.name for s in subs)}")
                time_scenario(ctx, scn, subs, mode, runs, results, notes)
                for s in subs:     # leave every mount up for the next one
                    if isinstance(s, MountSubject):
                        s.mount(ctx)
        ctx.load.append(os.getloadavg()[0])
        memory = []
        if not args.only or re.search(args.only, "memory"):
            log("memory: fresh mount, ls -lR, tar")
            memory = measure_memory(ctx, [SUBJECTS[s] for s in ctx.active])
        text = report(ctx, results, notes, memory, args)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
            log(f"report written to {args.out}")
    finally:
        for subj in reversed(set_up):
            try:
                subj.teardown(ctx)
            except Exception as e:     # keep unmounting the rest
                log(f"teardown {subj.name}: {e}")
        unmount_all()
        left = [m for m in MOUNTS if is_mounted(m)]
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
        sys.exit("run.py: interrupted (all mounts unmounted)")
