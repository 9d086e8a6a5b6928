"""The store's lifecycle (issue 10 section 3): live commits onto the
mount's own image by digest, images reachable by digest after their tag
moved, strata tag, strata gc, strata images columns.

The committed images are read back with skopeo and umoci, and the store's
index.json with Python, not with strata alone."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import STRATA, assert_same_tree, run, umoci_rootfs
from test_commit_peers import check_layout as check_oci_layout


def check_layout(layout):
    """test_commit_peers' crash check of a layout; the store also has an
    (empty) blobs/sha512 directory."""
    assert not list((layout / "blobs/sha512").iterdir())
    return [p for p in check_oci_layout(layout)
            if p != "unexpected directory blobs/./sha512"]


@pytest.fixture
def strata(strata):
    """conftest's strata, and no sanitizer report on its stderr."""
    def call(*args, **kw):
        r = strata(*args, **kw)
        assert "runtime error" not in r.stderr and \
            "Sanitizer" not in r.stderr, r.stderr
        return r
    return call


def base(root):
    (root / "etc").mkdir()
    (root / "etc/motd").write_text("hello\n")
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "usr/share/doc/README").write_text("doc\n")


def index(store):
    return json.loads((store / "images/index.json").read_text())


def tagged(store):
    """{NAME:TAG: digest} from the store's index.json."""
    out = {}
    for d in index(store)["manifests"]:
        name = d.get("annotations", {}).get(
            "org.opencontainers.image.ref.name")
        if name:
            out[name] = d["digest"]
    return out


def untagged(store):
    return [d["digest"] for d in index(store)["manifests"]
            if "org.opencontainers.image.ref.name"
            not in d.get("annotations", {})]


def skopeo_rootfs(src, tmp_path, name):
    """skopeo copy @src to a fresh layout, umoci unpack it: the rootfs as
    two independent tools see the image."""
    lay = tmp_path / f"lay-{name}"
    run(["skopeo", "copy", "--quiet", src, f"oci:{lay}:x"])
    return umoci_rootfs(lay, "x", tmp_path / f"umoci-{name}"), lay


def layers_of(layout, tag="x"):
    out = run(["skopeo", "inspect", "--raw", f"oci:{layout}:{tag}"]).stdout
    return json.loads(out)["layers"]


# --- 1. a live commit builds on the mount's own image ---------------------

def test_live_commit_twice_to_own_tag(umoci_image, mount, strata, store,
                                      tmp_path):
    """The repro of the issue: commit M app:latest twice without
    --continue. The second commit is the mount's base plus the whole
    upper, not the first commit plus the upper: the image equals the
    mount."""
    layout, tag = umoci_image([base])
    strata("import", f"oci:{layout}:{tag}", "app:latest")
    mnt = mount("app:latest", opts=f"upper={tmp_path}/up")
    (mnt / "notes.txt").write_text("v1\n")
    strata("commit", str(mnt), "app:latest")
    (mnt / "notes.txt").unlink()
    (mnt / "other.txt").write_text("v2\n")
    strata("commit", str(mnt), "app:latest")
    ref, lay = skopeo_rootfs(f"oci:{store}/images:app:latest", tmp_path,
                             "second")
    assert not (ref / "notes.txt").exists()
    assert (ref / "other.txt").read_text() == "v2\n"
    assert_same_tree(mnt, ref, ignore=("/",))
    # the base's one layer plus one: not a stack of both commits
    assert len(layers_of(lay)) == 2


def test_live_commit_oci_layout_tag_moved(umoci_image, mount, strata,
                                          tmp_path):
    """A mount of oci:DIR:TAG committed twice to :TAG: the second commit
    finds the mount's image by digest although index.json no longer lists
    it (the first commit moved the tag)."""
    layout, tag = umoci_image([base])
    mnt = mount(f"oci:{layout}:{tag}", opts=f"upper={tmp_path}/up")
    (mnt / "a").write_text("a\n")
    strata("commit", str(mnt), f":{tag}")
    (mnt / "a").unlink()
    (mnt / "b").write_text("b\n")
    strata("commit", str(mnt), f":{tag}")
    ref = umoci_rootfs(layout, tag, tmp_path / "u")
    assert_same_tree(mnt, ref, ignore=("/",))
    assert len(layers_of(layout, tag)) == 2


