"""strata commit seen by its peers: a container engine (podman), a runtime
(runc) whose rootfs is a stratafs mount, a registry (Debian's
docker-registry via skopeo), and the two properties only a real process
shows: a commit killed with SIGKILL at any point leaves the layout valid,
and a commit of a live mount that is being written to is one consistent
snapshot.

Every mount goes through the `mount` fixture (or `extra_mounts` here),
every process started is killed in the `procs` finalizer, all container
and registry state lives under tmp_path."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import (STRATA, STRATAFS, assert_same_tree, run, sha256_file,
                      tree, unmount)

TEXT = "hello from a strata commit\n"


# ---------------------------------------------------------------------------
# fixtures and helpers

def busybox_steps(root):
    """Layer 1: busybox-static with a few applets, /etc, /var/log/app.log."""
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy("/usr/bin/busybox", root / "bin/busybox")
    for a in ("sh", "ls", "cat", "echo", "true"):
        os.symlink("busybox", root / "bin" / a)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/motd").write_text("strata peers image\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "var/log").mkdir(parents=True, exist_ok=True)
    (root / "var/log/app.log").write_text(
        "".join(f"base {i:06d}\n" for i in range(100)))
    for d in ("tmp", "proc", "sys", "dev", "run"):
        (root / d).mkdir(exist_ok=True)
    os.chmod(root / "tmp", 0o1777)


def second_steps(root):
    """Layer 2: a deletion, so the image has a whiteout."""
    (root / "etc/motd").unlink()
    (root / "etc/os-release").write_text("NAME=strata-peers\n")


@pytest.fixture
def busybox(umoci_image):
    """(layout, tag): a two-layer busybox-static image built with umoci."""
    layout, tag = umoci_image([busybox_steps, second_steps], name="bbox")
    run(["umoci", "config", "--image", f"{layout}:{tag}",
         "--config.cmd", "/bin/sh"])
    return layout, tag


def unmount_below(top):
    """Unmount everything mounted below @top, deepest first."""
    prefix = str(Path(top).resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        mps = [l.split()[4].replace("\\040", " ") for l in f]
    for mp in sorted((m for m in mps if m.startswith(prefix)),
                     key=len, reverse=True):
        subprocess.run(["umount", mp], capture_output=True)
        unmount(mp)


@pytest.fixture
def sweep_mounts(tmp_path):
    """Finalizer: unmount anything still mounted below tmp_path (podman's
    shm mounts, a runc rootfs left behind by a failure)."""
    yield
    unmount_below(tmp_path)


def writable(mount, tmp_path, ref, name="upper"):
    upper = tmp_path / name
    upper.mkdir()
    return mount(ref, opts=f"upper={upper}"), upper


def index_of(layout):
    return json.loads((Path(layout) / "index.json").read_text())


def tags_of(layout):
    return {d.get("annotations", {}).get("org.opencontainers.image.ref.name"):
            d for d in index_of(layout)["manifests"]}


def blob_path(layout, digest):
    algo, hexd = digest.split(":", 1)
    return Path(layout) / "blobs" / algo / hexd


def commit_new_file(strata, mount, tmp_path, layout, tag, dest_tag="hello"):
    """Mount layout:tag writable, add /hello.txt through the mount, commit
    the live mount to layout:dest_tag; return the manifest digest."""
    mnt, upper = writable(mount, tmp_path, f"oci:{layout}:{tag}")
    (mnt / "hello.txt").write_text(TEXT)
    os.chmod(mnt / "hello.txt", 0o644)
    assert (upper / "hello.txt").read_text() == TEXT
    r = strata("commit", mnt, f"oci:{layout}:{dest_tag}")
    digest = r.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), r.stdout
    assert tags_of(layout)[dest_tag]["digest"] == digest
    return digest


# ---------------------------------------------------------------------------
# 1. podman runs the committed image

def podman_env(tmp_path, runroot):
    """Private containers config: policy, registries, storage, containers.conf
    all in tmp_path (the runroot, which podman wants shorter than 50
    characters, in @runroot), nothing read from or written to /etc or
    /var."""
    cfg = tmp_path / "containers"
    cfg.mkdir()
    (cfg / "policy.json").write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    (cfg / "registries.conf").write_text(
        "unqualified-search-registries = []\n")
    (cfg / "storage.conf").write_text(
        '[storage]\ndriver = "vfs"\n'
        f'graphroot = "{tmp_path}/podroot"\nrunroot = "{runroot}"\n')
    (cfg / "containers.conf").write_text(
        '[engine]\nevents_logger = "file"\n'
        f'events_logfile_path = "{tmp_path}/podman-events.log"\n'
        'cgroup_manager = "cgroupfs"\nruntime = "runc"\n'
        f'tmp_dir = "{tmp_path}/podtmp"\n'
        f'volume_path = "{tmp_path}/podvol"\n'
        '[containers]\nlog_driver = "k8s-file"\n'
        '[network]\n'
        f'network_config_dir = "{tmp_path}/podnet"\n')
    env = dict(os.environ,
               CONTAINERS_REGISTRIES_CONF=str(cfg / "registries.conf"),
               CONTAINERS_STORAGE_CONF=str(cfg / "storage.conf"),
               CONTAINERS_CONF=str(cfg / "containers.conf"),
               TMPDIR=str(tmp_path))
    base = ["podman", "--root", tmp_path / "podroot",
            "--runroot", runroot, "--tmpdir", tmp_path / "podtmp",
            "--runtime", "runc", "--cgroup-manager", "cgroupfs",
            "--storage-driver", "vfs", "--events-backend", "file"]
    return base, env, cfg / "policy.json"


@pytest.fixture
def podman(tmp_path, sweep_mounts):
    """podman(*args, check=True) with all state in tmp_path (and a short
    runroot /tmp/spr-*); the finalizer removes every container it started,
    unmounts what is left under the runroot and removes it (sweep_mounts
    does the same under tmp_path)."""
    import tempfile
    runroot = Path(tempfile.mkdtemp(prefix="spr-", dir="/tmp"))
    base, env, policy = podman_env(tmp_path, runroot)

    def call(*args, check=True, timeout=120):
        return run(base + list(args), check=check, env=env, timeout=timeout)
    call.policy = policy
    call.base, call.env = base, env
    yield call
    subprocess.run([str(c) for c in base + ["rm", "-a", "-f"]], env=env,
                   capture_output=True, timeout=60)
    unmount_below(runroot)
    shutil.rmtree(runroot, ignore_errors=True)


def test_podman_runs_commit(busybox, strata, mount, tmp_path, podman):
    layout, tag = busybox
    commit_new_file(strata, mount, tmp_path, layout, tag)
    r = podman("run", "--rm", "--signature-policy", podman.policy,
               "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
               "--network", "none", f"oci:{layout}:hello",
               "/bin/cat", "/hello.txt")
    assert r.stdout == TEXT, r
    # and the layers below the commit are there too: the whiteout holds
    r = podman("run", "--rm", "--signature-policy", podman.policy,
               "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
               "--network", "none", f"oci:{layout}:hello",
               "/bin/sh", "-c",
               "cat /etc/os-release; test ! -e /etc/motd && echo gone")
    assert r.stdout == "NAME=strata-peers\ngone\n", r


def test_podman_mount_program(busybox, podman, tmp_path):
    """stratafs in fuse-overlayfs's place as containers-storage's
    mount_program (overlay driver): podman runs `stratafs -o lowerdir=...,
    upperdir=...,workdir=...[,,volatile] TARGET`, the container sees a
    fuse.stratafs root, writes and deletes, and `podman diff` (which reads
    the upper directory itself) sees an added file and a deletion."""
    layout, tag = busybox
    base = [str(a) for a in podman.base]
    i = base.index("--storage-driver")
    base[i + 1] = "overlay"
    base[i + 2:i + 2] = ["--storage-opt",
                         f"overlay.mount_program={STRATAFS}"]

    def pm(*args):
        return run(base + list(args), env=podman.env, timeout=120)
    r = pm("run", "--name", "mp", "--signature-policy", podman.policy,
           "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
           "--network", "none", f"oci:{layout}:{tag}", "/bin/sh", "-c",
           "echo hi > /new; cat /new; rm /etc/os-release; "
           "test ! -e /etc/os-release && echo gone; "
           "while read s m t rest; do [ $m = / ] && echo $t; done "
           "< /proc/mounts; true")
    assert r.stdout.split() == ["hi", "gone", "fuse.stratafs"], r
    d = pm("diff", "mp").stdout.split("\n")
    assert "A /new" in d and "D /etc/os-release" in d, d


EUID_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("uid=%d euid=%d\n", (int)getuid(), (int)geteuid());
		 return 0; }
"""


