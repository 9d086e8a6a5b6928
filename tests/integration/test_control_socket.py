"""The live-commit control socket of a writable mount is trustworthy:
`strata commit MOUNTPOINT` talks only to the process that owns the mount
(SO_PEERCRED against the mount's user_id= in /proc/self/mountinfo), the
daemon listens in a directory only the mount's owner can write
(/run/stratafs for root, $XDG_RUNTIME_DIR/stratafs for a user), and a
daemon that cannot own its socket fails before mounting. The squatters run
as uid 65534 (setpriv); what gets committed is read back with umoci."""
import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import STRATA, STRATAFS, is_mounted, run, umoci_rootfs, unmount

NOBODY = 65534
ROOT_DIR = Path("/run/stratafs")

# A fake stratafs control server: binds @name (abstract when it starts with
# "@", else a path), prints "ready", answers info with the upper directory
# it was given, and says ok to everything else.
SQUATTER = r"""
import json, os, socket, sys
name, upper, ref, store = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.bind("\0" + name[1:] if name.startswith("@") else name)
except OSError as e:
    print("bind-errno", e.errno, flush=True)
    sys.exit(0)
s.listen(4)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    f = c.makefile("rwb", buffering=0)
    for line in f:
        line = line.decode().strip()
        if line == "info":
            info = {"mountpoint": "", "ref": ref, "manifest": "",
                    "store": store, "upper": upper, "work": "",
                    "pid": os.getpid()}
            f.write(json.dumps(info).encode() + b"\n")
        else:
            f.write(b"ok\n")
    c.close()
"""


def sock_hash(mnt):
    return hashlib.sha256(os.path.realpath(mnt).encode()).hexdigest()


def as_user(uid, cmd, **kw):
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}",
            "--clear-groups", *[str(c) for c in cmd]]


@pytest.fixture
def squatter():
    """squatter(name, upper, ref, store, uid=65534) -> Popen, or the bind
    errno when the name could not be bound. Killed in the finalizer."""
    procs = []

    def start(name, upper, ref, store, uid=NOBODY):
        cmd = ["/usr/bin/python3", "-c", SQUATTER, name, upper, ref, store]
        if uid != 0:
            cmd = as_user(uid, cmd)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        line = p.stdout.readline().split()
        if line and line[0] == "bind-errno":
            return int(line[1])
        assert line == ["ready"], line
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()




@pytest.fixture
def nobody_dir():
    """A directory tree nobody owns, below a directory nobody can reach."""
    d = Path(tempfile.mkdtemp(prefix="strata-ctl-nobody-"))
    os.chmod(d, 0o755)
    for sub in ("store", "upper", "mnt", "run"):
        (d / sub).mkdir()
    os.chmod(d / "run", 0o700)
    run(["chown", "-R", f"{NOBODY}:{NOBODY}", d])
    yield d
    unmount(d / "mnt")
    shutil.rmtree(d, ignore_errors=True)


def base(root):
    (root / "etc").mkdir()
    (root / "etc/motd").write_text("hello\n")


def layout_state(layout):
    """Everything a commit would change in an OCI layout."""
    return ((Path(layout) / "index.json").read_bytes(),
            sorted(os.listdir(Path(layout) / "blobs/sha256")))


def secret_dir(tmp_path):
    """A root-only directory a squatter names as the mount's upper."""
    d = tmp_path / "secret"
    d.mkdir(mode=0o700)
    (d / "shadow").write_text("root only\n")
    return d


def nobody_layout(umoci_image, nobody_dir):
    layout, tag = umoci_image([base])
    lay = nobody_dir / "layout"
    shutil.copytree(layout, lay)
    run(["chown", "-R", f"{NOBODY}:{NOBODY}", lay])
    return lay, tag


def nobody_env(nobody_dir, xdg=True):
    env = dict(os.environ, STRATA_ROOT=str(nobody_dir / "store"),
               HOME=str(nobody_dir))
    env.pop("XDG_RUNTIME_DIR", None)
    if xdg:
        env["XDG_RUNTIME_DIR"] = str(nobody_dir / "run")
    return env


def nobody_stratafs(nobody_dir, lay, tag, env):
    return subprocess.run(as_user(NOBODY, [
        STRATAFS, "-o", f"upper={nobody_dir / 'upper'}",
        f"oci:{lay}:{tag}", nobody_dir / "mnt"]),
        capture_output=True, text=True, env=env)


