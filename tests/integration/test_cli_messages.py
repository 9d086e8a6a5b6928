"""What the command line says when it is used wrongly: each usage error
names what is wrong (a missing or extra argument, an unknown option, an
option without its value), a name with capitals gets docker's and
podman's rule with the lower-case name to use, a docker:// reference the
skopeo command to use instead, `strata commit` of another user's mount
says whose it is (never a silent SIGPIPE), and `strata inspect` shows
who wrote an image (config and history authors, as umoci sets them)."""
import hashlib
import json
import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from conftest import STRATA, STRATAFS, run


def files_step(root):
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/hello").write_text("hello\n")


@pytest.fixture
def image(umoci_image):
    """(layout, tag): a one-layer image made with umoci."""
    return umoci_image([files_step], name="cli")


def strata_err(*args, env=None):
    return run([STRATA, *args], check=False, env=env)


def synopsis_of(cmd):
    """The usage lines of `strata CMD --help` (up to its first blank line)."""
    text = run([STRATA, cmd, "--help"]).stdout
    return text.split("\n\n")[0]


# ---------------------------------------------------------------------------
# usage errors

USAGE_CASES = [
    # (args, the first line of stderr after "strata CMD: ")
    (["import"], "missing SRC and NAME[:TAG]"),
    (["import", "oci:x:1"], "missing NAME[:TAG] (the name to give the "
     "image in the store)"),
    (["import", "oci:x:1", "a:1", "b:1"], 'unexpected argument "b:1" '
     "(it takes SRC and NAME[:TAG])"),
    (["import", "--bogus", "oci:x:1", "a:1"], 'unknown option "--bogus"'),
    (["import", "oci:x:1", "a:1", "--platform"], "--platform needs a value"),
    (["import", "oci:x:1", "a:1", "--max-entries"],
     "--max-entries needs a value"),
    (["images", "extra"], 'unexpected argument "extra" (it takes none)'),
    (["images", "--bogus"], 'unknown option "--bogus"'),
    (["rmi"], "no image name given"),
    (["rmi", "--bogus", "a:1"], 'unknown option "--bogus"'),
    (["inspect"], "missing REF (the image to inspect)"),
    (["inspect", "a:1", "b:1"], 'unexpected argument "b:1" (it takes one '
     "REF)"),
    (["inspect", "--bogus", "a:1"], 'unknown option "--bogus"'),
    (["inspect", "a:1", "--platform"], "--platform needs a value"),
    (["commit"], "missing MOUNTPOINT and DEST (or --upper DIR --from REF "
     "DEST)"),
    (["commit", "/mnt"], "missing DEST: give MOUNTPOINT DEST, or --upper "
     "DIR --from REF DEST"),
    (["commit", "/mnt", "a:1", "b:1"], 'unexpected argument "b:1" (it '
     "takes MOUNTPOINT DEST, or DEST with --upper and --from)"),
    (["commit", "--upper", "u", "--from", "a:1", "b:1", "c:1"],
     'unexpected argument "c:1" (with --upper and --from, give only DEST)'),
    (["commit", "--upper", "u", "b:1"], "--upper needs --from REF (the "
     "image the upper directory is over)"),
    (["commit", "--from", "a:1", "b:1"], "--from needs --upper DIR"),
    (["commit", "--upper", "u", "--from", "a:1"], "missing DEST (where to "
     "write the image)"),
    (["commit", "--bogus", "/mnt", "a:1"], 'unknown option "--bogus"'),
    (["commit", "/mnt", "a:1", "--upper"], "--upper needs a value"),
    (["commit", "/mnt", "a:1", "--env"], "--env needs a value"),
    (["tag"], "missing SRC and NAME[:TAG]"),
    (["tag", "a:1"], "missing NAME[:TAG]"),
    (["tag", "a:1", "b:1", "c:1"], 'unexpected argument "c:1"'),
    (["tag", "--bogus", "a:1", "b:1"], 'unknown option "--bogus"'),
    (["images", "--all", "--bogus"], 'unknown option "--bogus"'),
    (["gc", "now"], 'unexpected argument "now" (it takes none)'),
    (["gc", "--bogus"], 'unknown option "--bogus"'),
]


