"""strata diff and strata history (issue 12, items 1 and 2).

strata diff of two images is compared with a comparison, done here in
Python, of the two trees `umoci unpack` makes of them; strata diff of a
mount after edits with the same comparison of umoci's tree and the mounted
tree. strata history is compared with `skopeo inspect --config`, `umoci
stat` and the layer tars read here.
"""
import gzip
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from test_commit_peers import podman, sweep_mounts  # noqa: F401
from conftest import (STRATA, append_raw_layer, read_blob, run, tar_dir,
                      tar_file, tar_symlink, umoci_rootfs, write_blob,
                      _json_bytes)

MT = 1600000000


def entries(root):
    """path -> (type, mode, uid, gid, size, mtime_ns, link, rdev, xattrs)
    of every entry under @root but the root, by lstat."""
    out = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            try:
                xs = tuple(sorted(
                    (x, os.getxattr(p, x, follow_symlinks=False))
                    for x in os.listxattr(p, follow_symlinks=False)
                    if not x.startswith(("trusted.overlay.", "user.overlay.",
                                         "security.selinux"))))
            except OSError:
                xs = ()
            out["/" + str(p.relative_to(root))] = dict(
                type=stat.S_IFMT(st.st_mode), mode=stat.S_IMODE(st.st_mode),
                owner=(st.st_uid, st.st_gid),
                size=st.st_size if stat.S_ISREG(st.st_mode) else None,
                mtime=st.st_mtime_ns,
                link=os.readlink(p) if stat.S_ISLNK(st.st_mode) else None,
                device=st.st_rdev if stat.S_ISCHR(st.st_mode) or
                stat.S_ISBLK(st.st_mode) else None,
                xattrs=xs, file=p)
    return out


def py_diff(ra, rb):
    """The independent answer: {path: (kind, sorted changed fields)}.
    A: in B only; D: in A only, its parent a directory in B (a deleted
    directory once); C: in both, fields differ (content read only when
    nothing else does). Directory mtimes are left out: umoci stamps the
    directories it removes whiteouts from with the time of unpacking."""
    ta, tb = entries(ra), entries(rb)
    out = {}
    for p, b in tb.items():
        if p not in ta:
            out[p] = ("A", ())
            continue
        a = ta[p]
        if a["type"] != b["type"]:
            out[p] = ("C", ("type",))
            continue
        w = [k for k in ("mode", "owner", "size", "mtime", "link", "device",
                         "xattrs") if a[k] != b[k]]
        if stat.S_ISDIR(a["type"]) and "mtime" in w:
            w.remove("mtime")
        if not w and stat.S_ISREG(a["type"]) and \
                a["file"].read_bytes() != b["file"].read_bytes():
            w = ["content"]
        if w:
            out[p] = ("C", tuple(sorted(w)))
    for p, a in ta.items():
        parent = p.rsplit("/", 1)[0] or "/"
        if p not in tb and (parent == "/" or (
                parent in tb and stat.S_ISDIR(tb[parent]["type"]))):
            out[p] = ("D", ())
    # docker's and podman's rule (containers/storage pkg/archive
    # changes.go addChanges): a directory holding a change is changed too
    for p in list(out):
        q = p.rsplit("/", 1)[0]
        while q and q not in out:
            out[q] = ("C", ())
            q = q.rsplit("/", 1)[0]
    return out


def holders(d):
    """The parent directories of the paths of @d."""
    out = set()
    for p in d:
        q = p.rsplit("/", 1)[0]
        while q:
            out.add(q)
            q = q.rsplit("/", 1)[0]
    return out


def strata_diff(strata, *args):
    """strata diff --json: {path: (kind, changed)} with directories'
    mtime and "contents" left out (see py_diff), a directory left with no
    change kept only when it holds one, and the raw text."""
    r = strata("diff", "--json", *args)
    doc = json.loads(r.stdout)
    out = {}
    for c in doc["changes"]:
        w = tuple(sorted(c.get("changed", ())))
        if c["kind"] == "C" and c["type"] == "dir":
            w = tuple(x for x in w if x not in ("mtime", "contents"))
        out[c["path"]] = (c["kind"], w)
    held = holders(out)
    out = {p: v for p, v in out.items()
           if v != ("C", ()) or p in held}
    paths = [c["path"] for c in doc["changes"]]
    assert paths == sorted(paths, key=os.fsencode)
    return out, doc


