#!/usr/bin/python3
"""Access points into gzip/zstd layers (store/layer/zran.c): what each spacing costs.

    /usr/bin/python3 tests/bench/zran.py [--quick] [--out FILE.md]

Not part of the test suite; asserts nothing about time. On the gzip layers
of the bench image (run.py builds and caches it), for each spacing (SPAN,
in MiB of uncompressed output) it measures:

- index size per GiB of uncompressed layer, windows deflated and raw;
- the metadata pass: one decompressing pass over each layer with points
  recorded (strata_zran_build) against the same pass with plain inflate(),
  as extra seconds and per cent; and at the default span, the whole
  strata_unpack_layer() with and without the builder;
- the latency of a random 4 KiB read and of a whole small file (a regular
  file of at most 64 KiB, its offset in the tar found by Python's tarfile)
  through strata_zran_read(): median and p99. Every small file read is
  compared with Python's tarfile reading of it (sha256), so the numbers
  are those of correct reads.

Then one layer recompressed with `zstd -3` (one frame, as zstd and skopeo
write it) and cut into independent frames of 4 MiB (`split` + `zstd` +
`cat`): what one point, or one per frame, means for a read.

The timed parts run in tests/tools/zrantool.c (release build).
"""
import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import CACHE, REPO, build_image, fmt_bytes, image_layers, log, sh  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
SMALL_MAX = 64 << 10


def tool(ctx, *args, stdin=None):
    r = subprocess.run([str(ctx.zb), *map(str, args)], input=stdin,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"zrantool {args[0]}: {r.stderr.strip()}")
    return r.stdout


def tool_json(ctx, *args):
    return json.loads(tool(ctx, *args))


def median_of(ctx, runs, *args):
    """Median CPU seconds of @runs runs, and the first run's result."""
    res = [tool_json(ctx, *args) for _ in range(runs)]
    return statistics.median(r["cpu"] for r in res), res[0]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def ms(x):
    return f"{x * 1000:.1f} ms" if x >= 0.01 else f"{x * 1000:.2f} ms"


def tar_files(blob, mode):
    """(offset, size, sha256) of every regular file of at most SMALL_MAX
    bytes, and the uncompressed size, read with Python's tarfile."""
    files = []
    with tarfile.open(blob, mode) as tf:
        for m in tf:
            if m.isreg() and 0 < m.size <= SMALL_MAX:
                data = tf.extractfile(m).read()
                files.append((m.offset_data, m.size,
                              hashlib.sha256(data).hexdigest()))
    return files


def read_latencies(ctx, blob, index, ranges):
    out = tool(ctx, "read", blob, index,
               stdin="".join(f"{o} {n}\n" for o, n in ranges))
    lines = [l.split() for l in out.splitlines()]
    return [float(c) for _, c, _ in lines], [h for _, _, h in lines], \
        [float(t) for t, _, _ in lines]


def measure_gzip(ctx, args, blobs):
    rows = {s: {"idx": 0, "raw": 0, "pts": 0, "extra": 0.0, "r4k": [],
                "w4k": [],
                "rfile": [], "bad": 0} for s in args.spans}
    plain_total = 0.0
    usize_total = 0
    rnd = random.Random(1)
    for li, blob in enumerate(blobs):
        t_plain, p = median_of(ctx, args.runs, "plain", blob)
        usize = p["usize"]
        plain_total += t_plain
        usize_total += usize
        files = tar_files(blob, "r:gz")
        picks = rnd.sample(files, min(args.reads, len(files)))
        r4k = [(rnd.randrange(0, max(1, usize - 4096)), 4096)
               for _ in range(args.reads)]
        log(f"layer {li + 1}: {fmt_bytes(os.path.getsize(blob))} gzip, "
            f"{fmt_bytes(usize)} tar, {len(files)} small files; plain "
            f"pass {t_plain:.2f} s")
        for span in args.spans:
            idx = ctx.work / f"l{li}-{span}.zran"
            raw = ctx.work / f"l{li}-{span}-raw.zran"
            t_pts, res = median_of(ctx, args.runs, "index", blob, span * MiB,
                                   "deflated", idx)
            rraw = tool_json(ctx, "index", blob, span * MiB, "raw", raw)
            row = rows[span]
            row["idx"] += res["file_bytes"]
            row["raw"] += rraw["file_bytes"]
            row["pts"] += res["points"]
            row["extra"] += t_pts - t_plain
            lat, _, wall = read_latencies(ctx, blob, idx, r4k)
            row["r4k"] += lat
            row["w4k"] += wall
            lat, sums, _ = read_latencies(ctx, blob, idx,
                                       [(o, n) for o, n, _ in picks])
            row["rfile"] += lat
            row["bad"] += sum(1 for (_, _, h), g in zip(picks, sums) if h != g)
            log(f"  span {span} MiB: {res['points']} points, index "
                f"{fmt_bytes(res['file_bytes'])} (raw "
                f"{fmt_bytes(rraw['file_bytes'])}), pass {t_pts:.2f} s, "
                f"4 KiB read median {ms(statistics.median(row['r4k']))}")
    return rows, plain_total, usize_total