@pytest.fixture
def setuid_image(umoci_image, tmp_path):
    """busybox plus /bin/euid, a static setuid-root program that prints
    its uid and euid, and /etc/secret (0600 root)."""
    src = tmp_path / "euid.c"
    src.write_text(EUID_C)
    exe = tmp_path / "euid"
    run(["cc", "-static", "-O2", "-o", exe, src])

    def extra(root):
        shutil.copy(exe, root / "bin/euid")
        os.chown(root / "bin/euid", 0, 0)
        os.chmod(root / "bin/euid", 0o4755)
        (root / "etc/secret").write_text("s\n")
        os.chmod(root / "etc/secret", 0o600)
    layout, tag = umoci_image([busybox_steps, extra], name="suid")
    return layout, tag


@pytest.mark.parametrize("program", ["stratafs", "fuse-overlayfs"])
def test_podman_mount_program_other_users(setuid_image, podman, program):
    """A root mount is a filesystem for every user, as fuse-overlayfs's
    (the reference, same steps): `podman run --user 65534` can run
    programs, is refused a 0600 file, a setuid-root program gets euid 0,
    and the container's root is not nosuid. Before: stratafs's root mount
    refused uid 65534 everything (stat /bin/ls: permission denied) and
    was nosuid."""
    layout, tag = setuid_image
    binary = STRATAFS if program == "stratafs" else shutil.which(program)
    base = [str(a) for a in podman.base]
    i = base.index("--storage-driver")
    base[i + 1] = "overlay"
    base[i + 2:i + 2] = ["--storage-opt", f"overlay.mount_program={binary}"]

    def pm(*args, check=True):
        return run(base + ["run", "--rm", "--signature-policy",
                           podman.policy, "--ulimit", "nofile=1024:1024",
                           "--ulimit", "nproc=1024:1024", "--network",
                           "none", *args], env=podman.env, timeout=120,
                   check=check)
    img = f"oci:{layout}:{tag}"
    r = pm("--user", "65534", img, "/bin/ls", "/bin")
    assert "busybox" in r.stdout.split(), r
    r = pm("--user", "65534", img, "/bin/cat", "/etc/secret", check=False)
    assert r.returncode != 0 and "ermission denied" in r.stderr, r
    r = pm("--user", "65534", img, "/bin/euid")
    assert r.stdout.strip() == "uid=65534 euid=0", r
    r = pm(img, "/bin/sh", "-c",
           "while read a b c d mp opts rest; do [ $mp = / ] && "
           "echo $opts; done < /proc/self/mountinfo; true")
    assert "nosuid" not in r.stdout.split(","), r


