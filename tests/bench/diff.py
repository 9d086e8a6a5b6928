#!/usr/bin/python3
"""strata diff benchmark: `strata diff` of two tags of the bench image that
differ in their top layer, against `diff -r` of the two `umoci unpack`
trees and `podman image diff`.

Run as root, from the repository (release build in build-bench):

    meson setup build-bench --buildtype=release && ninja -C build-bench
    /usr/bin/python3 tests/bench/diff.py --quick              # smoke run
    flock /tmp/bench.lock /usr/bin/python3 tests/bench/diff.py \\
        --out /tmp/bench-diff.md                              # full run

Not part of the test suite; no timing is ever asserted. The image is
run.py's (built and cached by it in /var/tmp/strata-bench/image-*, about
1 GB and 4 layers in full, the top one deleting, rewriting and replacing
files and directories). Two tags are made of it, untimed, in a layout of
their own (/var/tmp/strata-bench/diff-*, blobs hardlinked): `top`, the
image itself, and `base`, the same without its top layer. Untimed too:
both imported into one strata store (they share three layers, unpacked
once), both unpacked by umoci, both pulled into a podman store (overlay
driver, the kernel overlay; graphroot beside the layout, runroot in /tmp).

Timed, warm (one untimed run, then --runs runs, subjects interleaved),
and once cold (caches dropped before the run):

- strata:  `strata --root STORE diff bench:base bench:top > /dev/null`
- diff -r: `diff -r --no-dereference BASE/rootfs TOP/rootfs > /dev/null`
- podman:  `podman image diff bench:top bench:base > /dev/null` (podman
  names the newer image first)
- the floor: `strata --version` (process start, dynamic linking)

The report gives the medians (min-max), the ratio to strata, and how many
lines each printed (strata and podman both list, as changed, every
directory that holds a change; strata also compares bytes, xattrs and
link targets that podman's walk skips; diff -r lists the first level of
a deleted or added directory and compares the content of every file).
"""
import argparse
import datetime
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench                                     # noqa: E402
import podman as pbench                                 # noqa: E402
from run import sh, log, rmtree, fmt_s                  # noqa: E402

VERSION = 1             # bump when the two tags' recipe changes


def blob_path(layout, digest):
    return Path(layout) / "blobs" / Path(*digest.split(":"))


