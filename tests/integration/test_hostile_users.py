"""A root stratafs daemon serving other users (allow_other), attacked by
one of them: uid 65534 (nobody) uses the mount and can also write inside
the upper directory, in the directories it made through the mount.

Setting, per test: a private base directory (0755, root-owned) holding the
image layout, plain lower directories (the same tree), the upper directory
U, its work directory W, the mountpoint, and a root-owned decoy tree beside
U that no step of nobody's may ever change. The mount is either
  image:     stratafs -o allow_other,upper=U oci:LAYOUT:t M
  lowerdir:  stratafs -o allow_other,lowerdir=L1:L2,upperdir=U,workdir=W none M
  kernel:    mount -t overlay (the reference: the same steps on the kernel
             overlay, which resists each attack)
The image has /etc/secret (0600 root), /pub (0777) with lower files of
nobody's under /pub/a for copy-ups, and /other.
"""
import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from conftest import STRATA, as_uid, is_mounted, run
import ocibuild as ob
import overlaydiff as od

NOBODY = 65534
SECRET = b"TOPSECRET root-only content 5f1e\n"
OUTSIDE_SECRET = b"OUTSIDE-SECRET beside the lowers 9a7c\n"
SETPRIV = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
           "--"]
# how long each race loop runs (STRATA_RACE_SECONDS): the suite's default
# finds a regression of the fixed races within seconds; raise it when
# working on the daemon's upper-directory code
RACE_SECS = float(os.environ.get("STRATA_RACE_SECONDS", "3"))
NFILES = 40             # lower files of nobody's under /pub/a and /pub/a/sub

# (path, kind, mode, uid, gid, data); kind d/f
TREE = [("etc", "d", 0o755, 0, 0, None),
        ("etc/secret", "f", 0o600, 0, 0, SECRET),
        ("etc/hosts", "f", 0o644, 0, 0, b"127.0.0.1 localhost\n"),
        ("other", "f", 0o644, 0, 0, b"other\n"),
        ("pub", "d", 0o777, 0, 0, None),
        ("pub/a", "d", 0o777, 0, 0, None),
        ("pub/a/sub", "d", 0o777, 0, 0, None)]
TREE += [(f"pub/a/f{i}", "f", 0o644, NOBODY, NOBODY, b"lower %d\n" % i)
         for i in range(NFILES)]
TREE += [(f"pub/a/sub/g{i}", "f", 0o644, NOBODY, NOBODY, b"sub %d\n" % i)
         for i in range(NFILES)]


as_nobody = as_uid(NOBODY)


def nobody(*cmd, timeout=60):
    """Run @cmd as nobody; CompletedProcess (text)."""
    return subprocess.run(SETPRIV + [str(c) for c in cmd],
                          capture_output=True, text=True, timeout=timeout,
                          cwd="/")


class Hung(AssertionError):
    pass