# ---------------------------------------------------------------------------
# 2. runc runs a bundle whose rootfs is a stratafs mount of the commit

@pytest.fixture
def runc(tmp_path, sweep_mounts):
    """runc(*args) with --root in tmp_path; the finalizer force-deletes every
    container id handed out by runc.new_id()."""
    root = tmp_path / "runcroot"
    ids = []

    def call(*args, check=True, timeout=60):
        return run(["runc", "--root", root, *args], check=check,
                   timeout=timeout)

    def new_id():
        ids.append(f"ctr-{uuid.uuid4().hex[:12]}")
        return ids[-1]
    call.new_id = new_id
    yield call
    for i in ids:
        subprocess.run(["runc", "--root", str(root), "delete", "--force", i],
                       capture_output=True, timeout=30)


def test_runc_runs_stratafs_rootfs(busybox, strata, mount, tmp_path, runc):
    layout, tag = busybox
    commit_new_file(strata, mount, tmp_path, layout, tag)
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    mount(f"oci:{layout}:hello", mnt=bundle / "rootfs")
    run(["runc", "spec"], cwd=bundle)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = ["/bin/cat", "/hello.txt", "/etc/os-release"]
    spec["process"]["terminal"] = False
    spec["root"] = {"path": "rootfs", "readonly": True}
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    r = runc("run", "--bundle", bundle, runc.new_id(), check=False)
    assert r.returncode == 0 and r.stdout == TEXT + "NAME=strata-peers\n", \
        f"runc run exited {r.returncode}\nstdout: {r.stdout!r}\n" \
        f"stderr: {r.stderr}"


