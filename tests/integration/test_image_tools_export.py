"""strata export and strata commit --squash (issue 12, item 4), checked
against independent answers: GNU tar extracting the export compared with
umoci unpack of the same image, Python's tarfile reading the PAX records,
skopeo, oci-image-tool and umoci reading the squashed image."""
import json
import os
import pty
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import (STRATA, append_raw_layer, assert_same_tree, run,
                      tar_dir, tar_file, tree, umoci_rootfs)

LONG = "d" * 60 + "/" + "e" * 70 + "/long-name-" + "f" * 40


def layer1(root):
    (root / "etc").mkdir()
    (root / "etc/motd").write_text("hello\n")
    (root / "etc/keep").write_text("keep\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(os.urandom(200_000))
    os.chmod(root / "usr/bin/tool", 0o4755)
    (root / "empty").write_bytes(b"")
    (root / "owned").write_text("owned\n")
    os.chown(root / "owned", 1234, 5678)
    (root / "xa").write_text("xattrs\n")
    os.setxattr(root / "xa", "user.note", b"a\0b")
    os.setxattr(root / "xa", "trusted.t", b"trusted")
    (root / "data/sub").mkdir(parents=True)
    os.setxattr(root / "data", "user.dir", b"d")
    os.chmod(root / "data", 0o750)
    os.chown(root / "data", 1000, 1000)
    (root / "data/h1").write_text("linked\n")
    os.link(root / "data/h1", root / "data/h2")
    os.link(root / "data/h1", root / "data/sub/h3")
    os.symlink("../etc/motd", root / "data/rel")
    os.symlink("/etc/keep", root / "data/abs")
    os.symlink("nowhere", root / "data/dangling")
    os.mknod(root / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(root / "sda", 0o660 | 0o060000, os.makedev(8, 0))
    os.mkfifo(root / "fifo")
    (root / LONG).parent.mkdir(parents=True)
    (root / LONG).write_text("long\n")
    (root / "caf\u00e9").write_text("utf-8 name\n")
    (root / "old/inner").mkdir(parents=True)
    (root / "old/inner/x").write_text("x\n")
    (root / "old/y").write_text("y\n")


def layer2(root):
    (root / "etc/motd").unlink()                # a whiteout
    (root / "data/h1").unlink()                 # h2, h3 stay linked
    shutil.rmtree(root / "old")                 # replaced: opaque or
    (root / "old").mkdir()                      # whiteouts, as umoci
    (root / "old/z").write_text("z\n")          # writes it
    (root / "etc/added").write_text("added\n")
    os.chmod(root / "etc", 0o711)


def build(tmp, name, steps):
    """An image built with umoci, one layer per step (conftest's
    umoci_image, at module scope)."""
    layout, bundle = tmp / name, tmp / f"{name}-bundle"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:t"])
    for step in steps:
        if bundle.exists():
            shutil.rmtree(bundle)
        run(["umoci", "unpack", "--image", f"{layout}:t", bundle])
        step(bundle / "rootfs")
        run(["umoci", "repack", "--image", f"{layout}:t", bundle])
    shutil.rmtree(bundle)
    return layout


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """(layout, umoci rootfs) of the image: two umoci layers and one
    with sub-second times (umoci writes whole seconds) and a whiteout in a
    directory no layer has."""
    tmp = tmp_path_factory.mktemp("export")
    layout = build(tmp, "img", [layer1, layer2])
    ghost = tarfile.TarInfo("ghost/.wh.nothing")   # W8: not shown, and
    append_raw_layer(layout, "t", [                 # no "ghost" dir either
        tar_dir("nsdir", mtime=1600000000.25),
        tar_file("nsdir/ns", b"sub-second\n", mtime=1600000000.5),
        (ghost, b"")])
    return layout, umoci_rootfs(layout, "t", tmp / "unpacked")


def gnu_untar(tarball, dest):
    dest.mkdir()
    run(["tar", "-x", "--xattrs", "--xattrs-include=*", "--numeric-owner",
         "-p", "-f", tarball, "-C", dest])
    return dest


def without_dir_mtimes(t):
    """umoci stamps directories it changed with the time of unpack."""
    import stat
    return {k: (v[:5] + (None,) + v[6:]) if stat.S_ISDIR(v[0]) else v
            for k, v in t.items()}


def test_export_equals_umoci_unpack(image, strata, mount, tmp_path):
    layout, ref = image
    strata("export", f"oci:{layout}:t", tmp_path / "out.tar")
    got = gnu_untar(tmp_path / "out.tar", tmp_path / "x")
    (ta, la), (tb, lb) = tree(got), tree(ref)
    ta, tb = without_dir_mtimes(ta), without_dir_mtimes(tb)
    assert sorted(set(ta) ^ set(tb)) == []
    diffs = [(k, ta[k], tb[k]) for k in sorted(ta) if ta[k] != tb[k]]
    assert not diffs, diffs[:10]
    assert la == lb == [["/data/h2", "/data/sub/h3"]]
    assert "/etc/motd" not in ta and "/old/z" in ta and "/old/y" not in ta
    assert ta["/nsdir/ns"][5] == 1600000000_500000000
    assert "/ghost" not in ta
    assert ta["/xa"][7] == (("trusted.t", b"trusted"), ("user.note", b"a\0b"))
    # directory times too: as the mount shows them
    assert_same_tree(got, mount(f"oci:{layout}:t"))


def test_export_reproducible_pax_sorted(image, strata, tmp_path):
    layout, _ = image
    strata("export", f"oci:{layout}:t", tmp_path / "a.tar")
    with open(tmp_path / "b.tar", "wb") as f:      # to a pipe, not a file
        p = subprocess.Popen([STRATA, "export", f"oci:{layout}:t", "-"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        shutil.copyfileobj(p.stdout, f)
        assert p.wait() == 0, p.stderr.read()
        assert p.stderr.read() == b""            # no progress when piped
    a, b = (tmp_path / "a.tar").read_bytes(), (tmp_path / "b.tar").read_bytes()
    assert a == b
    with tarfile.open(tmp_path / "a.tar") as t:
        members = t.getmembers()
        names = [m.name.rstrip("/") for m in members]
        byname = {n: m for n, m in zip(names, members)}
        assert names[0] == "."
        # each directory before its contents, names bytewise in each
        keys = [[c.encode() for c in n.split("/")] for n in names[1:]]
        assert keys == sorted(keys)
        assert byname["nsdir/ns"].pax_headers["mtime"] == "1600000000.5"
        assert byname["nsdir"].pax_headers["mtime"] == "1600000000.25"
        assert byname["xa"].pax_headers["SCHILY.xattr.user.note"] == "a\0b"
        assert byname["data"].pax_headers["SCHILY.xattr.user.dir"] == "d"
        assert byname[LONG].pax_headers["path"] == LONG
        assert byname["data/h2"].isfile()
        assert byname["data/sub/h3"].islnk()
        assert byname["data/sub/h3"].linkname == "data/h2"
        assert byname["null"].ischr() and (byname["null"].devmajor,
                                           byname["null"].devminor) == (1, 3)
        assert byname["sda"].isblk() and byname["fifo"].isfifo()
        assert (byname["owned"].uid, byname["owned"].gid) == (1234, 5678)
        assert byname["usr/bin/tool"].mode == 0o4755
        assert all(m.uname == "" and m.gname == "" for m in members)
        assert "atime" not in str([m.pax_headers for m in members])


def test_export_hostile(image, strata, tmp_path):
    layout, _ = image
    r = strata("export", "nosuch:1", tmp_path / "o.tar", check=False)
    assert r.returncode == 1 and "nosuch" in r.stderr
    r = strata("export", f"oci:{layout}:t", tmp_path / "no/such/dir/o.tar",
               check=False)
    assert r.returncode == 1 and "no/such/dir" in r.stderr
    assert not (tmp_path / "no").exists()
    assert sorted(os.listdir(tmp_path)) == ["store"]  # no temp file left
    (tmp_path / "isdir.tar").mkdir()
    r = strata("export", f"oci:{layout}:t", tmp_path / "isdir.tar",
               check=False)
    assert r.returncode == 1 and "isdir.tar" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["isdir.tar", "store"]
    master, slave = pty.openpty()
    try:
        p = subprocess.run([STRATA, "export", f"oci:{layout}:t", "-"],
                           stdout=slave, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 2 and "terminal" in p.stderr
    r = strata("export", f"oci:{layout}:t", check=False)
    assert r.returncode == 2 and "missing FILE" in r.stderr
    r = strata("export", "--help")
    assert "strata export" in r.stdout
    # an image of no layers: an empty tar
    run(["umoci", "init", "--layout", tmp_path / "empty"])
    run(["umoci", "new", "--image", f"{tmp_path}/empty:e"])
    strata("export", f"oci:{tmp_path}/empty:e", tmp_path / "e.tar")
    with tarfile.open(tmp_path / "e.tar") as t:
        assert t.getmembers() == []


def edits(m):
    (m / "etc/new").write_text("new\n")
    (m / "etc/keep").write_text("changed\n")
    (m / "owned").unlink()
    shutil.rmtree(m / "data/sub")
    os.chmod(m / "usr/bin/tool", 0o755)
    os.setxattr(m / "etc/new", "user.n", b"1")
    os.link(m / "etc/new", m / "etc/new-link")
    (m / "newdir/deep").mkdir(parents=True)
    (m / "newdir/deep/f").write_text("f\n")


def manifest_config(layout, tag):
    out = json.loads(run(["skopeo", "inspect", "--raw",
                          f"oci:{layout}:{tag}"]).stdout)
    cfg = json.loads(run(["skopeo", "inspect", "--config",
                          f"oci:{layout}:{tag}"]).stdout)
    return out, cfg


def test_commit_squash(image, strata, mount, tmp_path):
    src, ref = image
    layout = tmp_path / "layout"
    shutil.copytree(src, layout)
    up = tmp_path / "up"
    mnt = mount(f"oci:{layout}:t", opts=f"upper={up}")
    edits(mnt)
    strata("commit", "--squash", "-m", "squashed", str(mnt), ":sq")
    man, cfg = manifest_config(layout, "sq")
    assert len(man["layers"]) == 1
    assert len(cfg["rootfs"]["diff_ids"]) == 1
    assert [h.get("comment") for h in cfg["history"]] == ["squashed"]
    assert "empty_layer" not in cfg["history"][0]
    run(["oci-image-tool", "validate", "--type", "image", layout])
    got = umoci_rootfs(layout, "sq", tmp_path / "u1")
    assert_same_tree(mnt, got, ignore=("/",))
    # the layer carries no whiteouts: the deletions are simply absent
    with tarfile.open(layout / "blobs/sha256" /
                      man["layers"][0]["digest"].split(":")[1]) as t:
        assert not [n for n in t.getnames() if ".wh." in n]
    # the other form, to a docker-archive, /etc masked: the image's own
    # /etc stays (a mask leaves out changes), the rest is the mount's
    arch = tmp_path / "sq.tar"
    strata("commit", "--squash", "--mask-path", "/etc", "--upper", up,
           "--from", f"oci:{layout}:t", f"docker-archive:{arch}:sq:1")
    info = json.loads(run(["skopeo", "inspect",
                           f"docker-archive:{arch}"]).stdout)
    assert len(info["Layers"]) == 1
    run(["skopeo", "copy", f"docker-archive:{arch}", f"oci:{layout}:da"])
    got2 = umoci_rootfs(layout, "da", tmp_path / "u2")
    assert_same_tree(got2 / "etc", ref / "etc")
    t1, t2 = tree(got)[0], tree(got2)[0]
    assert {k: v for k, v in t1.items() if not k.startswith("/etc")} == \
        {k: v for k, v in t2.items() if not k.startswith("/etc")}
    assert (got2 / "etc/keep").read_text() == "keep\n"


def test_export_of_a_writable_mount(image, strata, mount, tmp_path):
    """`strata export MOUNTPOINT` gives what the mount shows now (image and
    changes, as `docker export` gives a container): GNU tar's extraction
    equals the tree read through the mount; a read-only mount is refused
    by name."""
    src, ref = image
    up = tmp_path / "up"
    mnt = mount(f"oci:{src}:t", opts=f"upper={up}")
    edits(mnt)
    strata("export", mnt, tmp_path / "live.tar")
    got = gnu_untar(tmp_path / "live.tar", tmp_path / "x")
    assert_same_tree(got, mnt, ignore=("/",))
    assert (got / "etc/new").read_text() == "new\n"
    assert not (got / "owned").exists() and not (got / "data/sub").exists()
    assert os.stat(got / "etc/new").st_ino == \
        os.stat(got / "etc/new-link").st_ino
    # the mount still takes writes afterwards (thawed)
    (mnt / "after").write_text("x")
    ro = mount(f"oci:{src}:t")
    r = strata("export", ro, tmp_path / "ro.tar", check=False)
    assert r.returncode == 1 and str(ro) in r.stderr, r.stderr
    assert not (tmp_path / "ro.tar").exists()