def measure_unpack(ctx, args, blobs, manifest):
    """strata_unpack_layer() of every layer without and with points."""
    layers = manifest["layers"]
    cfg = json.loads((ctx.layout / "blobs" / Path(*manifest["config"]["digest"]
                      .split(":"))).read_text())
    diff_ids = cfg["rootfs"]["diff_ids"]
    dest = Path("/dev/shm" if Path("/dev/shm").is_dir() else ctx.work) / \
        f"zran-unpack-{os.getpid()}"
    tot = {0: 0.0, args.default: 0.0}
    for blob, l, d in zip(blobs, layers, diff_ids):
        for span in tot:
            t, _ = median_of(ctx, args.runs, "unpack", blob, l["digest"], d,
                             "gzip", span * MiB, dest)
            tot[span] += t
    return tot


def measure_zstd(ctx, args, blob):
    """The largest layer as one zstd frame, and as frames of 4 MiB."""
    one = ctx.work / "one.zst"
    many = ctx.work / "frames.zst"
    sh(f"gzip -dc {blob} | zstd -q -3 -T1 -c > {one}")
    parts = ctx.work / "parts"
    parts.mkdir()
    sh(f"gzip -dc {blob} | split -b {4 * MiB} - {parts}/p.")
    sh(f"for f in {parts}/p.*; do zstd -q -3 -T1 -c $f; done > {many}")
    usize = tool_json(ctx, "plain", one)["usize"]
    rnd = random.Random(2)
    r4k = [(rnd.randrange(0, usize - 4096), 4096)
           for _ in range(max(20, args.reads // 5))]
    out = []
    for name, b in (("one frame (zstd -3)", one),
                    ("frames of 4 MiB", many)):
        idx = ctx.work / (b.name + ".zran")
        t_plain, _ = median_of(ctx, args.runs, "plain", b)
        t_pts, res = median_of(ctx, args.runs, "index", b, args.default * MiB,
                               "deflated", idx)
        lat, _, _ = read_latencies(ctx, b, idx, r4k)
        out.append((name, os.path.getsize(b), usize, res["points"],
                    res["file_bytes"], t_plain, t_pts, lat))
    return out


def report(ctx, args, rows, plain_total, usize_total, unpack, zstd):
    L = []
    L.append(f"- command: `/usr/bin/python3 tests/bench/zran.py "
             f"{' '.join(sys.argv[1:])}`")
    L.append(f"- machine: nproc {os.cpu_count()}, load average at start/end "
             f"{ctx.load[0]:.1f} / {os.getloadavg()[0]:.1f}")
    L.append(f"- image: {ctx.layout} ({len(ctx.blobs)} gzip layers, "
             f"{fmt_bytes(ctx.csize)} compressed, {fmt_bytes(usize_total)} "
             f"of tar); reads: {args.reads} random 4 KiB and {args.reads} "
             f"small files (<= 64 KiB) per layer; medians of {args.runs} "
             f"runs for passes")
    L.append("- times are CPU time of the process doing the work (the "
             "machine is shared: wall-clock swings with the load), except "
             "the column marked wall")
    L.append(f"- plain decompressing pass (no points), all layers: "
             f"{plain_total:.2f} s")
    L.append("")
    L.append("| span | points | index / GiB (deflated windows) | "
             "index / GiB (raw windows) | pass: extra time | 4 KiB read "
             "median | p99 | (wall median) | small file read median | p99 | "
             "wrong reads |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    g = usize_total / GiB
    for s in args.spans:
        r = rows[s]
        L.append(f"| {s} MiB | {r['pts']} | {fmt_bytes(r['idx'] / g)} | "
                 f"{fmt_bytes(r['raw'] / g)} | {r['extra']:+.2f} s "
                 f"({100 * r['extra'] / plain_total:+.0f}%) | "
                 f"{ms(statistics.median(r['r4k']))} | "
                 f"{ms(pct(r['r4k'], 99))} | "
                 f"{ms(statistics.median(r['w4k']))} | "
                 f"{ms(statistics.median(r['rfile']))} | "
                 f"{ms(pct(r['rfile'], 99))} | {r['bad']} |")
    if unpack:
        base = unpack[0]
        withp = unpack[args.default]
        L.append("")
        L.append(f"strata_unpack_layer() of all layers (content written to "
                 f"/dev/shm): {base:.2f} s without points, {withp:.2f} s "
                 f"with points every {args.default} MiB "
                 f"(ratio {withp / base:.3f})")
    if zstd:
        L.append("")
        L.append("| zstd layer | blob | points | index | plain pass | pass "
                 "with points | 4 KiB read median | p99 |")
        L.append("|---|---|---|---|---|---|---|---|")
        for name, cs, us, pts, ib, tp, tq, lat in zstd:
            L.append(f"| {name} | {fmt_bytes(cs)} | {pts} | {fmt_bytes(ib)} "
                     f"| {tp:.2f} s | {tq:.2f} s | "
                     f"{ms(statistics.median(lat))} | {ms(pct(lat, 99))} |")
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="the small bench image, fewer reads")
    ap.add_argument("--spans", default="1,2,4,8,16",
                    help="spacings in MiB (default 1,2,4,8,16)")
    ap.add_argument("--default", type=int, default=4,
                    help="the span for the unpack and zstd rows (MiB)")
    ap.add_argument("--reads", type=int, help="reads of each kind per layer "
                    "(default 200, quick 50)")
    ap.add_argument("--runs", type=int, help="runs of each pass (median; "
                    "default 3, quick 1)")
    ap.add_argument("--no-unpack", action="store_true",
                    help="skip the strata_unpack_layer() comparison")
    ap.add_argument("--build", default=os.environ.get(
        "STRATA_BUILD", str(REPO / "build-bench")))
    ap.add_argument("--out", help="also write the markdown report here")
    args = ap.parse_args()
    args.spans = [int(s) for s in args.spans.split(",")]
    args.reads = args.reads or (50 if args.quick else 200)
    args.runs = args.runs or (1 if args.quick else 3)

    class Ctx:
        pass
    ctx = Ctx()
    ctx.zb = Path(args.build).resolve() / "tests" / "zrantool"
    if not os.access(ctx.zb, os.X_OK):
        sys.exit(f"zran.py: no {ctx.zb}; build first: meson setup "
                 f"build-bench --buildtype=release && ninja -C build-bench")
    ctx.work = CACHE / f"zran-{os.getpid()}"
    ctx.work.mkdir(parents=True)
    try:
        ctx.layout, ctx.tag, _ = build_image(args.quick)
        ctx.blobs, mdig = image_layers(ctx.layout, ctx.tag)
        manifest = json.loads((ctx.layout / "blobs" /
                               Path(*mdig.split(":"))).read_text())
        ctx.csize = sum(os.path.getsize(b) for b in ctx.blobs)
        ctx.load = [os.getloadavg()[0]]
        t0 = time.monotonic()
        rows, plain_total, usize_total = measure_gzip(ctx, args, ctx.blobs)
        unpack = None if args.no_unpack else \
            measure_unpack(ctx, args, ctx.blobs, manifest)
        biggest = max(ctx.blobs, key=os.path.getsize)
        zstd = measure_zstd(ctx, args, biggest)
        text = report(ctx, args, rows, plain_total, usize_total, unpack, zstd)
        log(f"done in {time.monotonic() - t0:.0f} s")
        print(text)
        if args.out:
            Path(args.out).write_text(text)
    finally:
        sh(["rm", "-rf", ctx.work])


if __name__ == "__main__":
    main()