# ---- root's mount ------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["commit", "diff", "export"])
def test_commit_refuses_a_squatter(umoci_image, mount, squatter, tmp_path,
                                   cmd):
    """A squatter that answers for root's mount (here: on the abstract name,
    with the daemon's own socket gone) is refused by commit, diff and
    export of the mount: the peer is uid 65534, the mount's owner is root.
    Nothing is written, nothing of the squatter's upper is read."""
    layout, tag = umoci_image([base])
    store = tmp_path / "store"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    secret = secret_dir(tmp_path)
    sq = squatter("@stratafs-control/" + sock_hash(mnt), str(secret),
                  f"oci:{layout}:{tag}", str(store))
    assert not isinstance(sq, int), "the squatter could not bind"
    mount(f"oci:{layout}:{tag}", opts=f"upper={tmp_path}/up", mnt=mnt)
    (mnt / "etc/new").write_text("new\n")
    # the daemon's own socket, if any, is gone: the client is left with
    # the squatter
    (ROOT_DIR / sock_hash(mnt)).unlink(missing_ok=True)
    before = layout_state(layout)
    out = tmp_path / "export.tar"
    args = {"commit": [mnt, ":evil"], "diff": [mnt],
            "export": [mnt, out]}[cmd]
    r = run([STRATA, cmd] + args, check=False)
    assert r.returncode != 0, r.stderr
    assert str(mnt) in r.stderr and str(NOBODY) in r.stderr, r.stderr
    assert "shadow" not in r.stdout
    assert layout_state(layout) == before
    assert not out.exists()


def test_daemon_socket_is_owner_only(umoci_image, mount, squatter, tmp_path):
    """The squatter holds the abstract name first: root's daemon listens in
    /run/stratafs, where uid 65534 can neither bind nor connect, and the
    commit packs the mount's real upper directory."""
    layout, tag = umoci_image([base])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    secret = secret_dir(tmp_path)
    sq = squatter("@stratafs-control/" + sock_hash(mnt), str(secret),
                  f"oci:{layout}:{tag}", str(tmp_path / "store"))
    assert not isinstance(sq, int), "the squatter could not bind"
    mount(f"oci:{layout}:{tag}", opts=f"upper={tmp_path}/up", mnt=mnt)
    d = os.lstat(ROOT_DIR)
    assert stat.S_ISDIR(d.st_mode) and d.st_uid == 0
    assert stat.S_IMODE(d.st_mode) & 0o077 == 0
    sock = ROOT_DIR / sock_hash(mnt)
    s = os.lstat(sock)
    assert stat.S_ISSOCK(s.st_mode) and s.st_uid == 0
    # uid 65534 can neither take a name there nor reach the socket
    assert squatter(str(ROOT_DIR / (sock_hash(mnt) + ".x")), str(secret),
                    "", "") == errno.EACCES
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
             "try:\n s.connect(sys.argv[1])\nexcept OSError as e:\n"
             " print(e.errno)\n")
    r = run(as_user(NOBODY, ["/usr/bin/python3", "-c", probe, sock]))
    assert r.stdout.strip() == str(errno.EACCES)
    (mnt / "etc/new").write_text("new\n")
    run([STRATA, "commit", mnt, ":good"])
    got = umoci_rootfs(layout, "good", tmp_path / "u")
    assert (got / "etc/new").read_text() == "new\n"
    assert not (got / "shadow").exists()
    # the daemon removes its socket on the way out
    c = socket.socket(socket.AF_UNIX)
    c.connect(str(sock))
    pid = struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET,
                                           socket.SO_PEERCRED, 12))[0]
    c.close()
    unmount(mnt)
    while os.path.exists(f"/proc/{pid}") and \
            not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z"):
        time.sleep(0.05)
    assert not sock.exists(), "the daemon left its socket behind"


# ---- a user's mount ----------------------------------------------------------