def assert_diff(got, want):
    only_got = {k: v for k, v in got.items() if want.get(k) != v}
    only_want = {k: v for k, v in want.items() if got.get(k) != v}
    assert not only_got and not only_want, \
        f"strata diff: {sorted(only_got.items())}\n" \
        f"python:      {sorted(only_want.items())}"


def base_step(r):
    (r / "etc/sub").mkdir(parents=True)
    (r / "etc/conf").write_text("one\n")
    (r / "etc/same").write_text("same\n")
    (r / "etc/samesize").write_text("aaaa")
    (r / "etc/sub/deep").write_text("deep\n")
    (r / "gone/x").mkdir(parents=True)
    (r / "gone/x/f").write_text("f\n")
    (r / "dirfile").mkdir()
    (r / "dirfile/child").write_text("c\n")
    (r / "filedir").write_text("plain\n")
    (r / "opq").mkdir()
    for n in ("k1", "k2", "k3"):
        (r / "opq" / n).write_text(n)
    (r / "opq/sub").mkdir()
    (r / "opq/sub/old").write_text("old\n")
    (r / "mode").write_text("m\n")
    (r / "own").write_text("o\n")
    (r / "xat").write_text("x\n")
    os.setxattr(r / "xat", "user.color", b"red")
    (r / "mt").write_text("t\n")
    os.symlink("target-one", r / "ln")
    (r / "hl1").write_text("linked\n")
    os.link(r / "hl1", r / "hl2")
    (r / "rm-me").write_text("bye\n")
    for p in r.rglob("*"):
        os.utime(p, (MT, MT), follow_symlinks=False)


def change_step(r, dirfile=True):
    (r / "etc/conf").write_text("two, longer\n")
    (r / "etc/samesize").write_text("bbbb")
    os.utime(r / "etc/samesize", (MT, MT))
    shutil.rmtree(r / "gone")
    if dirfile:
        shutil.rmtree(r / "dirfile")
        (r / "dirfile").write_text("now a file\n")
    (r / "filedir").unlink()
    (r / "filedir").mkdir()
    (r / "filedir/inside").write_text("i\n")
    os.chmod(r / "mode", 0o600)
    os.chown(r / "own", 1234, 5678)
    os.setxattr(r / "xat", "user.color", b"blue")
    os.utime(r / "mt", (MT + 5, MT + 5))
    os.unlink(r / "ln")
    os.symlink("target-two", r / "ln")
    os.utime(r / "ln", (MT, MT), follow_symlinks=False)
    os.link(r / "etc/same", r / "etc/same-link")
    (r / "rm-me").unlink()
    (r / "new/a/b").mkdir(parents=True)
    (r / "new/a/b/file").write_text("new\n")


def make_images(tmp, dirfile=True):
    layout, bundle = tmp / "L", tmp / "bundle"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:t"])

    def step(fn):
        if bundle.exists():
            shutil.rmtree(bundle)
        run(["umoci", "unpack", "--image", f"{layout}:t", bundle])
        fn(bundle / "rootfs")
        run(["umoci", "repack", "--image", f"{layout}:t", bundle])
    step(base_step)
    run(["umoci", "tag", "--image", f"{layout}:t", "base"])
    step(lambda r: change_step(r, dirfile))
    run(["umoci", "config", "--image", f"{layout}:t", "--config.env", "X=1"])
    append_raw_layer(layout, "t", [
        tar_dir("opq", mtime=MT), tar_file("opq/.wh..wh..opq"),
        tar_file("opq/k2", b"k2", mtime=MT),
        tar_file("opq/k9", b"new", mtime=MT),
        tar_file(".wh.mt"), tar_dir("etc", mtime=MT + 7),
    ])
    shutil.rmtree(bundle)
    return layout


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """An OCI layout with tag base (one layer) and tag t: base, a layer of
    changes (umoci), a config-only entry, and a hand-made layer with an
    opaque directory and a whiteout."""
    tmp = tmp_path_factory.mktemp("imgs")
    layout = make_images(tmp)
    ra = umoci_rootfs(layout, "base", tmp / "ua")
    rb = umoci_rootfs(layout, "t", tmp / "ub")
    return layout, ra, rb