def nobody_py(code, timeout=120, mnt=None):
    """Run python @code as nobody; it prints one JSON value, returned.
    A run past @timeout is a hang: the FUSE connection of @mnt is aborted
    (a process blocked in a FUSE request may not even die of SIGKILL) and
    Hung is raised."""
    p = subprocess.Popen(["/usr/bin/python3", "-c", code],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=as_nobody, cwd="/",
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if mnt is not None:
            fuse_abort(mnt)
        kill_group(p)
        raise Hung(f"nobody's process hung for {timeout} s in the mount")
    assert p.returncode == 0, f"nobody's python failed: {err}"
    return json.loads(out.strip().splitlines()[-1])


def nobody_ok(*cmd, timeout=60):
    r = nobody(*cmd, timeout=timeout)
    assert r.returncode == 0, f"{cmd} as nobody: {r.returncode} {r.stderr}"
    return r


def fingerprint(p):
    """Everything about the entry at @p that an attack could change."""
    st = os.lstat(p)
    content = None
    if stat.S_ISREG(st.st_mode):
        content = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        content = os.readlink(p)
    try:
        xs = sorted((x, os.getxattr(p, x, follow_symlinks=False))
                    for x in os.listxattr(p, follow_symlinks=False))
    except OSError:
        xs = []
    return (oct(st.st_mode), st.st_uid, st.st_gid, st.st_size,
            st.st_mtime_ns, content, tuple(xs))


def snap_tree(root):
    """{relpath: fingerprint} of @root and everything below it."""
    root = Path(root)
    out = {"": fingerprint(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = fingerprint(p)
    return out


def tree_diff(a, b):
    keys = sorted(set(a) | set(b))
    return [f"{k or '.'}: {a.get(k)} -> {b.get(k)}" for k in keys
            if a.get(k) != b.get(k)]


def write_tree(root, entries):
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for path, kind, mode, uid, gid, data in entries:
        p = root / path
        if kind == "d":
            p.mkdir(exist_ok=True)
        else:
            p.write_bytes(data)
        os.chown(p, uid, gid)
        os.chmod(p, mode)


def layer_entries(entries):
    out = []
    for path, kind, mode, uid, gid, data in entries:
        if kind == "d":
            out.append(ob.dir_(path, mode=mode, uid=uid, gid=gid))
        else:
            out.append(ob.reg(path, data, mode=mode, uid=uid, gid=gid))
    return out


def bounded(cmd, limit=10, preexec_fn=None):
    """Run @cmd (as root, or with @preexec_fn), allowing it @limit seconds;
    None if it succeeded in time, else what went wrong. A process blocked
    in a FUSE request may survive SIGKILL: it is left to the teardown,
    which aborts the connection."""
    cmd = [str(c) for c in cmd]
    p = subprocess.Popen(["timeout", "-s", "KILL", str(limit)] + cmd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, preexec_fn=preexec_fn,
                         start_new_session=True)
    try:
        _, err = p.communicate(timeout=limit + 20)
    except subprocess.TimeoutExpired:
        kill_group(p)
        return f"`{' '.join(cmd)}` still blocked after {limit + 20} s"
    if p.returncode == -signal.SIGKILL or p.returncode == 137:
        return f"`{' '.join(cmd)}` hung (killed after {limit} s)"
    if p.returncode != 0:
        return f"`{' '.join(cmd)}` exit {p.returncode}: {err.strip()}"
    return None


def kill_group(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            p.kill()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def fuse_abort(mnt):
    """Abort the FUSE connection of @mnt (a hung daemon, e.g. deadlocked on
    its own mount): every waiting request fails, the daemon's threads are
    released. Mounts fusectl if it is not mounted."""
    dev = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            x = line.split()
            if x[4] == os.path.realpath(mnt):
                dev = int(x[2].split(":")[1])
    if dev is None:
        return
    conns = Path("/sys/fs/fuse/connections")
    if not (conns / str(dev)).exists():
        subprocess.run(["mount", "-t", "fusectl", "fusectl", str(conns)],
                       capture_output=True)
    p = conns / str(dev) / "abort"
    if p.exists():
        p.write_text("1")


class Env:
    """One mount (image, lowerdir or kernel) over TREE, with its upper U,
    work W, decoy tree and the root-owned files an attack aims at."""

    def __init__(self, base, mode, mount, ovl_mounts):
        self.base = Path(base)
        self.mode = mode
        self._mount = mount
        self._ovl = ovl_mounts
        self.upper = self.base / "up"
        self.work = self.base / ".up.work"
        self.mnt = self.base / "mnt"
        self.mnt.mkdir()
        self.lowers = self.base / "lowers"
        self.lowers.mkdir()
        os.chmod(self.lowers, 0o755)
        # L1 (top) holds /pub/a/sub, L2 the rest
        top = [e for e in TREE if e[0].startswith("pub/a/sub")]
        rest = [e for e in TREE if not e[0].startswith("pub/a/sub")]
        write_tree(self.lowers / "l1", [e for e in TREE
                                        if e[0] in ("pub", "pub/a")] + top)
        write_tree(self.lowers / "l2", rest)
        # a root-only secret beside the lower directories
        (self.lowers / "secret").write_bytes(OUTSIDE_SECRET)
        os.chmod(self.lowers / "secret", 0o600)
        self.image = ob.build(self.base / "layout",
                              [ob.Layer(layer_entries(TREE))])
        # the decoy: root-owned things outside the mount an attack aims at
        self.decoy = self.base / "decoy"
        self.decoy.mkdir()
        os.chmod(self.decoy, 0o755)
        self.target = self.decoy / "true"
        shutil.copy(shutil.which("true"), self.target)
        os.chmod(self.target, 0o755)
        self.victim = self.decoy / "victim"
        self.victim.write_bytes(b"victim content\n")
        os.chmod(self.victim, 0o644)
        self.xdir = self.decoy / "X"
        (self.xdir / "work").mkdir(parents=True)
        (self.xdir / "work/keep").write_text("keep\n")
        (self.xdir / "file").write_text("file\n")
        for p in [self.decoy] + list(self.decoy.rglob("*")):
            os.lchown(p, 0, 0)
        self.decoy_before = snap_tree(self.decoy)
        if mode != "image":
            self.upper.mkdir()
            self.work.mkdir()
            os.chmod(self.upper, 0o755)

    # --- mounting --------------------------------------------------------
    def opts(self):
        if self.mode == "image":
            return f"allow_other,upper={self.upper}"
        return (f"allow_other,lowerdir={self.lowers / 'l1'}:"
                f"{self.lowers / 'l2'},upperdir={self.upper},"
                f"workdir={self.work}")

    def start(self):
        if self.mode == "kernel":
            self._ovl.kernel([self.lowers / "l1", self.lowers / "l2"],
                             self.upper, self.work, self.mnt,
                             "redirect_dir=on,metacopy=on,index=off")
        elif self.mode == "image":
            self._mount(self.image.ref, opts=self.opts(), mnt=self.mnt)
        else:
            self._mount("none", opts=self.opts(), mnt=self.mnt)
        return self.mnt

    def stop(self):
        """Unmount cleanly and wait for the daemon to exit."""
        if self.mode == "kernel":
            self._ovl.umount(self.mnt)
            return
        pids = od._daemon_pids(self.mnt)
        run(["umount", self.mnt])
        od._wait_gone(pids)
        assert not is_mounted(self.mnt)

    def remount(self):
        self.stop()
        return self.start()

    # --- paths -----------------------------------------------------------
    def m(self, rel):
        return self.mnt / rel

    def u(self, rel):
        return self.upper / rel

    def decoy_changes(self):
        return tree_diff(self.decoy_before, snap_tree(self.decoy))

    def outside_changes(self):
        """Names that appeared in the base directory outside U and W."""
        known = {"up", ".up.work", "mnt", "lowers", "layout", "decoy", "out",
                 "shared"}
        return sorted(set(os.listdir(self.base)) - known)


@pytest.fixture
def base_dir(open_dir):
    """A private 0755 directory (nobody can reach what is made 0755 inside
    it): conftest's open_dir."""
    return open_dir


@pytest.fixture
def make_env(base_dir, mount, ovl_mounts):
    """make_env(mode) -> Env. On teardown, before the mounts are unmounted,
    a daemon that no longer answers (hung by an attack) has its FUSE
    connection aborted, so no process stays blocked in the mount."""
    made = []

    def make(mode):
        made.append(Env(base_dir, mode, mount, ovl_mounts))
        return made[-1]
    yield make
    for env in made:
        if env.mode != "kernel" and is_mounted(env.mnt):
            r = subprocess.run(["timeout", "-s", "KILL", "10", "stat",
                                str(env.mnt / "other")], capture_output=True)
            if r.returncode != 0:
                fuse_abort(env.mnt)


def nobody_made_dir(env, rel="pub/d"):
    """nobody mkdirs M/@rel through the mount: U/@rel is nobody's own."""
    nobody_ok("mkdir", env.m(rel))
    st = os.lstat(env.u(rel))
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), \
        f"U/{rel} is {st.st_uid}:{st.st_gid}, not nobody's"


# ---------------------------------------------------------------------------
# 1. operations through the mount follow a symlink planted in the upper

SYMLINK_OPS = {
    # name: (command as nobody on M/pub/d/y, which decoy file is aimed at)
    "chmod": (lambda y: ["chmod", "04755", y], "target"),
    "chown": (lambda y: ["chown", "65534:65534", y], "target"),
    "utimens": (lambda y: ["touch", "-d", "2001-02-03 04:05:06", y],
                "target"),
    "setxattr": (lambda y: ["setfattr", "-n", "user.x", "-v", "1", y],
                 "victim"),
    "truncate": (lambda y: ["truncate", "-s", "0", y], "victim"),
    "write": (lambda y: ["/usr/bin/python3", "-c",
                         "import os,sys\n"
                         f"fd = os.open({str(y)!r}, os.O_WRONLY)\n"
                         "os.write(fd, b'PWNED')\nos.close(fd)"], "victim"),
}


@pytest.mark.parametrize("mode", ["image", "lowerdir", "kernel"])
@pytest.mark.parametrize("op", sorted(SYMLINK_OPS))
def test_op_follows_planted_symlink(make_env, mode, op):
    env = make_env(mode)
    env.start()
    nobody_made_dir(env)
    y = env.m("pub/d/y")
    nobody_ok("touch", y)
    nobody_ok("stat", y)           # the kernel knows y as a regular file
    cmd, aim = SYMLINK_OPS[op]
    aimed = env.target if aim == "target" else env.victim
    # directly in U: y becomes a symlink to a root-owned file outside
    nobody_ok("rm", env.u("pub/d/y"))
    nobody_ok("ln", "-s", aimed, env.u("pub/d/y"))
    before = fingerprint(aimed)
    r = nobody(*cmd(y))
    after = fingerprint(aimed)
    assert after == before, (
        f"{mode}: `{op}` of M/pub/d/y as nobody (exit {r.returncode}) "
        f"changed the root-owned {aimed} through the planted symlink: "
        f"{before} -> {after}")
    assert not env.decoy_changes(), env.decoy_changes()


@pytest.mark.parametrize("mode", ["image", "lowerdir", "kernel"])
def test_setid_create_races_symlink_swap(make_env, mode):
    """nobody creates files with setuid/setgid/sticky bits through the
    mount while another nobody process replaces each new upper file by a
    symlink to a root-owned file: the mode or owner the daemon sets after
    the create must never reach the target (bounded loop)."""
    env = make_env(mode)
    env.start()
    nobody_made_dir(env)
    d_m, d_u = env.m("pub/d"), env.u("pub/d")
    swapper = subprocess.Popen(
        ["/usr/bin/python3", "-c", f"""
import os, time
d = {str(d_u)!r}; t = {str(env.target)!r}
end = time.monotonic() + {RACE_SECS}
n = 0
while time.monotonic() < end:
    for name in os.listdir(d):
        if name.startswith("s") and not name.startswith("sl"):
            p = os.path.join(d, name)
            if not os.path.islink(p):
                tmp = os.path.join(d, "sl" + name)
                try:
                    os.symlink(t, tmp)
                    os.rename(tmp, p)
                    n += 1
                except OSError:
                    pass
print(n)
"""], preexec_fn=as_nobody, stdout=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        creator = subprocess.run(["/usr/bin/python3", "-c", f"""
import os, time
d = {str(d_m)!r}
end = time.monotonic() + {RACE_SECS}
i = 0
# at most 8000 files: the kernel overlay makes them fast enough that
# removing them took longer than the race itself
while time.monotonic() < end and i < 8000:
    for m in (0o6755, 0o4755, 0o2755, 0o1777):
        try:
            fd = os.open(os.path.join(d, "s%d" % i),
                         os.O_CREAT | os.O_EXCL | os.O_WRONLY, m)
            os.close(fd)
        except OSError:
            pass
        i += 1
print(i)
"""], preexec_fn=as_nobody, capture_output=True, text=True, timeout=60,
            cwd="/")
        assert creator.returncode == 0, creator.stderr
        swapper.wait(timeout=60)
    finally:
        kill_group(swapper)
    changes = env.decoy_changes()
    assert not changes, (
        f"{mode}: setid creates racing symlink swaps in U changed root's "
        f"files outside the mount: {changes}")


# ---------------------------------------------------------------------------
# 2. forged user.overlay.redirect / metacopy in the upper

def readable_by_nobody(mnt_dir, mnt):
    """What nobody sees under @mnt_dir: {name: content or errno name}."""
    return nobody_py(f"""
import os, json, errno
d = {str(mnt_dir)!r}
out = {{}}
try:
    names = sorted(os.listdir(d))
except OSError as e:
    names = []
    out["<listdir>"] = errno.errorcode[e.errno]
for n in names:
    p = os.path.join(d, n)
    try:
        with open(p, "rb") as f:
            out[n] = f.read(4096).decode("latin-1")
    except OSError as e:
        out[n] = errno.errorcode[e.errno]
print(json.dumps(out))
""", timeout=30, mnt=mnt)


REDIRECT_CASES = [
    # (mode, redirect value, secret expected at, metacopy file name)
    ("image", "/etc", SECRET, "secret"),
    ("kernel", "/etc", SECRET, "secret"),
    ("lowerdir", "/etc", SECRET, "secret"),
    ("lowerdir", "/..", OUTSIDE_SECRET, "secret"),
    ("lowerdir", "/../..", OUTSIDE_SECRET, "secret"),
    ("lowerdir", "../..", OUTSIDE_SECRET, "secret"),
    ("lowerdir", "../../..", OUTSIDE_SECRET, "secret"),
    ("kernel", "/..", OUTSIDE_SECRET, "secret"),
]


@pytest.mark.parametrize("metacopy", [False, True],
                         ids=["redirect", "redirect+metacopy"])
@pytest.mark.parametrize("mode,redirect,secret,name", REDIRECT_CASES,
                         ids=[f"{c[0]}:{c[1]}" for c in REDIRECT_CASES])
def test_forged_overlay_xattrs(make_env, mode, redirect, secret, name,
                               metacopy):
    env = make_env(mode)
    env.start()
    nobody_made_dir(env)
    ud = env.u("pub/d")
    nobody_ok("setfattr", "-n", "user.overlay.redirect", "-v", redirect, ud)
    if metacopy:
        # a sparse file of nobody's, marked as a metacopy of the lower
        # file of the same name in the redirected directory
        nobody_ok("truncate", "-s", str(len(secret)), ud / name)
        nobody_ok("setfattr", "-n", "user.overlay.metacopy", "-v", "",
                  ud / name)
        if mode != "kernel":
            nobody_ok("setfattr", "-n", "user.overlay.strata.ino", "-v",
                      "12345", ud / name)
    env.remount()             # the attacker waits for a remount
    try:
        seen = readable_by_nobody(env.m("pub/d"), env.mnt)
    except Hung as e:
        raise AssertionError(
            f"{mode}: forged user.overlay.redirect={redirect!r}: listing "
            f"M/pub/d as nobody hangs the daemon ({e})") from None
    leaked = {n: v for n, v in seen.items()
              if secret.decode().strip() in v}
    assert not leaked, (
        f"{mode}: forged user.overlay.redirect={redirect!r}"
        f"{' + metacopy' if metacopy else ''} let nobody read root-only "
        f"content through M/pub/d: {leaked}")
    in_upper = sorted(os.listdir(ud))
    assert sorted(seen) == in_upper, (
        f"{mode}: forged user.overlay.redirect={redirect!r} is trusted: "
        f"M/pub/d lists {sorted(seen)}, its upper directory holds only "
        f"{in_upper}")


# ---------------------------------------------------------------------------
# 3. a forged user.containers.override_stat reaches the commit

def last_layer(layout, tag):
    """{name: TarInfo} of the top layer of @layout:@tag, read with python's
    tarfile (an independent reader)."""
    layout = Path(layout)

    def blob(d):
        a, h = d.split(":", 1)
        return (layout / "blobs" / a / h).read_bytes()
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get(ob.REF_NAME) == tag)
    manifest = json.loads(blob(desc["digest"]))
    ld = manifest["layers"][-1]
    data = blob(ld["digest"])
    if ld["mediaType"].endswith("gzip"):
        data = gzip.decompress(data)
    elif ld["mediaType"].endswith("zstd"):
        data = subprocess.run(["zstd", "-dc"], input=data,
                              capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {m.name.lstrip("./").rstrip("/"): m for m in t.getmembers()}


def assert_nobodys(entries, name, what):
    assert name in entries, f"{what}: {name} is not in the layer: " \
        f"{sorted(entries)}"
    ti = entries[name]
    assert (ti.uid, ti.gid, ti.mode & 0o7000) == (NOBODY, NOBODY, 0), (
        f"{what}: nobody's file {name} was committed as "
        f"{ti.uid}:{ti.gid} mode {oct(ti.mode)} (a forged "
        f"user.containers.override_stat was trusted)")


@pytest.mark.parametrize("mode", ["image", "lowerdir"])
def test_forged_override_stat(make_env, strata, mode):
    env = make_env(mode)
    env.start()
    nobody_made_dir(env)
    evil = env.u("pub/d/evil")
    nobody_ok("cp", env.target, evil)
    nobody_ok("chmod", "0755", evil)
    nobody_ok("setfattr", "-n", "user.containers.override_stat", "-v",
              "0:0:0104755", evil)
    r = nobody("stat", "-c", "%u:%g:%a", env.m("pub/d/evil"))
    assert r.returncode == 0, r.stderr
    shown = r.stdout.strip()
    out = env.base / "out"
    problems = []
    if shown != "65534:65534:755":
        problems.append(f"stat through the mount shows {shown}")

    def committed(tag, what, *args):
        rc = strata("commit", *args, f"oci:{out}:{tag}", check=False)
        assert rc.returncode == 0, rc.stderr
        try:
            assert_nobodys(last_layer(out, tag), "pub/d/evil", what)
        except AssertionError as e:
            problems.append(str(e).splitlines()[0])
    if mode == "image":
        committed("live", "live commit", env.mnt)
    env.stop()
    committed("upper", "commit --upper", "--upper", env.upper, "--from",
              env.image.ref)
    assert not problems, f"{mode}: " + "; ".join(problems)


# ---------------------------------------------------------------------------
# 4. a fifo planted in the upper hangs the whole mount

@pytest.fixture
def fifo_cleanup():
    """Register (mnt, fifo, procs); on teardown: open the fifo for writing
    (releases a daemon blocked opening it), kill the processes, and abort
    the FUSE connection of a daemon still hung, before the mount fixture
    unmounts."""
    state = {"procs": [], "fifos": [], "mnts": []}
    yield state
    writers = []
    for f in state["fifos"]:
        try:
            writers.append(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    for p in state["procs"]:
        kill_group(p)
    for w in writers:
        os.close(w)
    for m in state["mnts"]:
        if not is_mounted(m):
            continue
        r = subprocess.run(["timeout", "-s", "KILL", "10", "stat", "-f",
                            str(m)], capture_output=True)
        if r.returncode != 0:
            fuse_abort(m)
        subprocess.run(["umount", "-l", str(m)], capture_output=True)
        pids = od._daemon_pids(m)
        od._wait_gone(pids, 10)
        for pid in od._daemon_pids(m):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize("mode", ["image", "lowerdir", "kernel"])
def test_planted_fifo_hangs_mount(make_env, fifo_cleanup, mode):
    env = make_env(mode)
    env.start()
    fifo_cleanup["mnts"].append(env.mnt)
    f = env.m("pub/f")
    nobody_ok("sh", "-c", f"echo data > {f}")
    nobody_ok("stat", f)
    nobody_ok("rm", env.u("pub/f"))
    nobody_ok("mkfifo", env.u("pub/f"))
    fifo_cleanup["fifos"].append(env.u("pub/f"))
    reader = subprocess.Popen(SETPRIV + ["timeout", "-s", "KILL", "60",
                                         "cat", str(f)],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              start_new_session=True)
    fifo_cleanup["procs"].append(reader)
    time.sleep(1)       # let the reader's open reach the daemon
    hung = []
    for cmd in (["ls", env.m("etc")], ["stat", env.m("other")],
                ["cat", env.m("etc/hosts")]):
        err = bounded(cmd)
        if err:
            hung.append(err)
            break           # the next ones would wait on the same hang
    assert not hung, (
        f"{mode}: a fifo nobody planted at U/pub/f, opened by a reader "
        f"through the mount, hangs root's requests: {hung}")


# ---------------------------------------------------------------------------
# 5. the default work directory .NAME.work, pre-made by nobody in a shared
#    1777 directory

@pytest.mark.parametrize("plant", ["symlink", "nobodys-dir"])
def test_default_workdir_planted(make_env, mount, plant):
    env = make_env("image")
    shared = env.base / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    work = shared / ".up.work"
    if plant == "symlink":
        nobody_ok("ln", "-s", env.xdir, work)
    else:
        nobody_ok("mkdir", work)
        nobody_ok("mkdir", work / "work")
        nobody_ok("touch", work / "work/keep")
    planted = fingerprint(work)
    r = mount(env.image.ref, opts=f"allow_other,upper={shared / 'up'}",
              mnt=env.mnt, check=False)
    if r.returncode == 0:
        # mounted: make it build copy-ups in its work directory
        run(["sh", "-c", f"echo more >> {env.m('etc/hosts')}"])
        run(["chmod", "0640", env.m("other")])
        run(["mkdir", env.m("pub/a/newdir")])
    changes = env.decoy_changes()
    assert not changes, (
        f"the mount (exit {r.returncode}) used {work}, a symlink nobody "
        f"planted to {env.xdir}, as its work directory: root's files "
        f"changed: {changes}")
    if plant == "nobodys-dir":
        assert r.returncode != 0, (
            f"stratafs mounted with {work}, a work directory owned by "
            f"nobody (who can then swap what root builds in it)")
        assert fingerprint(work) == planted
        assert (work / "work/keep").exists()


# ---------------------------------------------------------------------------
# 6. what holds today and must keep holding

@pytest.mark.parametrize("mode", ["image", "lowerdir", "kernel"])
def test_nobodys_entries_are_nobodys(make_env, mode):
    env = make_env(mode)
    env.start()
    nobody_made_dir(env)
    nobody_ok("touch", env.m("pub/d/file"))
    nobody_ok("mkdir", env.m("pub/d/dir"))
    nobody_ok("ln", "-s", "file", env.m("pub/d/sym"))
    nobody_ok("mkfifo", env.m("pub/d/fifo"))
    nobody_ok("ln", env.m("pub/d/file"), env.m("pub/d/link"))
    nobody_ok("touch", env.m("pub/top"))
    nobody_ok("sh", "-c", f"echo x >> {env.m('pub/a/f1')}")  # copy-up
    names = ["pub/d", "pub/d/file", "pub/d/dir", "pub/d/sym", "pub/d/fifo",
             "pub/d/link", "pub/top", "pub/a/f1"]
    seen = nobody_py(f"""
import os, json
m = {str(env.mnt)!r}
print(json.dumps({{n: list(os.lstat(os.path.join(m, n))[4:6])
                  for n in {names!r}}}))
""", mnt=env.mnt)
    bad = {n: v for n, v in seen.items() if v != [NOBODY, NOBODY]}
    assert not bad, f"{mode}: nobody's entries shown with other owners: {bad}"
    bad = {n: (os.lstat(env.u(n)).st_uid, os.lstat(env.u(n)).st_gid)
           for n in names
           if (os.lstat(env.u(n)).st_uid, os.lstat(env.u(n)).st_gid) !=
           (NOBODY, NOBODY)}
    assert not bad, f"{mode}: nobody's entries owned by others in U: {bad}"


@pytest.mark.parametrize("mode", ["image", "lowerdir", "kernel"])
def test_hardlink_to_root_only_file_refused(make_env, mode):
    if Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "0":
        pytest.skip("fs.protected_hardlinks is 0")
    env = make_env(mode)
    env.start()
    got = nobody_py(f"""
import os, json, errno
try:
    os.link({str(env.m('etc/secret'))!r}, {str(env.m('pub/x'))!r})
    print(json.dumps(None))
except OSError as e:
    print(json.dumps(errno.errorcode[e.errno]))
""", mnt=env.mnt)
    assert got == "EPERM", f"{mode}: ln M/etc/secret M/pub/x as nobody: {got}"
    assert not os.path.lexists(env.m("pub/x"))
    assert not os.path.lexists(env.u("pub/x"))


@pytest.mark.parametrize("mode", ["image", "lowerdir", "kernel"])
def test_privileged_xattrs_refused(make_env, mode):
    env = make_env(mode)
    env.start()
    own = env.m("pub/own")
    nobody_ok("touch", own)
    got = nobody_py(f"""
import os, json, errno
out = {{}}
for name in ("trusted.x", "security.x", "trusted.overlay.redirect",
             "trusted.overlay.metacopy"):
    try:
        os.setxattr({str(own)!r}, name, b"1")
        out[name] = None
    except OSError as e:
        out[name] = errno.errorcode[e.errno]
print(json.dumps(out))
""", mnt=env.mnt)
    bad = {k: v for k, v in got.items() if v != "EPERM"}
    assert not bad, f"{mode}: privileged xattrs set by nobody: {bad}"
    xs = os.listxattr(env.u("pub/own"), follow_symlinks=False)
    assert not [x for x in xs if x.startswith(("trusted.x", "security.x"))]


SWAPPER = """
import os, sys, time
pub, target, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
real, tmp = os.path.join(pub, ".a-real"), os.path.join(pub, ".a-sym")
a = os.path.join(pub, "a")
end = time.monotonic() + secs
n = 0
while time.monotonic() < end:
    try:
        os.rename(a, real)              # U/pub/a: directory -> symlink
        os.symlink(target, tmp)
        os.rename(tmp, a)
        n += 1
        os.unlink(a)                    # and back
        os.rename(real, a)
    except OSError:
        if not os.path.lexists(a) and os.path.lexists(real):
            os.rename(real, a)
        for p in (tmp,):
            if os.path.islink(p):
                os.unlink(p)
# leave the directory in place
if os.path.islink(a):
    os.unlink(a)
if os.path.lexists(real) and not os.path.lexists(a):
    os.rename(real, a)
print(n)
"""

COPYUPS = """
import os, sys, time
m, secs = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + secs
i = 0
while time.monotonic() < end:
    for rel in ("pub/a/f%d" % (i % 40), "pub/a/sub/g%d" % (i % 40)):
        p = os.path.join(m, rel)
        for op in (lambda: os.chmod(p, 0o4755),
                   lambda: os.utime(p, (1, 1)),
                   lambda: os.setxattr(p, "user.k", b"v"),
                   lambda: open(p, "ab").write(b"more"),
                   lambda: os.truncate(p, 3)):
            try:
                op()
            except OSError:
                pass
    for rel in ("pub/a/n%d" % i, "pub/a/sub/n%d" % i):
        try:
            os.close(os.open(os.path.join(m, rel),
                             os.O_CREAT | os.O_WRONLY, 0o6755))
            os.mkdir(os.path.join(m, rel + ".d"))
            os.rename(os.path.join(m, rel), os.path.join(m, rel + ".r"))
        except OSError:
            pass
    i += 1
print(i)
"""


@pytest.mark.parametrize("mode", ["image", "lowerdir"])
def test_parent_swap_races_copyup(make_env, mode):
    env = make_env(mode)
    env.start()
    nobody_ok("chmod", "0644", env.m("pub/a/f0"))    # U/pub/a now exists
    assert env.u("pub/a").is_dir()
    secs = RACE_SECS * 1.5
    swapper = subprocess.Popen(
        ["/usr/bin/python3", "-c", SWAPPER, str(env.u("pub")),
         str(env.xdir), str(secs)], preexec_fn=as_nobody,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        err = bounded(["/usr/bin/python3", "-c", COPYUPS, env.mnt, secs],
                      limit=secs + 60, preexec_fn=as_nobody)
        out, serr = swapper.communicate(timeout=secs + 60)
    finally:
        kill_group(swapper)
    assert err is None, f"{mode}: copy-ups during the swaps: {err}"
    assert int(out) > 0, f"the swapper never swapped: {serr}"
    changes = env.decoy_changes()
    assert not changes, (
        f"{mode}: swapping U/pub/a with a symlink to {env.xdir} during "
        f"copy-ups changed root's files outside U: {changes}")
    assert not env.outside_changes(), env.outside_changes()
    assert bounded(["stat", env.m("other")]) is None


# ---------------------------------------------------------------------------
# 7. stress: everything at once, with a live commit

FILE_SWAPPER = """
import os, sys, time
d, secs = sys.argv[1], float(sys.argv[2])
targets = sys.argv[3:]
end = time.monotonic() + secs
n = 0
while time.monotonic() < end:
    try:
        names = os.listdir(d)
    except OSError:
        continue
    for name in names:
        if name.startswith(".sw"):
            continue
        p = os.path.join(d, name)
        tmp = os.path.join(d, ".sw" + name)
        try:
            if os.path.islink(p) or os.path.isdir(p):
                continue
            os.symlink(targets[n % len(targets)], tmp)
            os.rename(tmp, p)
            n += 1
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
print(n)
"""

OPS_IN_D = """
import os, sys, time
d, secs, tag = sys.argv[1], float(sys.argv[2]), sys.argv[3]
end = time.monotonic() + secs
i = 0
while time.monotonic() < end:
    p = os.path.join(d, "%s%d" % (tag, i))
    for op in (lambda: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o6755)),
               lambda: os.chmod(p, 0o4755),
               lambda: os.chown(p, 65534, 65534),
               lambda: os.utime(p, (2, 2)),
               lambda: os.setxattr(p, "user.k", b"v"),
               lambda: os.truncate(p, 0),
               lambda: open(p, "ab").write(b"PWNED"),
               lambda: os.rename(p, p + ".r"),
               lambda: os.chmod(p + ".r", 0o2755),
               lambda: os.mkdir(p + ".d", 0o7777),
               lambda: os.symlink("x", p + ".s")):
        try:
            op()
        except OSError:
            pass
    i += 1
print(i)
"""


def test_stress_hostile_user(make_env, strata):
    env = make_env("image")
    env.start()
    nobody_made_dir(env)
    nobody_ok("chmod", "0644", env.m("pub/a/f0"))    # U/pub/a exists
    secs = RACE_SECS * 3
    py = "/usr/bin/python3"
    procs = [
        [py, "-c", SWAPPER, env.u("pub"), env.xdir, secs],
        [py, "-c", FILE_SWAPPER, env.u("pub/d"), secs, env.target,
         env.victim, env.xdir],
        [py, "-c", FILE_SWAPPER, env.u("pub/a"), secs, env.target,
         env.victim],
        [py, "-c", COPYUPS, env.mnt, secs],
        [py, "-c", OPS_IN_D, env.m("pub/d"), secs, "p"],
        [py, "-c", OPS_IN_D, env.m("pub/d"), secs, "q"],
    ]
    running = [subprocess.Popen([str(c) for c in cmd], preexec_fn=as_nobody,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                start_new_session=True, cwd="/")
               for cmd in procs]
    out = env.base / "out"
    try:
        # a commit may fail cleanly while nobody changes U under it
        # (one "strata: " line); try a few times for a layer to check
        for attempt in range(4):
            time.sleep(secs / 5)
            commit = subprocess.run([str(STRATA), "commit", str(env.mnt),
                                     f"oci:{out}:stress"],
                                    capture_output=True, text=True,
                                    timeout=secs + 120)
            if commit.returncode == 0:
                break
            assert commit.returncode == 1 and \
                commit.stderr.startswith("strata: ") and \
                commit.stderr.count("\n") == 1, \
                f"live commit crashed: {commit.returncode} {commit.stderr}"
        stuck = []
        for p in running:
            try:
                p.communicate(timeout=secs + 60)
            except subprocess.TimeoutExpired:
                stuck.append(p.args[:3])
    finally:
        for p in running:
            kill_group(p)
    problems = []
    if stuck:
        problems.append(f"processes stuck in the mount: {stuck}")
    changes = env.decoy_changes()
    if changes:
        problems.append(f"root's decoy tree beside U changed: {changes[:5]}")
    if env.outside_changes():
        problems.append(f"new names beside U: {env.outside_changes()}")
    dead = bounded(["stat", env.m("other")])
    if dead:
        problems.append(f"the mount does not answer: {dead}")
    if commit.returncode == 0:
        layer = last_layer(out, "stress")
        image_root = {"pub", "pub/a", "pub/a/sub"}
        for name, ti in sorted(layer.items()):
            if not name.startswith("pub/") and name != "pub":
                continue
            base = name.rsplit("/", 1)[-1]
            if base.startswith(".wh."):
                continue
            # the swapper renames U/pub/a (the copy-up of the image's
            # root-owned pub/a) to U/pub/.a-real: still the image's
            orig = name.replace("pub/.a-real", "pub/a", 1)
            if orig not in image_root and (ti.uid == 0 or ti.gid == 0):
                problems.append(f"layer: {name} is {ti.uid}:{ti.gid} "
                                f"mode {oct(ti.mode)}, made by nobody")
            if ti.mode & 0o6000 and (ti.uid == 0 or ti.gid == 0):
                problems.append(f"layer: set-id {name} owned by "
                                f"{ti.uid}:{ti.gid}")
            # (nobody's own swap symlinks may take these names)
            if not ti.issym() and name.startswith(
                    ("pub/a/work", "pub/a/file", "pub/.a-real/work",
                     "pub/.a-real/file")):
                parent = layer.get(name.rsplit("/", 1)[0])
                problems.append(
                    f"layer: {name} (type {ti.type!r}, {ti.uid}:{ti.gid}, "
                    f"size {ti.size}) is root's {env.xdir}/{base} from "
                    f"outside the upper (its parent in the layer: type "
                    f"{parent.type if parent else None!r} -> "
                    f"{parent.linkname if parent else None!r})")
    assert not problems, "hostile user stress:\n" + "\n".join(problems[:30])