@pytest.mark.parametrize("args,what", USAGE_CASES,
                         ids=[" ".join(a) for a, _ in USAGE_CASES])
def test_usage_error_says_what(strata, args, what):
    """Exit status 2; stderr: "strata CMD: WHAT", the command's usage
    lines, and where to read more. Before: the usage alone for most."""
    r = strata(*args, check=False)
    assert r.returncode == 2, r
    cmd = args[0]
    assert r.stderr == f"strata {cmd}: {what}\n{synopsis_of(cmd)}\n" \
        f"See 'strata {cmd} --help'.\n", r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("args,what", [
    ([], "strata: no command given\n"),
    (["--bogus"], "strata: unknown option \"--bogus\"\n"
     "See 'strata --help'.\n"),
    (["--root"], "strata: --root needs a value\nSee 'strata --help'.\n"),
    (["bogus"], "strata: unknown command \"bogus\" (see strata --help)\n"),
], ids=["nothing", "unknown-option", "root-without-value", "unknown-command"])
def test_usage_error_main(strata, args, what):
    r = strata(*args, check=False)
    assert r.returncode == 2, r
    assert r.stderr.startswith(what), r.stderr


# ---------------------------------------------------------------------------
# capitals and docker:// wherever a name or reference is taken

def name_cases(tmp_path, layout, tag, bad):
    """(what, argv) for every place a reference or name is read, with
    @bad there: import's SRC and NAME, commit's --from and DEST (upper
    form), rmi, inspect, stratafs REF."""
    upper = tmp_path / "upper-for-names"
    upper.mkdir(exist_ok=True)
    mnt = tmp_path / "mnt-for-names"
    mnt.mkdir(exist_ok=True)
    src = f"oci:{layout}:{tag}"
    return [
        ("import NAME", [STRATA, "import", src, bad]),
        ("commit DEST", [STRATA, "commit", "--upper", upper, "--from", src,
                         bad]),
        ("rmi", [STRATA, "rmi", bad]),
        ("inspect", [STRATA, "inspect", bad]),
        ("stratafs", [STRATAFS, bad, mnt]),
    ]


def test_capitals_explained_everywhere(image, store, tmp_path):
    """"MyApp:1" is refused as docker and podman refuse it, with the
    lower-case name to use, by every command. Before: "invalid image
    name" or "invalid reference ... use NAME[:TAG], ...", differing."""
    layout, tag = image
    want = ('invalid image name "MyApp:1": reference names must be lower '
            'case, as in docker and podman (use "myapp:1")')
    cases = name_cases(tmp_path, layout, tag, "MyApp:1")
    cases.insert(0, ("import SRC", [STRATA, "import", "MyApp:1", "x:1"]))
    cases.append(("commit --from", [STRATA, "commit", "--upper",
                                    tmp_path / "upper-for-names", "--from",
                                    "MyApp:1", "x:1"]))
    for what, argv in cases:
        r = run(argv, check=False)
        prog = Path(argv[0]).name
        assert r.returncode == 1, (what, r)
        assert r.stderr == f"{prog}: {want}\n", (what, r.stderr)
    # the name it suggests is the one that works
    r = run([STRATA, "import", f"oci:{layout}:{tag}", "myapp:1"])
    assert r.stdout.startswith("sha256:")
    # a tag may have capitals (as in docker): only the name is lowered
    r = strata_err("inspect", "Foo/Bar:Latest")
    assert 'reference names must be lower case, as in docker and podman ' \
        '(use "foo/bar:Latest")' in r.stderr, r