# ---------------------------------------------------------------------------
# 3. registry round trip

def test_registry_round_trip(busybox, strata, mount, tmp_path, registry):
    layout, tag = busybox
    registry = registry()
    digest = commit_new_file(strata, mount, tmp_path, layout, tag)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    sk = ["skopeo", "--policy", policy]
    remote = f"docker://{registry}/test/img:1"
    run(sk + ["copy", "--dest-tls-verify=false", f"oci:{layout}:hello",
              remote])
    # the registry serves the very manifest strata wrote
    insp = json.loads(run(sk + ["inspect", "--tls-verify=false",
                                remote]).stdout)
    assert insp["Digest"] == digest
    fresh = tmp_path / "fresh"
    run(sk + ["copy", "--src-tls-verify=false", remote, f"oci:{fresh}:1"])
    assert tags_of(fresh)["1"]["digest"] == digest
    a = mount(f"oci:{layout}:hello")
    b = mount(f"oci:{fresh}:1")
    assert (b / "hello.txt").read_text() == TEXT
    assert_same_tree(a, b)


# ---------------------------------------------------------------------------
# 4. crash safety: SIGKILL during a large commit

def check_layout(layout):
    """The layout is valid after a crash: index.json parses, every manifest
    it lists has its config and layers present with matching sha256, and
    every file under blobs/ is a complete blob named by its digest (no
    temporary name ever visible there). Returns the problems found."""
    layout = Path(layout)
    problems = []
    try:
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError) as e:
        return [f"index.json: {e}"]
    try:
        oci = json.loads((layout / "oci-layout").read_text())
        if oci.get("imageLayoutVersion") != "1.0.0":
            problems.append(f"oci-layout: {oci}")
    except (OSError, ValueError) as e:
        problems.append(f"oci-layout: {e}")
    hashed = {}

    def have(desc, what):
        p = blob_path(layout, desc["digest"])
        if not p.is_file():
            problems.append(f"{what} {desc['digest']} missing")
            return False
        if p not in hashed:
            hashed[p] = sha256_file(p)
        if "sha256:" + hashed[p] != desc["digest"]:
            problems.append(f"{what} {desc['digest']} content does not match")
            return False
        if p.stat().st_size != desc["size"]:
            problems.append(f"{what} {desc['digest']} size "
                            f"{p.stat().st_size} != {desc['size']}")
            return False
        return True

    for m in index.get("manifests", []):
        if not have(m, "manifest"):
            continue
        man = json.loads(blob_path(layout, m["digest"]).read_bytes())
        have(man["config"], "config")
        for l in man.get("layers", []):
            have(l, "layer")
    for dirpath, dirnames, filenames in os.walk(layout / "blobs"):
        rel = Path(dirpath).relative_to(layout / "blobs")
        for n in dirnames:
            if str(rel) != "." or n != "sha256":
                problems.append(f"unexpected directory blobs/{rel}/{n}")
        for n in filenames:
            p = Path(dirpath) / n
            if str(rel) != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", n):
                problems.append(f"non-blob file under blobs/: {p}")
            else:
                if p not in hashed:
                    hashed[p] = sha256_file(p)
                if hashed[p] != n:
                    problems.append(f"blobs/sha256/{n} holds other content "
                                    f"(sha256 {hashed[p]})")
    return problems