def test_diff_two_images_against_umoci_trees(images, strata):
    layout, ra, rb = images
    got, doc = strata_diff(strata, f"oci:{layout}:base", f"oci:{layout}:t")
    want = py_diff(ra, rb)
    assert_diff(got, want)
    # the cases the images were made for, so that a broken comparison on
    # both sides cannot hide them
    for p, v in {"/gone": ("D", ()), "/dirfile": ("C", ("type",)),
                 "/filedir": ("C", ("type",)), "/filedir/inside": ("A", ()),
                 "/mode": ("C", ("mode",)), "/own": ("C", ("owner",)),
                 "/xat": ("C", ("xattrs",)), "/ln": ("C", ("link",)),
                 "/etc/samesize": ("C", ("content",)),
                 "/etc/conf": ("C", ("mtime", "size")),
                 "/mt": ("D", ()), "/opq/k1": ("D", ()),
                 "/opq/sub": ("D", ()),
                 "/opq/k9": ("A", ()), "/new/a/b/file": ("A", ()),
                 "/etc/same-link": ("A", ())}.items():
        assert got.get(p) == v, (p, got.get(p))
    for p in ("/gone/x", "/gone/x/f", "/dirfile/child", "/etc/same",
              "/hl1", "/hl2"):
        assert p not in got
    # a directory whose own entry changed its mtime (explicit in the
    # hand-made layer): reported, with the mtime
    etc = [c for c in doc["changes"] if c["path"] == "/etc"]
    assert etc and etc[0]["changed"] == ["mtime"]
    # the text form: the same paths and kinds, podman's "K /path" lines
    text = strata("diff", f"oci:{layout}:base", f"oci:{layout}:t").stdout
    assert text.splitlines() == [f"{c['kind']} {c['path']}"
                                 for c in doc["changes"]]
    # reversed: added and deleted swap; an identical pair has no lines
    back, _ = strata_diff(strata, f"oci:{layout}:t", f"oci:{layout}:base")
    assert_diff(back, py_diff(rb, ra))
    assert strata("diff", f"oci:{layout}:t", f"oci:{layout}:t").stdout == ""


def test_diff_lines_against_podman(strata, podman, tmp_path):
    """podman image diff of the same two images (vfs store, its naive
    tree walk): every line podman prints, strata prints with the same
    kind. strata also reports what podman's walk does not look at: a
    file's bytes at the same size and mtime, xattrs other than
    security.capability, a symlink target of the same length, a
    directory's own mtime, and the parents of those changes."""
    # the same images without the directory umoci turns into a file: its
    # layer also whiteouts the old directory's child, under what is now a
    # file, and podman refuses that layer ("unlinkat /dirfile/child: not
    # a directory"). podman names a pulled layout after its path, in
    # lowercase.
    layout = make_images(tmp_path, dirfile=False)
    lay = tmp_path / "lay"
    shutil.copytree(layout, lay)
    ids = {tag: podman("pull", "-q", f"oci:{lay}:{tag}").stdout.split()[-1]
           for tag in ("base", "t")}
    # podman names the newer image first
    pod = podman("image", "diff", ids["t"], ids["base"]).stdout.split("\n")
    pod = {ln[2:]: ln[0] for ln in pod if ln.strip()}
    _, doc = strata_diff(strata, f"oci:{layout}:base", f"oci:{layout}:t")
    ours = {c["path"]: c for c in doc["changes"]}
    assert pod, "podman saw no change"
    for p, kind in sorted(pod.items()):
        assert p in ours and ours[p]["kind"] == kind, (p, kind, ours.get(p))
    podman_blind = {"content", "xattrs", "link", "mtime"}
    for p, c in ours.items():
        if p in pod:
            continue
        assert c["kind"] == "C", c
        w = set(c["changed"]) - {"contents"}
        # a parent listed only for what podman does not see
        assert w <= podman_blind, c
        if not w:
            assert any(q.startswith(p + "/") and q not in pod
                       for q in ours), c


def test_diff_stat_counts_and_bytes(images, strata):
    layout, ra, rb = images
    doc = json.loads(strata("diff", "--json", f"oci:{layout}:base",
                            f"oci:{layout}:t").stdout)
    ta, tb = entries(ra), entries(rb)
    want = {"A": [0, 0], "D": [0, 0], "C": [0, 0]}
    for c in doc["changes"]:
        p, k = c["path"], c["kind"]
        want[k][0] += 1
        if k == "D":
            want[k][1] += sum(e["size"] or 0 for q, e in ta.items()
                              if q == p or q.startswith(p + "/"))
        else:
            want[k][1] += tb[p]["size"] or 0
    s = json.loads(strata("diff", "--json", "--stat", f"oci:{layout}:base",
                          f"oci:{layout}:t").stdout)
    assert "changes" not in s
    for k, name in (("A", "added"), ("D", "deleted"), ("C", "changed")):
        assert [s["stat"][name]["entries"], s["stat"][name]["bytes"]] == \
            want[k], name
    text = strata("diff", "--stat", f"oci:{layout}:base",
                  f"oci:{layout}:t").stdout
    assert f"added:   {want['A'][0]} entries, {want['A'][1]} bytes" in text