@pytest.mark.parametrize("plant", ["symlink", "foreign", "writable"])
def test_daemon_refuses_unsafe_socket_dir(umoci_image, nobody_dir,
                                          dev_fuse_open, tmp_path, plant):
    """$XDG_RUNTIME_DIR/stratafs is a symlink, another user's directory, or
    writable by others: stratafs says so and exits non-zero, no mount."""
    lay, tag = nobody_layout(umoci_image, nobody_dir)
    d = nobody_dir / "run/stratafs"
    if plant == "symlink":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o777)
        os.chmod(elsewhere, 0o777)
        d.symlink_to(elsewhere)
    elif plant == "foreign":
        d.mkdir(mode=0o755)
        os.chmod(d, 0o777)
        os.chown(d, 1234, 1234)
    else:
        d.mkdir()
        os.chmod(d, 0o777)
        os.chown(d, NOBODY, NOBODY)
    r = nobody_stratafs(nobody_dir, lay, tag, nobody_env(nobody_dir))
    assert r.returncode != 0, r.stderr
    assert str(d) in r.stderr, r.stderr
    assert not is_mounted(nobody_dir / "mnt")


def test_daemon_fails_when_its_name_is_taken(umoci_image, nobody_dir,
                                             dev_fuse_open, squatter):
    """No runtime directory: the abstract name, held by someone else. The
    daemon fails loudly instead of mounting with a squatted socket."""
    lay, tag = nobody_layout(umoci_image, nobody_dir)
    mnt = nobody_dir / "mnt"
    sq = squatter("@stratafs-control/" + sock_hash(mnt), "/", "", "", uid=0)
    assert not isinstance(sq, int)
    r = nobody_stratafs(nobody_dir, lay, tag, nobody_env(nobody_dir, False))
    assert r.returncode != 0, r.stderr
    assert "control socket" in r.stderr and str(mnt) in r.stderr, r.stderr
    assert not is_mounted(mnt)


def test_user_commits_own_mount(umoci_image, nobody_dir, dev_fuse_open,
                                tmp_path):
    """uid 65534 mounts and commits its own mount through the socket in its
    own $XDG_RUNTIME_DIR/stratafs."""
    lay, tag = nobody_layout(umoci_image, nobody_dir)
    env = nobody_env(nobody_dir)
    mnt = nobody_dir / "mnt"
    r = nobody_stratafs(nobody_dir, lay, tag, env)
    assert r.returncode == 0, r.stderr
    try:
        d = os.lstat(nobody_dir / "run/stratafs")
        assert stat.S_ISDIR(d.st_mode) and d.st_uid == NOBODY
        assert stat.S_IMODE(d.st_mode) & 0o077 == 0
        s = os.lstat(nobody_dir / "run/stratafs" / sock_hash(mnt))
        assert stat.S_ISSOCK(s.st_mode) and s.st_uid == NOBODY
        run(as_user(NOBODY, ["sh", "-c", f"echo mine > {mnt}/etc/mine"]))
        r = run(as_user(NOBODY, [STRATA, "commit", mnt, ":mine"]),
                check=False, env=env)
        assert r.returncode == 0, r.stderr
    finally:
        unmount(mnt)
    got = umoci_rootfs(lay, "mine", tmp_path / "u")
    assert (got / "etc/mine").read_text() == "mine\n"


def test_root_commits_a_user_mount(umoci_image, nobody_dir, dev_fuse_open,
                                   tmp_path):
    """root commits uid 65534's mount (abstract name, no runtime
    directory): the peer is the mount's owner, so it is accepted."""
    lay, tag = nobody_layout(umoci_image, nobody_dir)
    env = nobody_env(nobody_dir, False)
    mnt = nobody_dir / "mnt"
    r = nobody_stratafs(nobody_dir, lay, tag, env)
    assert r.returncode == 0, r.stderr
    try:
        run(as_user(NOBODY, ["sh", "-c", f"echo theirs > {mnt}/theirs"]))
        r = run([STRATA, "commit", mnt, ":theirs"], check=False,
                env=dict(env, STRATA_ROOT=str(nobody_dir / "store")))
        assert r.returncode == 0, r.stderr
    finally:
        unmount(mnt)
    got = umoci_rootfs(lay, "theirs", tmp_path / "u")
    assert (got / "theirs").read_text() == "theirs\n"


def test_commit_needs_a_stratafs_mount_not_a_lookalike(tmp_path, squatter):
    """A plain directory with a server on its name is not a mount."""
    d = tmp_path / "plain"
    d.mkdir()
    secret = secret_dir(tmp_path)
    sq = squatter("@stratafs-control/" + sock_hash(d), str(secret),
                  "oci:/nonexistent:x", str(tmp_path / "store"))
    assert not isinstance(sq, int)
    r = run([STRATA, "commit", d, ":x"], check=False)
    assert r.returncode != 0
    assert "not a writable stratafs mount" in r.stderr, r.stderr
