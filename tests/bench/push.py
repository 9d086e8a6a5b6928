#!/usr/bin/python3
"""Pushing to a registry: strata's own client against skopeo.

    /usr/bin/python3 tests/bench/push.py [--runs N] [--build DIR]

Uses the image of tests/bench/registry.py (two gzip layers, about
180 MB, cached in /var/tmp/strata-bench/registry-image), starts Debian's
docker-registry on 127.0.0.1 (plain HTTP), pushes the image there with
skopeo and pulls it into a fresh store with strata, then times:

  commit 1 file   strata commit --upper U --from base docker://.../app:N
                  (one new file: one layer, one config, one manifest
                  travel; the base's layers are found with HEAD)
  commit+skopeo   strata commit ... oci:DIR:N, then skopeo copy to the
                  registry (the way before strata pushed)
  copy (full)     strata copy oci:LAYOUT docker://... to a registry of its
                  own that has nothing (every blob uploaded)
  skopeo (full)   skopeo copy oci:LAYOUT docker://..., the same

Prints the median, min and max of each and ratios. Asserts nothing; not
part of the test suite. Run as root (umoci, registry)."""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry import REPO, build_image, free_port, sh  # noqa: E402


def start_registry(work, name):
    port = free_port()
    conf = work / f"{name}.yml"
    conf.write_text("version: 0.1\nlog:\n  level: error\nstorage:\n"
                    f"  filesystem:\n    rootdirectory: {work}/{name}\n"
                    f"http:\n  addr: 127.0.0.1:{port}\n")
    p = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(conf)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            time.sleep(0.025)
    return p, f"127.0.0.1:{port}"


def wall(cmd):
    t0 = time.monotonic()
    sh(cmd)
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default=os.environ.get(
        "STRATA_BUILD", REPO / "build-bench"))
    a = ap.parse_args()
    strata = Path(a.build) / "tools" / "strata"
    lay = build_image()
    work = Path(tempfile.mkdtemp(prefix="strata-bench-push-", dir="/var/tmp"))
    regs = []
    try:
        p1, reg = start_registry(work, "reg1")
        regs = [p1]
        policy = work / "policy.json"
        policy.write_text(json.dumps(
            {"default": [{"type": "insecureAcceptAnything"}]}))
        sko = ["skopeo", "--policy", policy]
        sh(sko + ["copy", "-q", "--dest-tls-verify=false", f"oci:{lay}:t",
                  f"docker://{reg}/bench/base:1"])
        st = work / "store"
        sh([strata, "--root", st, "-q", "import", "--tls-verify=false",
            f"docker://{reg}/bench/base:1", "base:1"])
        up = work / "upper"
        up.mkdir()
        res = {"commit 1 file": [], "commit+skopeo": [], "copy (full)": [],
               "skopeo (full)": []}
        for i in range(a.runs):
            (up / "hello.txt").write_text(f"run {i}\n")
            res["commit 1 file"].append(wall(
                [strata, "--root", st, "-q", "commit", "--tls-verify=false",
                 "--upper", up, "--from", "base:1",
                 f"docker://{reg}/bench/app:{i}"]))
            oc = work / "oci"
            shutil.rmtree(oc, ignore_errors=True)
            t = wall([strata, "--root", st, "-q", "commit", "--upper", up,
                      "--from", "base:1", f"oci:{oc}:{i}"])
            t += wall(sko + ["copy", "-q", "--dest-tls-verify=false",
                             f"oci:{oc}:{i}",
                             f"docker://{reg}/bench/sk:{i}"])
            res["commit+skopeo"].append(t)
            # full pushes: each to a registry of its own that has
            # nothing (skopeo would otherwise mount what it saw before)
            for name in ("copy (full)", "skopeo (full)"):
                p, r = start_registry(work, f"full-{i}-{len(regs)}")
                regs.append(p)
                if name == "copy (full)":
                    cmd = [strata, "--root", work / f"st-{i}", "-q", "copy",
                           "--tls-verify=false", f"oci:{lay}:t",
                           f"docker://{r}/fresh/img:1"]
                else:
                    cmd = sko + ["copy", "-q", "--dest-tls-verify=false",
                                 f"oci:{lay}:t", f"docker://{r}/fresh/img:1"]
                res[name].append(wall(cmd))
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        print(f"| push ({a.runs} runs, loopback) | median s | min | max | "
              "ratio |")
        print("|---|---|---|---|---|")
        pairs = {"commit 1 file": "commit+skopeo",
                 "copy (full)": "skopeo (full)"}
        for name, v in res.items():
            md = statistics.median(v)
            base = statistics.median(res[pairs.get(name, name)])
            print(f"| {name} | {md:.3f} | {min(v):.3f} | {max(v):.3f} | "
                  f"{md / base:.2f} |")
        print(f"\nload average {os.getloadavg()[0]:.1f}")
    finally:
        for p in regs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
