#!/usr/bin/python3
"""Unbounded differential fuzzing of strata's layer unpacker against Go's
archive/tar: the loop of test_tar_differential.py's bounded run.

    tests/gotar/fuzz.py [SECONDS|forever] [SEED]

Seeds: tests/gotar/testdata, tests/gotar/corpus.tar.gz and the test's
crafted cases. Each input the readers disagree on is saved under
tests/gotar/findings/ (FUZZ_FINDINGS overrides) with a .txt beside it
saying what differs. Needs a build (STRATA_BUILD, default build-asan).
"""
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "integration"))
os.environ.setdefault("STRATA_BUILD", str(HERE.parents[1] / "build-asan"))

import difftar  # noqa: E402
import test_tar_differential as t  # noqa: E402


def main():
    arg = sys.argv[1] if len(sys.argv) > 1 else "60"
    seconds = None if arg == "forever" else float(arg)
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    out = Path(os.environ.get("FUZZ_FINDINGS", HERE / "findings"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        gotar = difftar.build_gotar(Path(work) / "gotar")
        lxdump = difftar.lxdump_path()
        seeds = [v for v in t.SEEDS.values()
                 if not difftar.is_gzip(v) and len(v) <= 1 << 16]

        def keep(path, desc, diffs, hexd):
            dest = out / f"s{seed}-{path.name}"
            path.replace(dest)
            dest.with_suffix(".txt").write_text(
                f"{desc}\n\n" + "\n".join(diffs) + f"\n\n{hexd}\n")
            print(f"{dest}: {diffs[0][:160]}", flush=True)

        n, found = difftar.fuzz(seeds, gotar, lxdump, Path(work) / "run",
                                seconds=seconds, seed=seed, on_diff=keep)
    print(f"{n} inputs, {len(found)} read differently; see {out}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