def make_big_upper(upper, rnd, total=300 << 20):
    """About @total bytes of random data in overlay format: a new directory
    of 4-24 MiB files, a small change, a whiteout of /etc/os-release."""
    (upper / "big").mkdir(parents=True)
    n = 0
    i = 0
    while n < total:
        size = min(rnd.randrange(4 << 20, 24 << 20), total - n)
        (upper / "big" / f"f{i:03d}").write_bytes(rnd.randbytes(size))
        n += size
        i += 1
    (upper / "etc").mkdir()
    shutil.copystat(upper / "big", upper / "etc")
    (upper / "etc/new").write_text("new\n")
    os.mknod(upper / "etc/os-release", 0o600 | 0o020000, os.makedev(0, 0))


def test_crash_safety(busybox, strata, mount, tmp_path, procs):
    layout, tag = busybox
    src = f"oci:{layout}:{tag}"
    # a second tag that must survive too
    commit_new_file(strata, mount, tmp_path, layout, tag, dest_tag="old2")
    run(["oci-image-tool", "validate", "--type", "image", layout])
    assert check_layout(layout) == []
    old = {t: tree(mount(f"oci:{layout}:{t}")) for t in (tag, "old2")}
    old_index = (Path(layout) / "index.json").read_bytes()

    rnd = random.Random(20261128)
    upper = tmp_path / "big-upper"
    make_big_upper(upper, rnd)
    cmd = [STRATA, "commit", "--upper", upper, "--from", src,
           f"oci:{layout}:new", "--message", "big"]

    # how long a whole commit of this upper takes (into another layout), so
    # the kills land inside it whatever the machine's speed
    t0 = time.monotonic()
    run([STRATA, "commit", "--upper", upper, "--from", src,
         f"oci:{tmp_path}/scratch:x"])
    full = time.monotonic() - t0
    shutil.rmtree(tmp_path / "scratch")
    points = [0.05, 0.5, 2.0] + \
        [rnd.uniform(0.05, 0.98) * full for _ in range(2)]
    points = sorted(t for t in points if t < full * 0.98)
    print(f"full commit {full:.2f}s, kills at {[round(t, 2) for t in points]}")

    killed_midway = 0
    blobs = Path(layout) / "blobs"
    seen_in_blobs = set()
    for t in points:
        p = procs.start(cmd)
        # until the kill, watch blobs/: no temporary name may ever show
        deadline = time.monotonic() + t
        while time.monotonic() < deadline:
            for dirpath, dirnames, filenames in os.walk(blobs):
                for n in dirnames + filenames:
                    rel = os.path.relpath(os.path.join(dirpath, n), blobs)
                    if rel != "sha256" and not re.fullmatch(
                            r"sha256/[0-9a-f]{64}", rel):
                        seen_in_blobs.add(rel)
            time.sleep(0.005)
        running = p.poll() is None
        if running:
            os.kill(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=60)
        if running:
            assert p.returncode == -signal.SIGKILL, (t, p.returncode, err)
            killed_midway += 1
        problems = check_layout(layout)
        assert problems == [], f"after SIGKILL at {t:.2f}s of {full:.2f}s: " \
            + "\n".join(problems)
        r = run(["oci-image-tool", "validate", "--type", "image",
                 layout], check=False)
        assert r.returncode == 0, f"after SIGKILL at {t:.2f}s: {r.stdout}" \
            f"{r.stderr}"
        tags = tags_of(layout)
        assert tags[tag]["digest"] and tags["old2"]["digest"]
        for name, want in old.items():
            m = mount(f"oci:{layout}:{name}")
            assert tree(m) == want, f"tag {name} changed after a kill at {t}"
            unmount(m)
        if "new" in tags:
            # the kill came after the index was renamed: then the commit is
            # complete (the new tag mounts with all its data)
            m = mount(f"oci:{layout}:new")
            assert sha256_file(m / "big/f000") == \
                sha256_file(upper / "big/f000")
            unmount(m)
        else:
            assert json.loads((Path(layout) / "index.json").read_bytes()) \
                == json.loads(old_index)
    assert killed_midway >= 1, f"no kill landed during a commit ({points})"
    assert not seen_in_blobs, f"temporary names under blobs/: {seen_in_blobs}"

    # finally, a commit that runs to the end succeeds (no stale lock) ...
    r = run(cmd, timeout=300)
    digest = r.stdout.strip()
    assert tags_of(layout)["new"]["digest"] == digest
    # ... and sweeps the temporary files the killed commits left
    stale = sorted((p.name, p.stat().st_size) for p in Path(layout).iterdir()
                   if p.name.startswith(".strata-tmp"))
    assert stale == [], f"temporary files left by the killed commits: {stale}"
    assert check_layout(layout) == []
    run(["oci-image-tool", "validate", "--type", "image", layout])
    # ... and shows the upper over the old tree
    m = mount(f"oci:{layout}:new")
    for f in sorted((upper / "big").iterdir()):
        assert sha256_file(m / "big" / f.name) == sha256_file(f), f
    assert (m / "etc/new").read_text() == "new\n"
    assert not os.path.lexists(m / "etc/os-release")
    for name, want in old.items():
        assert tree(mount(f"oci:{layout}:{name}")) == want