def test_docker_refs_point_to_skopeo(image, store, tmp_path):
    """A docker:// reference is pulled wherever an image is read
    (test_registry.py); where a store name is wanted it says how to
    push there (strata copy); commit to it pushes (test_registry_push.py).
    Where it is read from a registry nobody answers at, the message names
    the registry."""
    layout, tag = image
    ref = "docker://127.0.0.1:1/team/app:1"
    want = (f'"{ref}" is a registry, not a store name: push there with '
            f"strata copy SRC {ref}")
    cases = name_cases(tmp_path, layout, tag, ref)
    for what, argv in cases:
        r = run(argv, check=False)
        prog = Path(argv[0]).name
        assert r.returncode == 1, (what, r)
        if what in ("import NAME", "rmi"):
            assert r.stderr == f"{prog}: {want}\n", (what, r.stderr)
        elif what == "commit DEST":
            # an empty upper: nothing to push, and no registry asked
            assert "nothing to commit" in r.stderr, (what, r)
        else:
            assert "registry 127.0.0.1:1: repository team/app" in \
                r.stderr, (what, r.stderr)
    for what, argv in (
            ("import SRC", [STRATA, "import", ref, "x:1"]),
            ("commit --from", [STRATA, "commit", "--upper",
                               tmp_path / "upper-for-names", "--from", ref,
                               "x:1"])):
        r = run(argv, check=False)
        assert r.returncode == 1, (what, r)
        assert "registry 127.0.0.1:1: repository team/app" in r.stderr, \
            (what, r.stderr)


def test_names_of_a_live_commit(image, strata, mount, tmp_path):
    """The same explanations for DEST of a live mount's commit."""
    layout, tag = image
    upper = tmp_path / "upper"
    upper.mkdir()
    mnt = mount(f"oci:{layout}:{tag}", opts=f"upper={upper}")
    (mnt / "new").write_text("x\n")
    r = strata("commit", mnt, "MyApp:1", check=False)
    assert r.returncode == 1 and r.stderr == (
        'strata: invalid image name "MyApp:1": reference names must be '
        'lower case, as in docker and podman (use "myapp:1")\n'), r
    r = strata("commit", mnt, "docker://127.0.0.1:1/y:1", check=False)
    assert r.returncode == 1 and \
        "registry 127.0.0.1:1: repository y" in r.stderr, r


# ---------------------------------------------------------------------------
# inspect shows the authors

def test_inspect_shows_authors(image, strata, tmp_path):
    """The config's author (set by umoci, then by strata commit --author)
    and each history entry's, in the text and the --json output. Before:
    the text output showed no author at all."""
    layout, tag = image
    run(["umoci", "config", "--image", f"{layout}:{tag}", "--tag", "au",
         "--author", "Umoci Person <u@example.org>",
         "--history.author", "History Person",
         "--history.created_by", "umoci config"])
    r = strata("inspect", f"oci:{layout}:au")
    lines = r.stdout.split("\n")
    assert "Author      Umoci Person <u@example.org>" in lines, r.stdout
    assert any(l.endswith(" umoci config (author: History Person) "
                          "(empty layer)") for l in lines), r.stdout
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "f").write_text("f\n")
    strata("commit", "--upper", upper, "--from", f"oci:{layout}:au",
           f"oci:{layout}:au2", "--author", "Ops Team <ops@example.org>",
           "-m", "tune")
    r = strata("inspect", f"oci:{layout}:au2")
    lines = r.stdout.split("\n")
    assert "Author      Ops Team <ops@example.org>" in lines, r.stdout
    hist = lines[lines.index(next(l for l in lines
                                  if l.startswith("History"))) + 1:]
    assert [l for l in hist if "(author: " in l] == [
        next(l for l in hist if "umoci config" in l),
        next(l for l in hist if "strata commit" in l)], r.stdout
    assert hist[-2].endswith(
        " strata commit (author: Ops Team <ops@example.org>) # tune"), hist
    j = json.loads(strata("inspect", "--json", f"oci:{layout}:au2").stdout)
    assert j["author"] == "Ops Team <ops@example.org>"
    assert [h["author"] for h in j["history"]][-2:] == [
        "History Person", "Ops Team <ops@example.org>"], j["history"]
    # an image without authors shows "-"
    r = strata("inspect", f"oci:{layout}:{tag}")
    assert "Author      -" in r.stdout.split("\n"), r.stdout