def test_diff_of_a_mount_after_edits(images, strata, mount, tmp_path):
    layout, ra, rb = images
    upper = tmp_path / "upper"
    upper.mkdir()
    mnt = mount(f"oci:{layout}:base", f"upper={upper}")
    (mnt / "etc/conf").write_text("edited in the mount\n")
    os.chmod(mnt / "mode", 0o640)
    os.chown(mnt / "own", 42, 43)
    os.setxattr(mnt / "xat", "user.color", b"green")
    shutil.rmtree(mnt / "gone")
    (mnt / "rm-me").unlink()
    (mnt / "fresh/d").mkdir(parents=True)
    (mnt / "fresh/d/f").write_text("fresh\n")
    os.unlink(mnt / "ln")
    os.symlink("elsewhere", mnt / "ln")
    shutil.rmtree(mnt / "opq")
    (mnt / "opq").mkdir()
    (mnt / "opq/k1").write_text("k1")
    os.utime(mnt / "opq/k1", (MT, MT))
    (mnt / "opq/sub").mkdir()
    (mnt / "opq/sub/new").write_text("new\n")
    os.link(mnt / "etc/same", mnt / "etc/same-link")
    # a name of the image made a hardlink to a new file of the same size,
    # mode, owner and mtime: only the bytes differ, read through the
    # other name (the one the walk meets first)
    (mnt / "etc/other").write_text("zzzz")
    os.chmod(mnt / "etc/other", 0o644)
    os.utime(mnt / "etc/other", (MT, MT))
    (mnt / "etc/samesize").unlink()
    os.link(mnt / "etc/other", mnt / "etc/samesize")
    # and one whose bytes are the same: unchanged
    (mnt / "etc/sub/a-copy").write_text("deep\n")
    os.chmod(mnt / "etc/sub/a-copy", 0o644)
    os.utime(mnt / "etc/sub/a-copy", (MT, MT))
    (mnt / "etc/sub/deep").unlink()
    os.link(mnt / "etc/sub/a-copy", mnt / "etc/sub/deep")
    got, _ = strata_diff(strata, str(mnt))
    want = py_diff(ra, mnt)
    assert_diff(got, want)
    for p, v in {"/gone": ("D", ()), "/rm-me": ("D", ()),
                 "/fresh/d/f": ("A", ()), "/opq/k2": ("D", ()),
                 "/opq/sub/old": ("D", ()), "/opq/sub/new": ("A", ()),
                 "/ln": ("C", ("link", "mtime")), "/mode": ("C", ("mode",)),
                 "/etc/same-link": ("A", ()),
                 "/etc/samesize": ("C", ("content",))}.items():
        assert got.get(p) == v, (p, got.get(p))
    assert "/opq/k1" not in got and "/etc/sub/deep" not in got	# recreated as it was
    # the upper directory named directly gives the same answer
    again, _ = strata_diff(strata, "--upper", str(upper),
                           f"oci:{layout}:base")
    assert again == got


def _config_of(layout, tag):
    idx = json.loads((Path(layout) / "index.json").read_text())
    d = next(m for m in idx["manifests"] if m.get("annotations", {}).get(
        "org.opencontainers.image.ref.name") == tag)
    man = json.loads(read_blob(layout, d["digest"]))
    return idx, d, man, json.loads(read_blob(layout, man["config"]["digest"]))


def _content_bytes(layout, digest):
    raw = read_blob(layout, digest)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    with tarfile.open(fileobj=__import__("io").BytesIO(raw)) as t:
        return sum(m.size for m in t.getmembers() if m.isreg() and
                   not os.path.basename(m.name).startswith(".wh."))