def test_live_commit_continue_goes_on_from_new_image(umoci_image, mount,
                                                     strata, store,
                                                     tmp_path):
    """--continue (documented): the mount goes on from the new image with
    an empty upper; the next commit stacks on it."""
    layout, tag = umoci_image([base])
    strata("import", f"oci:{layout}:{tag}", "app:latest")
    up = tmp_path / "up"
    mnt = mount("app:latest", opts=f"upper={up}")
    (mnt / "one").write_text("1\n")
    strata("commit", "--continue", str(mnt), "app:latest")
    assert os.listdir(up) == []
    (mnt / "one").unlink()
    (mnt / "two").write_text("2\n")
    strata("commit", str(mnt), "app:latest")
    ref, lay = skopeo_rootfs(f"oci:{store}/images:app:latest", tmp_path,
                             "c")
    assert_same_tree(mnt, ref, ignore=("/",))
    assert len(layers_of(lay)) == 3


# --- references by digest -------------------------------------------------

def test_store_refs_by_digest(umoci_image, mount, strata, store, tmp_path):
    layout, tag = umoci_image([base])
    d = strata("import", f"oci:{layout}:{tag}", "app:1").stdout.strip()
    want = umoci_rootfs(layout, tag, tmp_path / "want")
    for ref in (f"app@{d}", f"app:1@{d}", f"other@{d}",
                f"oci:{store}/images@{d}"):
        out = json.loads(strata("inspect", "--json", ref).stdout)
        assert out["digest"] == d, ref
    assert_same_tree(mount(f"app@{d}"), want)
    bad = "sha256:" + "0" * 64
    r = strata("inspect", f"app@{bad}", check=False)
    assert r.returncode == 1 and bad in r.stderr
    r = strata("inspect", "app@sha256:zz", check=False)
    assert r.returncode == 1 and "invalid digest" in r.stderr


# --- 2. a moved or removed tag leaves the image reachable ------------------

def test_moved_tag_keeps_image_by_digest(umoci_image, strata, store,
                                         tmp_path):
    layout, tag = umoci_image([base])
    d1 = strata("import", f"oci:{layout}:{tag}", "app:1").stdout.strip()
    up = tmp_path / "up"
    up.mkdir()
    (up / "new").write_text("new\n")
    strata("commit", "--upper", up, "--from", "app:1", "app:1")
    d2 = tagged(store)["app:1"]
    assert d2 != d1
    assert untagged(store) == [d1]
    # a valid layout with the unnamed descriptor in it (oci-image-tool
    # wants no empty sha512 directory), skopeo reads it by tag, and
    # strata by digest (skopeo 1.9 has no oci:DIR@DIGEST)
    import shutil
    shutil.copytree(store / "images", tmp_path / "copy")
    (tmp_path / "copy/blobs/sha512").rmdir()
    run(["oci-image-tool", "validate", "--type", "image", tmp_path / "copy"])
    r1, _ = skopeo_rootfs(f"oci:{store}/images:app:1", tmp_path, "t")
    assert (r1 / "new").exists()
    out = json.loads(strata("inspect", "--json",
                            f"oci:{store}/images@{d1}").stdout)
    assert out["digest"] == d1
    out = json.loads(strata("inspect", "--json", f"app@{d1}").stdout)
    assert out["digest"] == d1
    # images: tags; --all: the untagged one too, as <none>
    listed = json.loads(strata("images", "--json").stdout)
    assert [(i["name"], i["digest"]) for i in listed] == [("app:1", d2)]
    listed = json.loads(strata("images", "--all", "--json").stdout)
    assert sorted((i["name"] or "", i["digest"]) for i in listed) == \
        sorted([("app:1", d2), ("", d1)])
    text = strata("images", "--all", "--digests").stdout
    assert any(l.split()[:2] == ["<none>", d1] for l in text.splitlines()), \
        text
    # rmi: the last tag of d2 goes, d2 stays listed unnamed
    strata("rmi", "app:1")
    assert tagged(store) == {}
    assert sorted(untagged(store)) == sorted([d1, d2])
    out = json.loads(strata("inspect", "--json", f"app@{d2}").stdout)
    assert out["digest"] == d2
    # tagging it again takes the unnamed entry's place
    strata("tag", f"app@{d2}", "back:1")
    assert tagged(store) == {"back:1": d2}
    assert untagged(store) == [d1]