def put_blob(layout, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    p = blob_path(layout, d)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return d, len(data)


def make_tags(ctx):
    """A layout with tags top (the bench image) and base (without its top
    layer), blobs hardlinked from run.py's layout. Cached by digest."""
    base = bench.CACHE / f"diff-{'quick' if ctx.quick else 'full'}"
    layout = base / "layout"
    key = f"{VERSION} {ctx.manifest_digest}"
    stamp = base / "tags.key"
    ctx.dir, ctx.mylayout = base, layout
    if stamp.exists() and stamp.read_text() == key:
        return
    log(f"making tags base and top in {layout}")
    rmtree(base)
    (layout / "blobs" / "sha256").mkdir(parents=True)
    for p in (ctx.layout / "blobs" / "sha256").iterdir():
        os.link(p, layout / "blobs" / "sha256" / p.name)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    idx = json.loads((ctx.layout / "index.json").read_text())
    top = next(m for m in idx["manifests"] if m.get("annotations", {}).get(
        "org.opencontainers.image.ref.name") == ctx.tag)
    man = json.loads(blob_path(layout, top["digest"]).read_text())
    cfg = json.loads(blob_path(layout, man["config"]["digest"]).read_text())
    cfg["rootfs"]["diff_ids"] = cfg["rootfs"]["diff_ids"][:-1]
    cfg.pop("history", None)
    cd, cs = put_blob(layout, json.dumps(cfg).encode())
    man["config"] = dict(man["config"], digest=cd, size=cs)
    man["layers"] = man["layers"][:-1]
    md, ms = put_blob(layout, json.dumps(man).encode())
    name = "org.opencontainers.image.ref.name"
    index = {"schemaVersion": 2, "manifests": [
        dict(top, annotations={name: "top"}),
        dict(top, digest=md, size=ms, annotations={name: "base"})]}
    (layout / "index.json").write_text(json.dumps(index))
    stamp.write_text(key)


def prepare(ctx):
    """strata store, umoci trees (cached by digest and binary), podman."""
    h = hashlib.sha256(Path(ctx.strata).read_bytes()).hexdigest()
    skey = f"{VERSION} {ctx.manifest_digest} {h}"
    ctx.store = ctx.dir / "store"
    if not ((ctx.dir / "store.key").exists() and
            (ctx.dir / "store.key").read_text() == skey):
        log("importing base and top into a strata store (untimed)")
        rmtree(ctx.store)
        for t in ("base", "top"):
            sh([ctx.strata, "--root", ctx.store, "--quiet", "import",
                f"oci:{ctx.mylayout}:{t}", f"bench:{t}"])
        (ctx.dir / "store.key").write_text(skey)
    ctx.trees = {t: ctx.dir / f"umoci-{t}" for t in ("base", "top")}
    if not (ctx.dir / "umoci.key").exists():
        log("umoci unpack of base and top (untimed)")
        for t, d in ctx.trees.items():
            rmtree(d)
            sh(["umoci", "unpack", "--image", f"{ctx.mylayout}:{t}", d])
        (ctx.dir / "umoci.key").write_text("done")
    if ctx.no_podman:
        return
    log("pulling base and top into a podman store (untimed)")
    ctx.layout, ctx.scratch = ctx.mylayout, ctx.dir   # graph kept
    pbench.TAG = "top"
    ctx.pod = pbench.Podman("kernel", "podman")
    ctx.pod.setup(ctx)
    iid = ctx.pod.pm("pull", "-q", "--signature-policy", ctx.pod.policy,
                     f"oci:{ctx.mylayout}:base").stdout.split()[-1]
    ctx.pod.pm("tag", iid, "localhost/bench:base")


def commands(ctx):
    cmds = {
        "strata diff": [ctx.strata, "--root", ctx.store, "diff",
                        "bench:base", "bench:top"],
        "diff -r": ["diff", "-r", "--no-dereference",
                    ctx.trees["base"] / "rootfs", ctx.trees["top"] / "rootfs"],
    }
    # the floor: starting the strata process (dynamic linking) alone
    cmds["strata --version"] = [ctx.strata, "--version"]
    if not ctx.no_podman:
        cmds["podman image diff"] = ctx.pod.base + [
            "image", "diff", "localhost/bench:latest", "localhost/bench:base"]
    return cmds


def timed(cmd, env=None):
    t = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise RuntimeError(f"{cmd} exited {r.returncode}: "
                           f"{r.stderr.decode()[-2000:]}")
    return dt, r.stdout.count(b"\n")


def measure(ctx, runs):
    cmds = commands(ctx)
    pod_env = getattr(getattr(ctx, "pod", None), "env", None)
    env = {k: pod_env if k.startswith("podman") else None for k in cmds}
    res = {k: [] for k in cmds}
    lines = {}
    for k, c in cmds.items():
        lines[k] = timed(c, env[k])[1]          # warm-up, untimed
    for i in range(runs):
        order = list(cmds)[i % len(cmds):] + list(cmds)[:i % len(cmds)]
        for k in order:
            res[k].append(timed(cmds[k], env[k])[0])
    cold = {}
    for k, c in cmds.items():
        bench.drop_caches()
        cold[k] = timed(c, env[k])[0]
    return res, cold, lines


def report(ctx, res, cold, lines):
    ref = statistics.median(res["strata diff"])
    out = [f"## strata diff, {ctx.name} bench image: base ({ctx.n_layers - 1}"
           f" layers) vs top ({ctx.n_layers} layers)", "",
           f"{datetime.date.today()}, {os.uname().nodename}, "
           f"{os.cpu_count()} CPUs, {ctx.runs} warm runs", "",
           "| subject | warm median (min-max) | ratio | cold | lines |",
           "|---|---|---|---|---|"]
    for k, v in res.items():
        m = statistics.median(v)
        out.append(f"| {k} | {fmt_s(m)} ({fmt_s(min(v))}-{fmt_s(max(v))}) "
                   f"| {m / ref:.1f}x | {fmt_s(cold[k])} | {lines[k]} |")
    out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default=os.environ.get(
        "STRATA_BUILD", str(bench.REPO / "build-bench")))
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("diff.py: run as root")
    ctx = argparse.Namespace(quick=args.quick, runs=args.runs,
                             no_podman=args.no_podman, runroots=[],
                             name="quick" if args.quick else "full")
    ctx.strata = Path(args.build).resolve() / "tools" / "strata"
    if not os.access(ctx.strata, os.X_OK):
        sys.exit(f"diff.py: no {ctx.strata}; build first")
    ctx.work = bench.CACHE / f"diff-run-{os.getpid()}"
    ctx.work.mkdir(parents=True)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        ctx.layout, ctx.tag, _ = bench.build_image(args.quick)
        blobs, ctx.manifest_digest = bench.image_layers(ctx.layout, ctx.tag)
        ctx.n_layers = len(blobs)
        make_tags(ctx)
        prepare(ctx)
        text = report(ctx, *measure(ctx, args.runs))
        print(text)
        if args.out:
            Path(args.out).write_text(text)
    finally:
        if getattr(ctx, "pod", None):
            ctx.pod.teardown(ctx)
        for rr in ctx.runroots:
            rmtree(rr)
        bench.unmount_all()
        rmtree(ctx.work)


if __name__ == "__main__":
    main()
