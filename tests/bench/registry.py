#!/usr/bin/python3
"""Pulling from a registry: strata's own client against skopeo.

    /usr/bin/python3 tests/bench/registry.py [--runs N] [--build DIR]

Builds (once, cached in /var/tmp/strata-bench/registry-image) a two-layer
image with umoci from copies of /usr/lib/go-1.19 and /usr/lib/python3.11
(about 380 MB unpacked, 180 MB of gzip layers), starts Debian's
docker-registry on 127.0.0.1 (plain HTTP, filesystem storage in the run
directory), pushes the image with skopeo, and times, into a fresh store
or layout each run, every timing ending with `sync`:

  strata        strata import docker://... (download, verify, store and
                unpack in one pass per layer, layers in parallel)
  skopeo+strata skopeo copy docker://... oci:DIR, then strata import oci:DIR
                (the way before strata spoke the protocol)
  skopeo        skopeo copy docker://... oci:DIR alone (download only)
  import oci:   strata import oci:DIR of that layout alone (unpack only:
                the second half of skopeo+strata, timed by itself)
  podman        podman pull (overlay driver, --root/--runroot in the run
                directory, a storage.conf of its own): pulled to
                mountable layers, as strata

Prints the median, min and max of each and the ratio to skopeo+strata,
strata's time over the slower of its two parts alone (download = skopeo,
unpack = import oci:), plus strata's CPU time (user+sys, from wait4) and
peak RSS. Asserts
nothing; not part of the test suite. Run as root (umoci, registry)."""
import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/tmp/strata-bench/registry-image")


def sh(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True,
                          capture_output=True, text=True, **kw)


def build_image():
    lay = CACHE / "layout"
    if (lay / "index.json").exists():
        return lay
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.mkdir(parents=True)
    bun = CACHE / "bundle"
    sh(["umoci", "init", "--layout", lay])
    sh(["umoci", "new", "--image", f"{lay}:t"])
    for src in ("/usr/lib/go-1.19", "/usr/lib/python3.11"):
        shutil.rmtree(bun, ignore_errors=True)
        sh(["umoci", "unpack", "--image", f"{lay}:t", bun])
        dst = bun / "rootfs" / src.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        sh(["cp", "-a", src, dst])
        sh(["umoci", "repack", "--image", f"{lay}:t", bun])
    shutil.rmtree(bun, ignore_errors=True)
    return lay


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd, env=None):
    """Wall seconds (command + sync), CPU seconds, peak RSS KiB."""
    t0 = time.monotonic()
    p = subprocess.Popen([str(c) for c in cmd], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode()
    if p.returncode != 0:
        sys.exit(f"{cmd} failed: {err}")
    os.sync()
    return (time.monotonic() - t0, ru.ru_utime + ru.ru_stime, ru.ru_maxrss)


def unmount_under(path):
    """What podman's overlay driver left mounted under @path, deepest
    first (it may make its home a private mount)."""
    with open("/proc/self/mounts") as f:
        mnts = [ln.split()[1] for ln in f]
    for m in sorted((m for m in mnts if m.startswith(f"{path}/")),
                    key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--build", default=os.environ.get(
        "STRATA_BUILD", REPO / "build-bench"))
    a = ap.parse_args()
    strata = Path(a.build) / "tools" / "strata"
    lay = build_image()
    work = Path(tempfile.mkdtemp(prefix="strata-bench-reg-", dir="/var/tmp"))
    reg = None
    try:
        port = free_port()
        conf = work / "registry.yml"
        conf.write_text("version: 0.1\nlog:\n  level: error\nstorage:\n"
                        f"  filesystem:\n    rootdirectory: {work}/data\n"
                        f"http:\n  addr: 127.0.0.1:{port}\n")
        reg = subprocess.Popen(["/usr/bin/docker-registry", "serve",
                                str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               start_new_session=True)
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.025)
        policy = work / "policy.json"
        policy.write_text(json.dumps(
            {"default": [{"type": "insecureAcceptAnything"}]}))
        ref = f"docker://127.0.0.1:{port}/bench/img:1"
        sh(["skopeo", "--policy", policy, "copy", "--dest-tls-verify=false",
            f"oci:{lay}:t", ref])
        res = {"strata": [], "skopeo+strata": [], "skopeo": [],
               "import oci:": [], "podman": []}
        cpu, rss = [], []
        pconf = work / "storage.conf"
        pr = work / "podman"
        pconf.write_text(f'[storage]\ndriver = "overlay"\n'
                         f'graphroot = "{pr}/root"\nrunroot = "{pr}/run"\n')
        penv = dict(os.environ, CONTAINERS_STORAGE_CONF=str(pconf))
        for i in range(a.runs):
            for name in res:
                st, oc = work / "store", work / "oci"
                shutil.rmtree(st, ignore_errors=True)
                if name != "import oci:":
                    shutil.rmtree(oc, ignore_errors=True)
                os.sync()
                if name == "import oci:":
                    # the layout skopeo just wrote
                    t, _, _ = timed([strata, "--root", st, "-q", "import",
                                     f"oci:{oc}:1", "b:1"])
                elif name == "podman":
                    t, _, _ = timed(["podman", "--root", pr / "root",
                                     "--runroot", pr / "run",
                                     "--storage-driver", "overlay", "pull",
                                     "-q", "--tls-verify=false", ref],
                                    env=penv)
                    unmount_under(pr)
                    shutil.rmtree(pr, ignore_errors=True)
                elif name == "strata":
                    t, c, m = timed([strata, "--root", st, "-q", "import",
                                     "--tls-verify=false", ref, "b:1"])
                    cpu.append(c)
                    rss.append(m)
                else:
                    t, _, _ = timed(["skopeo", "--policy", policy, "copy",
                                     "-q", "--src-tls-verify=false", ref,
                                     f"oci:{oc}:1"])
                    if name == "skopeo+strata":
                        t2, _, _ = timed([strata, "--root", st, "-q",
                                          "import", f"oci:{oc}:1", "b:1"])
                        t += t2
                res[name].append(t)
        base = statistics.median(res["skopeo+strata"])
        print(f"| pull {lay} ({a.runs} runs) | median s | min | max | "
              "ratio to skopeo+strata |")
        print("|---|---|---|---|---|")
        for name, v in res.items():
            md = statistics.median(v)
            print(f"| {name} | {md:.2f} | {min(v):.2f} | {max(v):.2f} | "
                  f"{md / base:.2f} |")
        slow = max(statistics.median(res["skopeo"]),
                   statistics.median(res["import oci:"]))
        print(f"\npull-to-mountable (strata) is "
              f"{statistics.median(res['strata']) / slow:.2f} of the slower "
              "part alone (max of skopeo, import oci:)")
        print(f"strata import docker://: CPU {statistics.median(cpu):.2f} s"
              f" (median), peak RSS {max(rss) // 1024} MiB; load average "
              f"{os.getloadavg()[0]:.1f}")
    finally:
        if reg and reg.poll() is None:
            os.killpg(reg.pid, signal.SIGKILL)
            reg.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