# ---------------------------------------------------------------------------
# strata commit of a mount that is not the caller's

def as_nobody(argv):
    return run(["setpriv", "--reuid=65534", "--regid=65534",
                "--clear-groups", *argv], check=False)


def test_commit_someone_elses_mount(open_dir, image, strata, mount):
    """A user committing root's writable mount is told whose it is and
    who may commit it, exit status 1, never killed by SIGPIPE (141).
    Passes on main already: the owner check against mountinfo's user_id
    came with the control socket's trust rules."""
    layout, tag = image
    upper = open_dir / "upper"
    upper.mkdir(mode=0o700)
    mnt = open_dir / "mnt"
    mnt.mkdir()
    mount(f"oci:{layout}:{tag}", opts=f"upper={upper}", mnt=mnt)
    (mnt / "new").write_text("x\n")
    r = as_nobody([STRATA, "commit", mnt, f"oci:{open_dir}/out:1"])
    assert r.returncode == 1, r
    assert r.stderr == f"strata commit: {mnt} belongs to uid 0: only that " \
        "user or root can commit it\n", r
    assert not (open_dir / "out").exists()


def control_name(abs_mp):
    return "\0stratafs-control/" + hashlib.sha256(
        abs_mp.encode()).hexdigest()


def test_commit_when_the_daemon_hangs_up(image, strata, mount, tmp_path):
    """A control socket that stops reading (a daemon that refuses the
    caller, or dies) makes `strata commit MOUNTPOINT` say so and exit 1.
    Before: the write of "freeze" raised SIGPIPE and strata died with
    status 141, silently. The listener here answers "info" for the
    (read-only, so socket-less) mount, then shuts its reading side."""
    layout, tag = image
    mnt = mount(f"oci:{layout}:{tag}")
    abs_mp = os.path.realpath(mnt)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(control_name(abs_mp))
    srv.listen(1)
    srv.settimeout(60)
    seen = []

    def serve():
        try:
            c, _ = srv.accept()
        except OSError:
            return
        with c:
            f = c.makefile("rb")
            seen.append(f.readline())
            c.shutdown(socket.SHUT_RD)
            c.sendall(json.dumps({
                "pid": os.getpid(), "mountpoint": abs_mp,
                "ref": f"oci:{layout}:{tag}", "upper": str(tmp_path),
                "manifest": "sha256:" + "0" * 64,
                "store": str(tmp_path / "store")}).encode() + b"\n")
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        r = run([STRATA, "commit", mnt, f"oci:{tmp_path}/out:1"],
                check=False, timeout=60)
    finally:
        srv.close()
        th.join(timeout=60)
    assert seen == [b"info\n"]
    assert r.returncode == 1, r
    assert r.returncode != 128 + signal.SIGPIPE and r.returncode >= 0
    assert r.stderr == f"strata commit: {abs_mp}: stratafs would not hold " \
        "still\n", r
    assert not (tmp_path / "out").exists()


STRATAFS_SYNOPSIS = ("usage: stratafs [-f] [-d] [-o OPTIONS] REF MOUNTPOINT "
                     "(see stratafs --help)\n")


@pytest.mark.parametrize("args,what", [
    ([], "missing REF and MOUNTPOINT"),
    (["app:1"], "missing MOUNTPOINT"),
    (["app:1", "/mnt", "extra"], 'unexpected argument "extra"'),
], ids=["nothing", "no-mountpoint", "extra"])
def test_stratafs_usage_errors(store, args, what):
    """stratafs says which argument is missing or extra, exit status 2,
    and nothing else (no leak report from the sanitizer build). Before:
    the synopsis alone for a missing one, and a leak report."""
    r = run([STRATAFS, *args], check=False)
    assert r.returncode == 2, r
    assert r.stderr == f"stratafs: {what}\n{STRATAFS_SYNOPSIS}", r.stderr