# ---------------------------------------------------------------------------
# 5. a live commit while a writer appends

LINE = re.compile(r"(base|w) (\d{6})( x*)?\n")
PAGE = os.sysconf("SC_PAGE_SIZE")


def write_chunk(rnd, first, aligned):
    """The bytes of one write(): whole lines numbered from @first. Aligned:
    1-8 whole pages (the last line padded to end on the page), lines of
    random length crossing page boundaries; else 1-40 lines of 12-312
    bytes, the way a log grows."""
    lines = []
    if not aligned:
        for k in range(rnd.randrange(1, 40)):
            lines.append(f"w {first + k:06d} {'x' * rnd.randrange(0, 300)}\n")
        return "".join(lines).encode(), len(lines)
    total = PAGE * rnd.randrange(1, 9)
    n = 0
    while True:
        head = f"w {first + len(lines):06d} "
        left = total - n - len(head) - 1
        pad = rnd.randrange(0, 3000)
        if left - pad < len(head) + 1:      # no room for another line
            lines.append(head + "x" * left + "\n")
            break
        lines.append(head + "x" * pad + "\n")
        n += len(lines[-1])
    data = "".join(lines).encode()
    assert len(data) == total
    return data, len(lines)


@pytest.mark.parametrize("aligned", [True, False],
                         ids=["page-aligned-writes", "log-appends"])