def test_history_against_skopeo_and_umoci(images, strata):
    layout, _, _ = images
    ref = f"oci:{layout}:t"
    # not in the cache yet: the compressed size, marked
    man = _config_of(layout, "t")[2]
    rows = json.loads(strata("history", "--json", ref).stdout)
    assert [(r["layer"]["size"], r["layer"]["compressed_size"])
            for r in rows if r["layer"]] == \
        [(None, m["size"]) for m in reversed(man["layers"])]
    assert "*" in strata("history", ref).stdout
    strata("import", ref, "hist:t")     # caches the layers: sizes known
    rows = json.loads(strata("history", "--json", ref).stdout)
    cfg = json.loads(run(["skopeo", "inspect", "--config",
                          f"oci:{layout}:t"]).stdout)
    hist = list(reversed(cfg["history"]))
    assert [(r["created"], r["created_by"], r["comment"],
             r["empty_layer"]) for r in rows] == \
        [(h.get("created"), h.get("created_by"), h.get("comment"),
          bool(h.get("empty_layer"))) for h in hist]
    st = json.loads(run(["umoci", "stat", "--image", f"{layout}:t",
                        "--json"]).stdout)
    want = [h.get("layer", {}) and h["layer"].get("digest")
            for h in reversed(st["history"])]
    assert [r["layer"] and r["layer"]["digest"] for r in rows] == \
        [w or None for w in want]
    assert rows[1]["empty_layer"] and rows[1]["layer"] is None
    for r in rows:
        if r["layer"]:
            assert r["layer"]["size"] == _content_bytes(
                layout, r["layer"]["digest"])
    text = strata("history", ref).stdout.splitlines()
    assert text[0].split()[:2] == ["LAYER", "CREATED"]
    assert len(text) == len(rows) + 1
    assert text[2].split()[0] == "-" and " 0B " in text[2]


def test_history_short_or_missing(images, strata, tmp_path):
    layout, _, _ = images
    lay = tmp_path / "L"
    shutil.copytree(layout, lay)
    idx, d, man, cfg = _config_of(lay, "t")
    n_layers = len(man["layers"])
    for keep, label in ((None, "none"), (1, "short")):
        c = dict(cfg)
        if keep is None:
            c.pop("history")
        else:
            c["history"] = cfg["history"][:keep]
        cd, cs = write_blob(lay, _json_bytes(c))
        m = dict(man, config=dict(man["config"], digest=cd, size=cs))
        md, ms = write_blob(lay, _json_bytes(m))
        idx["manifests"].append(dict(d, digest=md, size=ms, annotations={
            "org.opencontainers.image.ref.name": label}))
    (lay / "index.json").write_text(json.dumps(idx))
    r = strata("history", "--json", f"oci:{lay}:none")
    rows = json.loads(r.stdout)
    assert len(rows) == n_layers and all(x["created_by"] is None
                                         for x in rows)
    assert f"{n_layers} layers without a history entry" in r.stderr
    r = strata("history", f"oci:{lay}:short")
    assert "without a history entry" in r.stderr
    assert r.stdout.count("<no history>") == n_layers - 1


def test_hostile_and_usage(images, strata, mount, tmp_path):
    layout, _, _ = images
    ro = mount(f"oci:{layout}:base")    # no upper directory: nothing to say
    r = strata("diff", str(ro), check=False)
    assert r.returncode == 1 and "not a writable stratafs mount" in r.stderr
    r = strata("diff", f"oci:{layout}:nope", f"oci:{layout}:t", check=False)
    assert r.returncode == 1 and f"oci:{layout}:nope" in r.stderr
    r = strata("history", "no-such-image:1", check=False)
    assert r.returncode == 1 and "no-such-image:1" in r.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    r = strata("diff", str(plain), check=False)
    assert r.returncode == 1 and "not a writable stratafs mount" in r.stderr
    r = strata("diff", str(tmp_path / "missing"), check=False)
    assert r.returncode == 1 and "missing" in r.stderr
    # an upper directory made over another image: a metacopy file whose
    # data this image does not have is an error naming file and image
    upper = tmp_path / "up"
    upper.mkdir()
    (upper / "only-elsewhere").write_text("")
    os.setxattr(upper / "only-elsewhere", "user.overlay.metacopy", b"")
    r = strata("diff", "--upper", str(upper), f"oci:{layout}:base",
               check=False)
    assert r.returncode == 1
    assert "only-elsewhere" in r.stderr and f"oci:{layout}:base" in r.stderr
    for args in ((), ("a", "b", "c"), ("--bogus", "a", "b"),
                 ("--upper",), ("--upper", "d", "a", "b")):
        r = strata("diff", *args, check=False)
        assert r.returncode == 2 and "usage: strata diff" in r.stderr
    r = strata("history", check=False)
    assert r.returncode == 2 and "usage: strata history" in r.stderr
    assert "--no-trunc" in strata("history", "--help").stdout
    assert "--upper DIR" in strata("diff", "--help").stdout