# --- 3. strata tag ---------------------------------------------------------

def test_tag(umoci_image, strata, store, tmp_path):
    layout, tag = umoci_image([base])
    d = strata("import", f"oci:{layout}:{tag}", "app:1").stdout.strip()
    strata("tag", "app:1", "app:2")
    strata("tag", f"oci:{store}/images:app:1", "copy")
    strata("tag", f"oci:{store}/images@{d}", "bydigest:x")
    assert tagged(store) == {"app:1": d, "app:2": d, "copy:latest": d,
                             "bydigest:x": d}
    assert untagged(store) == []
    # skopeo reads the new tags
    run(["skopeo", "inspect", f"oci:{store}/images:copy:latest"])
    # not in the store: says to import
    r = strata("tag", f"oci:{layout}:{tag}", "x", check=False)
    assert r.returncode == 1 and "strata import" in r.stderr
    r = strata("tag", "nope:1", "x", check=False)
    assert r.returncode == 1 and "nope:1" in r.stderr
    r = strata("tag", "app:1", "Bad Name", check=False)
    assert r.returncode == 1 and "invalid image name" in r.stderr
    assert strata("tag", "app:1", check=False).returncode == 2
    assert "usage: strata tag" in strata("tag", "--help").stdout


# --- 3. strata gc ----------------------------------------------------------

def closure(store):
    """Blobs and diff_ids the tagged images of the store reach, read with
    Python from the layout (the answer gc must leave)."""
    blobs, diff_ids = set(), set()

    def blob(d):
        alg, h = d.split(":")
        return store / "images/blobs" / alg / h

    for d in index(store)["manifests"]:
        if "org.opencontainers.image.ref.name" not in d.get(
                "annotations", {}):
            continue
        man = json.loads(blob(d["digest"]).read_bytes())
        blobs |= {d["digest"], man["config"]["digest"]}
        blobs |= {l["digest"] for l in man["layers"]}
        cfg = json.loads(blob(man["config"]["digest"]).read_bytes())
        diff_ids |= set(cfg["rootfs"]["diff_ids"])
    return blobs, diff_ids


def closure_of(store, digest):
    """Blobs and diff_ids of the image with manifest @digest."""
    blob = lambda d: store / "images/blobs" / d.replace(":", "/")
    man = json.loads(blob(digest).read_bytes())
    cfg = json.loads(blob(man["config"]["digest"]).read_bytes())
    return ({digest, man["config"]["digest"]} |
            {l["digest"] for l in man["layers"]},
            set(cfg["rootfs"]["diff_ids"]))


def on_disk(store):
    blobs = {f"{a.name}:{f.name}" for a in (store / "images/blobs").iterdir()
             if a.is_dir() for f in a.iterdir()}
    layers = {f"{a.name}:{f.name}" for a in (store / "layers").iterdir()
              for f in a.iterdir()}
    tmp = sorted(p.name for p in (store / "tmp").iterdir())
    return blobs, layers, tmp


def disk_usage(store):
    total = 0
    for sub in ("images", "layers", "tmp"):
        for dirpath, dirnames, filenames in os.walk(store / sub):
            for n in dirnames + filenames:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
    return total


def gc(strata, check=True):
    """strata gc, whose stderr must hold no sanitizer report."""
    r = strata("gc", check=check)
    assert "runtime error" not in r.stderr and "Sanitizer" not in r.stderr, \
        r.stderr
    return r


def freed(out):
    line = [l for l in out.splitlines() if l.startswith("freed ")]
    assert line, out
    return int(line[0].split("(")[1].split()[0])


def commit_file(strata, tmp_path, src, dest, name, data):
    up = tmp_path / f"up-{name}"
    up.mkdir()
    (up / name).write_bytes(data)
    return strata("commit", "--upper", up, "--from", src, dest).stdout.strip()