def test_live_commit_while_writing(busybox, strata, mount, tmp_path, aligned):
    """A writer appends numbered lines, one write() per batch of lines,
    while the live mount is committed (5 or 10 times): each committed file
    is a prefix of what the writer ended with, every line in it complete.

    page-aligned-writes: every write() covers whole pages at a page-aligned
    offset, which the kernel hands to FUSE as one WRITE request; it checks
    the commit's freeze at request granularity.  log-appends: ordinary
    unaligned appends, which the kernel (fuse_fill_write_pages) splits into
    several WRITE requests at page boundaries."""
    layout, tag = busybox
    mnt, upper = writable(mount, tmp_path, f"oci:{layout}:{tag}")
    log = mnt / "var/log/app.log"
    base_len = 100 * len("base 000000\n")
    if aligned:             # start page-aligned: pad the base lines
        with open(log, "a") as f:
            pad = -base_len % PAGE
            f.write("base 000100 " + "x" * (pad - 13) + "\n")
            base_len += pad
    stop = threading.Event()
    state = {"written": 0, "error": None, "lines": 0, "ends": []}
    rnd = random.Random(5)
    commits = 5 if aligned else 10

    def writer():
        try:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND)
            try:
                i = 0
                while not stop.is_set():
                    data, nl = write_chunk(rnd, i, aligned)
                    n = os.write(fd, data)
                    assert n == len(data), (n, len(data))
                    i += nl
                    state["lines"] = i
                    state["written"] += n
                    state["ends"].append(base_len + state["written"])
            finally:
                os.close(fd)
        except BaseException as e:        # noqa: B902 - reported below
            state["error"] = e

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        for k in range(commits):
            # let it write a while, then commit while it goes on
            target = state["written"] + (256 << 10)
            while state["written"] < target and th.is_alive():
                time.sleep(0.01)
            assert th.is_alive(), f"writer died: {state['error']!r}"
            strata("commit", mnt, f"oci:{layout}:live{k}",
                   "--message", f"live {k}")
            assert th.is_alive(), f"writer died: {state['error']!r}"
    finally:
        stop.set()
        th.join(timeout=60)
    assert not th.is_alive(), "writer hung"
    assert state["error"] is None, repr(state["error"])
    final = log.read_bytes()
    assert len(final) == state["ends"][-1]
    assert final.count(b"\n") == 100 + aligned + state["lines"]

    prev = 0
    torn, split = [], []
    for k in range(commits):
        m = mount(f"oci:{layout}:live{k}")
        snap = (m / "var/log/app.log").read_bytes()
        unmount(m)
        # a prefix of what the writer ended with: nothing lost or reordered
        assert final.startswith(snap), f"live{k} is not a prefix"
        assert len(snap) >= prev, f"live{k} is older than live{k - 1}"
        prev = len(snap)
        if len(snap) > base_len and len(snap) not in state["ends"]:
            cut = min(e for e in state["ends"] if e >= len(snap))
            start = max([base_len] + [e for e in state["ends"] if e < cut])
            where = (f"live{k}: {len(snap)} bytes (page {len(snap) // PAGE}"
                     f" + {len(snap) % PAGE}), inside the write() of "
                     f"bytes {start}..{cut}")
            # the kernel hands FUSE one unaligned write() as several WRITE
            # requests cut at page boundaries; the freeze is exact per
            # request, so a write() still in flight may be in a commit up
            # to a page boundary, never elsewhere, and never when each
            # write() is one request
            if aligned or len(snap) % PAGE:
                torn.append(where)
            else:
                split.append(where)
        lines = snap.decode().splitlines(keepends=True)
        assert all(LINE.fullmatch(l) for l in lines[:-1])
        nums = [int(LINE.fullmatch(l).group(2))
                for l in lines[100 + aligned:-1]]
        assert nums == list(range(len(nums))), f"live{k}: lines out of order"
    assert len(final) > prev, "the writer went on after the last commit"
    # the mount still serves the writer's data after the commits
    assert (mnt / "var/log/app.log").read_bytes() == final
    # every commit holds whole WRITE requests: a whole number of write()s,
    # or a write() in flight cut at a page boundary where the kernel split it
    print("writes in flight cut at a page boundary:", split or "none")
    assert not torn, "committed part of a FUSE WRITE request:\n" + \
        "\n".join(torn)