def test_gc_dozen_commits_then_rmi_all(umoci_image, strata, store, tmp_path):
    layout, tag = umoci_image([base])
    strata("import", f"oci:{layout}:{tag}", "app:0")
    # a dozen commits: six tags, six moves of one tag, each layer cached
    for i in range(1, 13):
        dest = f"app:{i}" if i <= 6 else "app:moved"
        commit_file(strata, tmp_path, f"app:{i - 1}" if i <= 7 else
                    "app:moved", dest, f"f{i}", os.urandom(4096 * i))
        strata("import", dest, f"tmp:{i}")      # unpacks its layers
        strata("rmi", f"tmp:{i}")
    # app:moved moved five times: five images without a name
    assert len(untagged(store)) == 5
    listed = json.loads(strata("images", "--all", "--json").stdout)
    assert sum(1 for i in listed if i["name"] is None) == 5
    # gc: the five go, with their own blobs and layers; what the tags
    # reach stays (compared with Python's reading of the layout)
    before = disk_usage(store)
    out = gc(strata).stdout
    assert "removed 5 untagged images" in out, out
    assert untagged(store) == []
    want_blobs, want_layers = closure(store)
    blobs, layers, tmp = on_disk(store)
    assert blobs == want_blobs
    assert {l for l in layers if not l.endswith(".lock")} <= want_layers
    assert tmp == []
    assert freed(out) == before - disk_usage(store)
    assert check_layout(store / "images") == []
    run(["skopeo", "copy", "--quiet", f"oci:{store}/images:app:moved",
         f"oci:{tmp_path}/copy:x"])
    # rmi everything, gc: nothing is left
    for n in tagged(store):
        strata("rmi", n)
    assert strata("images").stdout == ""
    assert len(untagged(store)) == 8
    before = disk_usage(store)
    out = gc(strata).stdout
    assert "removed 8 untagged images" in out, out
    assert index(store)["manifests"] == []
    assert on_disk(store) == (set(), set(), [])
    assert freed(out) == before - disk_usage(store)
    assert not list((store / "images/blobs/sha256").iterdir())
    # and again: nothing to do
    assert freed(gc(strata).stdout) == 0


def test_gc_keeps_live_mounts(umoci_image, mount, strata, store, tmp_path):
    layout, tag = umoci_image([base])
    d = strata("import", f"oci:{layout}:{tag}", "app:1").stdout.strip()
    want = umoci_rootfs(layout, tag, tmp_path / "want")
    ro = mount("app:1")
    rw = mount("app:1", opts=f"upper={tmp_path}/up")
    (rw / "etc/new").write_text("new\n")
    strata("rmi", "app:1")
    out = gc(strata).stdout
    assert "removed 0 untagged images" in out and "live mounts" in out, out
    assert untagged(store) == [d]
    # both mounts read every file as before
    assert_same_tree(ro, want)
    assert (rw / "etc/new").read_text() == "new\n"
    assert (rw / "usr/share/doc/README").read_text() == "doc\n"
    # and the live one commits onto its image, found by digest
    strata("commit", str(rw), "app:2")
    ref, _ = skopeo_rootfs(f"oci:{store}/images:app:2", tmp_path, "c")
    assert_same_tree(rw, ref, ignore=("/",))
    # unmounted: the untagged image goes at the next gc
    from conftest import unmount
    unmount(ro)
    unmount(rw)
    for _ in range(100):        # the daemons exit after the unmount
        if "removed 1 untagged" in (out := gc(strata).stdout):
            break
        time.sleep(0.1)
    assert "removed 1 untagged images" in out, out
    assert untagged(store) == []
    want_blobs, want_layers = closure(store)
    assert on_disk(store)[0] == want_blobs


def gc_lock_held(store):
    import fcntl
    try:
        fd = os.open(store / "gc.lock", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_gc_during_import(umoci_image, mount, strata, store, tmp_path):
    """An import stopped (SIGSTOP) in the middle: gc removes nothing and
    says so; the import then finishes and its image is whole."""
    def big(root):
        base(root)
        (root / "big").write_bytes(os.urandom(48 << 20))
    layout, tag = umoci_image([big])
    # garbage gc would remove, if it ran
    strata("import", f"oci:{layout}:{tag}", "old:1")
    commit_file(strata, tmp_path, "old:1", "old:1", "x", b"x")
    assert len(untagged(store)) == 1
    strata("rmi", "old:1")
    shutil_rm = __import__("shutil").rmtree
    shutil_rm(store / "layers")     # so the import has work to do
    p = subprocess.Popen([str(STRATA), "import", f"oci:{layout}:{tag}",
                          "new:1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        while p.poll() is None and not gc_lock_held(store):
            time.sleep(0.001)
        assert p.poll() is None, "import finished before it could be seen"
        os.kill(p.pid, signal.SIGSTOP)
        snap = on_disk(store), index(store)
        r = gc(strata, check=False)
        assert r.returncode == 1 and "in use" in r.stderr, r.stderr
        assert (on_disk(store), index(store)) == snap
    finally:
        os.kill(p.pid, signal.SIGCONT)
        out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert_same_tree(mount("new:1"), umoci_rootfs(layout, tag,
                                                  tmp_path / "want"))


def test_gc_killed(umoci_image, strata, store, tmp_path):
    """gc killed with SIGKILL at random points: the store stays valid
    (strata images, skopeo, the layout check), and a later gc finishes."""
    import random
    rnd = random.Random(os.environ.get("STRATA_SEED", "10"))
    layout, tag = umoci_image([base])
    strata("import", f"oci:{layout}:{tag}", "app:latest")

    def garbage(k):
        for i in range(4):
            commit_file(strata, tmp_path, "app:latest", "app:latest",
                        f"f{k}-{i}", os.urandom(256 << 10))
            strata("import", "app:latest", "tmp:1")     # caches layers
            strata("rmi", "tmp:1")

    garbage(0)
    t0 = time.monotonic()
    gc(strata)
    full = time.monotonic() - t0
    killed = 0
    rounds = 3
    for k in range(1, rounds + 1):
        garbage(k)
        p = subprocess.Popen([str(STRATA), "gc"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        time.sleep(rnd.uniform(0, full))
        if p.poll() is None:
            p.kill()
            killed += 1
        p.communicate()
        assert check_layout(store / "images") == []
        strata("images", "--all")
        run(["skopeo", "copy", "--quiet", f"oci:{store}/images:app:latest",
             f"oci:{tmp_path}/copy{k}:x"])
        _, want_layers = closure(store)
        for l in want_layers:
            alg, h = l.split(":")
            assert (store / "layers" / alg / h / "index").is_file(), l
    print(f"gc {full:.3f}s, killed {killed} of {rounds}")
    gc(strata)
    want_blobs, want_layers = closure(store)
    blobs, layers, tmp = on_disk(store)
    assert blobs == want_blobs and tmp == []
    assert {l for l in layers if not l.endswith(".lock")} == want_layers
    r = run(["oci-image-tool", "validate", "--type", "image",
             f"{tmp_path}/copy{rounds}"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_images_columns(umoci_image, strata, store, tmp_path):
    """SIZE is the manifest, config and layer blobs (Python adds them up
    from the layout); CREATED the config's time, shown relative."""
    layout, tag = umoci_image([base])
    d = strata("import", f"oci:{layout}:{tag}", "app:1").stdout.strip()
    commit_file(strata, tmp_path, "app:1", "app:2", "f", b"x" * 5000)
    blob = lambda dg: store / "images/blobs" / dg.replace(":", "/")
    want = {}
    for name, dg in tagged(store).items():
        man = json.loads(blob(dg).read_bytes())
        cfg = json.loads(blob(man["config"]["digest"]).read_bytes())
        size = blob(dg).stat().st_size + man["config"]["size"] + \
            sum(l["size"] for l in man["layers"])
        want[name] = (dg, cfg["created"], size)
    listed = json.loads(strata("images", "--json").stdout)
    assert {i["name"]: (i["digest"], i["created"], i["size"])
            for i in listed} == want
    lines = strata("images").stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "CREATED", "SIZE"]
    row = [l for l in lines if l.startswith("app:2 ")][0].split()
    assert row[1] == want["app:2"][0].split(":")[1][:12]
    assert row[2].isdigit() and row[4] == "ago" and \
        row[3] in ("second", "seconds", "minute", "minutes"), row
    assert row[6] in ("B", "kB", "MB"), row
    lines = strata("images", "--digests").stdout.splitlines()
    assert lines[0].split() == ["NAME", "DIGEST", "CREATED", "SIZE"]
    assert any(l.split()[:2] == ["app:1", d] for l in lines)
    r = strata("images", "--bogus", check=False)
    assert r.returncode == 2


@pytest.fixture
def ro_bind(tmp_path):
    made = []

    def bind(src):
        dst = tmp_path / f"ro{len(made)}"
        dst.mkdir()
        run(["mount", "--bind", src, dst])
        made.append(dst)
        run(["mount", "-o", "remount,bind,ro", dst])
        return dst
    yield bind
    for d in reversed(made):
        subprocess.run(["umount", "-l", str(d)])


def test_mount_from_read_only_store(umoci_image, mount, strata, store,
                                    tmp_path, ro_bind):
    """A store that cannot be written is neither held nor pinned: it
    still mounts (nobody can gc it from here either)."""
    layout, tag = umoci_image([base])
    strata("import", f"oci:{layout}:{tag}", "app:1")
    ro = ro_bind(store)
    mnt = mount("app:1", opts=f"root={ro}")
    assert_same_tree(mnt, umoci_rootfs(layout, tag, tmp_path / "want"))
    assert not (store / "pins").exists() or \
        not list((store / "pins").iterdir())


def test_help_lists_tag_and_gc(strata):
    top = strata("--help").stdout
    assert "  tag " in top and "  gc " in top and "@DIGEST" in top
    assert "usage: strata gc" in strata("gc", "--help").stdout
    assert "--digests" in strata("images", "--help").stdout
    assert "--continue" in strata("commit", "--help").stdout
    assert strata("gc", "now", check=False).returncode == 2


def test_gc_broken_tagged_image_removes_nothing(umoci_image, strata, store,
                                                tmp_path):
    """A tagged image gc cannot read: it cannot tell what that image
    uses, so it removes nothing and names the image."""
    layout, tag = umoci_image([base])
    strata("import", f"oci:{layout}:{tag}", "app:1")
    commit_file(strata, tmp_path, "app:1", "app:1", "x", b"x")
    strata("tag", "app:1", "keep:1")
    man = json.loads((store / "images/blobs" /
                      tagged(store)["keep:1"].replace(":", "/")).read_bytes())
    (store / "images/blobs" /
     man["config"]["digest"].replace(":", "/")).unlink()
    snap = on_disk(store), index(store)
    r = gc(strata, check=False)
    assert r.returncode == 1, r.stdout
    assert "app:1" in r.stderr or "keep:1" in r.stderr, r.stderr
    assert "nothing removed" in r.stderr, r.stderr
    assert (on_disk(store), index(store)) == snap


def test_gc_keeps_what_a_continued_mount_shows(umoci_image, mount, strata,
                                               store, tmp_path):
    """After commit --continue the mount shows the new image: gc keeps it
    (and its layer) with every tag gone, and the mount reads on."""
    layout, tag = umoci_image([base])
    strata("import", f"oci:{layout}:{tag}", "app:1")
    mnt = mount("app:1", opts=f"upper={tmp_path}/up")
    (mnt / "added").write_text("added\n")
    d2 = strata("commit", "--continue", str(mnt), "app:2").stdout.strip()
    strata("rmi", "app:1", "app:2")
    gc(strata)
    assert d2 in untagged(store)
    _, layers = closure_of(store, d2)
    for l in layers:
        alg, h = l.split(":")
        assert (store / "layers" / alg / h / "index").is_file(), l
    assert (mnt / "added").read_text() == "added\n"
    assert (mnt / "etc/motd").read_text() == "hello\n"
    # drop_caches makes the mount read its layers again
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    assert (mnt / "added").read_text() == "added\n"
    assert (mnt / "usr/share/doc/README").read_text() == "doc\n"
