"""strata commit: an upper directory made by the kernel overlay (the
independent producer) becomes a layer that umoci, skopeo, oci-image-tool and
stratafs read back as exactly the overlay's merged view."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import (STRATA, assert_same_tree, is_mounted, run, umoci_rootfs,
                      unmount)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gotar"))
import difftar  # noqa: E402


def base_steps(root):
    (root / "bin").mkdir()
    shutil.copy("/usr/bin/busybox", root / "bin/busybox")
    os.symlink("busybox", root / "bin/sh")
    os.symlink("busybox", root / "bin/cat")
    (root / "etc/sub/deeper").mkdir(parents=True)
    (root / "etc/motd").write_text("hello\n")
    (root / "etc/modify").write_text("before\n")
    (root / "etc/chmod").write_text("chmod me\n" * 1000)
    (root / "etc/sub/a").write_text("a\n")
    (root / "etc/sub/deeper/b").write_text("b\n")
    (root / "olddir/deep").mkdir(parents=True)
    (root / "olddir/deep/f").write_text("f\n")
    (root / "olddir/g").write_text("g\n")
    (root / "recreate").mkdir()
    (root / "recreate/old").write_text("old\n")
    (root / "rename-me").write_text("renamed\n")
    (root / "var/lib/data").mkdir(parents=True)
    (root / "var/cache").mkdir(parents=True)
    (root / "tmp").mkdir()


@pytest.fixture
def base(umoci_image, tmp_path):
    """(layout, tag, rootfs): a two-layer image and its umoci unpack."""
    def second(root):
        (root / "etc/second").write_text("2\n")
    layout, tag = umoci_image([base_steps, second], name="base")
    rootfs = umoci_rootfs(layout, tag, tmp_path / "base-unpacked")
    return layout, tag, rootfs


@pytest.fixture
def overlay(tmp_path):
    """overlay(lower, opts='') -> (merged, upper): a kernel overlay mount,
    unmounted in the finalizer."""
    made = []

    def do(lower, opts="", name="ovl"):
        d = tmp_path / name
        for sub in ("upper", "work", "merged"):
            (d / sub).mkdir(parents=True)
        o = f"lowerdir={lower},upperdir={d}/upper,workdir={d}/work"
        if opts:
            o += "," + opts
        made.append(d / "merged")
        run(["mount", "-t", "overlay", "-o", o, "overlay", d / "merged"])
        assert is_mounted(d / "merged")
        return d / "merged", d / "upper"
    yield do
    for m in reversed(made):
        subprocess.run(["umount", str(m)], capture_output=True)
        unmount(m)


def every_change(m):
    (m / "etc/new").write_text("new file\n")
    (m / "etc/modify").write_text("after\n")
    (m / "etc/motd").unlink()
    shutil.rmtree(m / "etc/sub")
    shutil.rmtree(m / "recreate")
    (m / "recreate").mkdir()
    (m / "recreate/fresh").write_text("fresh\n")
    os.rename(m / "rename-me", m / "renamed")
    os.rename(m / "olddir", m / "newdir")
    (m / "newdir/added").write_text("added\n")
    (m / "newdir/g").unlink()
    os.chmod(m / "etc/chmod", 0o600)
    os.chown(m / "etc/second", 1234, 5678)
    os.setxattr(m / "etc/new", "user.note", b"x\0y")
    os.link(m / "etc/new", m / "etc/new-link")
    os.symlink("../etc/new", m / "bin/newlink")
    os.mkfifo(m / "fifo")
    (m / "emptydir").mkdir()


def layer_tar(layout, tag):
    layout = Path(layout)
    idx = json.loads((layout / "index.json").read_text())
    desc = [d for d in idx["manifests"]
            if d.get("annotations", {}).get(
                "org.opencontainers.image.ref.name") == tag][0]
    man = json.loads((layout / "blobs/sha256" /
                      desc["digest"].split(":")[1]).read_text())
    last = man["layers"][-1]
    return man, last, layout / "blobs/sha256" / last["digest"].split(":")[1]


def commit(strata, *args, check=True):
    return strata("commit", *args, check=check)


@pytest.mark.parametrize("opts", ["redirect_dir=on",
                                  "redirect_dir=on,metacopy=on"])
def test_round_trip(base, overlay, strata, mount, tmp_path, opts):
    layout, tag, rootfs = base
    merged, upper = overlay(rootfs, opts)
    every_change(merged)
    r = commit(strata, "--upper", upper, "--from", f"oci:{layout}:{tag}",
               f"oci:{layout}:new", "--message", "every change")
    digest = r.stdout.strip()
    assert digest.startswith("sha256:")
    # umoci's unpack of the commit is the overlay's merged view
    out = umoci_rootfs(layout, "new", tmp_path / "committed")
    assert_same_tree(merged, out)
    # and so is a stratafs mount of it
    mnt = mount(f"oci:{layout}:new")
    assert_same_tree(merged, mnt)
    # the whiteouts are exactly the deletions, in OCI form
    man, last, blob = layer_tar(layout, "new")
    assert last["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    with tarfile.open(blob) as t:
        names = [m.name for m in t.getmembers()]
        members = {m.name: m for m in t.getmembers()}
    wh = sorted(n for n in names if os.path.basename(n).startswith(".wh."))
    assert wh == sorted(["etc/.wh.motd", "etc/.wh.sub",
                         "recreate/.wh..wh..opq", ".wh.olddir",
                         ".wh.rename-me"])
    # parents before children, whiteouts before their siblings
    for i, n in enumerate(names):
        parent = os.path.dirname(n)
        if parent and parent != ".":
            assert parent in names[:i], n
        if os.path.basename(n).startswith(".wh."):
            sib = [x for x in names[:i] if os.path.dirname(x) == parent
                   and x != "." and
                   not os.path.basename(x).startswith(".wh.")]
            assert not sib, (n, sib)
    # the renamed directory is written in full, hardlinks as hardlinks
    assert "newdir/deep/f" in names and "newdir/added" in names
    assert "newdir/g" not in names
    assert {members["etc/new"].type, members["etc/new-link"].type} == \
        {tarfile.REGTYPE, tarfile.LNKTYPE}
    assert members["etc/new"].uname == "" and members["etc/new"].gname == ""
    assert members["etc/new"].pax_headers["SCHILY.xattr.user.note"]
    assert not any(k.startswith("SCHILY.xattr.trusted.overlay")
                   for m in members.values() for k in m.pax_headers)
    # unchanged files of the image are not in the layer
    assert "bin/busybox" not in names and "etc/modify" in names
    if "metacopy" in opts:
        # the chmod'ed file was a metadata-only copy-up: data from the image
        assert os.getxattr(upper / "etc/chmod", "trusted.overlay.metacopy") \
            is not None
        assert t_read(blob, "etc/chmod") == b"chmod me\n" * 1000


OLD_TIMES = {"etc/half": (-86401, 500000000),      # 1969-12-31 00:00:00.5
             "etc/whole": (-3600 * 24 * 365, 0),      # 1969-01-01
             "etc/late": (-1, 999999999)}             # 1 ns before 1970


def test_times_before_1970(base, overlay, strata, mount, tmp_path):
    """Files dated before 1970 keep their times to the nanosecond: the
    layer carries each in a PAX mtime record, as Go's tar writer does
    (they were written as 0, with the fraction kept). Python's tarfile
    and Go's archive/tar read the committed layer's times, and umoci's
    unpack of the image sets them, as the overlay's lstat gave them."""
    layout, tag, rootfs = base
    merged, upper = overlay(rootfs)
    for name, (sec, ns) in OLD_TIMES.items():
        (merged / name).write_text(name + "\n")
        os.utime(merged / name, ns=(0, sec * 10**9 + ns), follow_symlinks=False)
    want = {n: os.lstat(merged / n).st_mtime_ns for n in OLD_TIMES}
    assert want == {n: s * 10**9 + ns for n, (s, ns) in OLD_TIMES.items()}
    commit(strata, "--upper", upper, "--from", f"oci:{layout}:{tag}",
           f"oci:{layout}:old")
    _, _, blob = layer_tar(layout, "old")
    with tarfile.open(blob) as t:
        py = {m.name: m.pax_headers.get("mtime") for m in t.getmembers()
              if m.name in OLD_TIMES}
    assert py == {"etc/half": "-86400.5", "etc/whole": "-31536000",
                  "etc/late": "-0.000000001"}, py
    go, end = difftar.read_go(difftar.build_gotar(tmp_path / "go"), blob,
                              True)
    assert end.get("ok", True), end
    got = {e["name"]: e["mtime_sec"] * 10**9 + e["mtime_nsec"] for e in go
           if e["name"] in OLD_TIMES}
    assert got == want, got
    out = umoci_rootfs(layout, "old", tmp_path / "unpacked")
    assert {n: os.lstat(out / n).st_mtime_ns for n in OLD_TIMES} == want
    # zstd:chunked: its table of contents gives the same times (a lazy
    # mount serves the TOC's word before any fill)
    commit(strata, "--upper", upper, "--from", f"oci:{layout}:{tag}",
           "--compression", "zstd:chunked", f"oci:{layout}:oldz")
    mnt = mount(f"oci:{layout}:oldz", opts="prefetch=0")
    assert {n: os.lstat(mnt / n).st_mtime_ns for n in OLD_TIMES} == want


def t_read(blob, name):
    with tarfile.open(blob) as t:
        return t.extractfile(name).read()


def test_peers_accept(base, overlay, strata, mount, tmp_path):
    layout, tag, rootfs = base
    merged, upper = overlay(rootfs, "redirect_dir=on")
    every_change(merged)
    for comp in ("gzip", "none", "zstd"):
        commit(strata, "--upper", upper, "--from", f"oci:{layout}:{tag}",
               f"oci:{layout}:{comp}", "--compression", comp)
        man, last, _ = layer_tar(layout, comp)
        want = {"gzip": "+gzip", "none": "", "zstd": "+zstd"}[comp]
        assert last["mediaType"] == \
            "application/vnd.oci.image.layer.v1.tar" + want
        # skopeo: to docker-archive and oci-archive and back
        da = tmp_path / f"{comp}-docker.tar"
        oa = tmp_path / f"{comp}-oci.tar"
        back = tmp_path / f"{comp}-back"
        if comp != "zstd":      # skopeo: no zstd in docker images
            run(["skopeo", "copy", f"oci:{layout}:{comp}",
                 f"docker-archive:{da}:x/y:{comp}"])
            run(["skopeo", "copy", f"docker-archive:{da}", f"oci:{back}:a"])
        run(["skopeo", "copy", f"oci:{layout}:{comp}", f"oci-archive:{oa}:z"])
        run(["skopeo", "copy", f"oci-archive:{oa}:z", f"oci:{back}:b"])
        if comp != "zstd":
            out = umoci_rootfs(back, "b", tmp_path / f"{comp}-b")
            assert_same_tree(merged, out)
        else:                   # umoci cannot read zstd layers
            assert_same_tree(merged, mount(f"oci:{back}:b"))
        if comp != "zstd":
            fresh = tmp_path / f"{comp}-fresh"
            run(["skopeo", "copy", f"oci:{layout}:{comp}", f"oci:{fresh}:v"])
            run(["oci-image-tool", "validate", "--type", "image", fresh])


def test_zstd_mounts(base, overlay, strata, mount):
    layout, tag, rootfs = base
    merged, upper = overlay(rootfs, "redirect_dir=on")
    every_change(merged)
    commit(strata, "--upper", upper, "--from", f"oci:{layout}:{tag}",
           f"oci:{layout}:z", "--compression", "zstd")
    assert_same_tree(merged, mount(f"oci:{layout}:z"))


def test_config_edits_and_history(base, overlay, strata):
    layout, tag, rootfs = base
    merged, upper = overlay(rootfs)
    (merged / "hello").write_text("hi\n")
    commit(strata, "--upper", upper, "--from", f"oci:{layout}:{tag}",
           f"oci:{layout}:cfg", "--message", "tune", "--author", "ops",
           "--created-by", "test suite", "--created", "2021-02-03T04:05:06Z",
           "--env", "A=1", "--env", "B=2", "--unset-env", "B",
           "--entrypoint", '["/bin/sh","-c"]', "--cmd", "echo hi",
           "--workdir", "/etc", "--user", "12:34", "--label", "k=v",
           "--label", "gone=1", "--unset-label", "gone", "--expose", "80",
           "--expose", "53/udp", "--volume", "/srv", "--tag", "cfg2")
    cfg = json.loads(run(["skopeo", "inspect", "--config",
                          f"oci:{layout}:cfg"]).stdout)
    c = cfg["config"]
    assert "A=1" in c["Env"] and not any(e.startswith("B=") for e in c["Env"])
    assert c["Entrypoint"] == ["/bin/sh", "-c"]
    assert c["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert c["WorkingDir"] == "/etc" and c["User"] == "12:34"
    assert c["Labels"] == {"k": "v"}
    assert set(c["ExposedPorts"]) == {"80/tcp", "53/udp"}
    assert set(c["Volumes"]) == {"/srv"}
    h = cfg["history"][-1]
    assert h["comment"] == "tune" and h["author"] == "ops"
    assert h["created_by"] == "test suite"
    assert h["created"] == "2021-02-03T04:05:06Z"
    assert "empty_layer" not in h
    assert cfg["created"] == "2021-02-03T04:05:06Z"
    assert len(cfg["rootfs"]["diff_ids"]) == 3
    # --tag: the extra tag names the same manifest
    a = run(["skopeo", "inspect", f"oci:{layout}:cfg"]).stdout
    b = run(["skopeo", "inspect", f"oci:{layout}:cfg2"]).stdout
    assert json.loads(a)["Digest"] == json.loads(b)["Digest"]
    # removal forms
    commit(strata, "--upper", tmp_path_empty(upper), "--from",
           f"oci:{layout}:cfg", f"oci:{layout}:cfg3", "--unset-entrypoint",
           "--unset-cmd", "--unset-workdir", "--unset-user",
           "--unset-expose", "80", "--unset-volume", "/srv")
    cfg3 = json.loads(run(["skopeo", "inspect", "--config",
                           f"oci:{layout}:cfg3"]).stdout)
    c3 = cfg3["config"]
    for k in ("Entrypoint", "Cmd", "WorkingDir", "User", "Volumes"):
        assert k not in c3, k
    assert set(c3["ExposedPorts"]) == {"53/udp"}
    # config only: an empty_layer history entry and no new layer
    assert cfg3["history"][-1]["empty_layer"] is True
    assert cfg3["rootfs"]["diff_ids"] == cfg["rootfs"]["diff_ids"]


def tmp_path_empty(upper):
    d = Path(str(upper) + "-empty")
    d.mkdir(exist_ok=True)
    return d


def test_reproducible(base, overlay, strata, tmp_path):
    layout, tag, rootfs = base
    merged, upper = overlay(rootfs, "redirect_dir=on")
    every_change(merged)
    digests = []
    for comp in ("gzip", "zstd", "none"):
        seen = set()
        for i in range(2):
            r = commit(strata, "--upper", upper, "--from",
                       f"oci:{layout}:{tag}", f"oci:{layout}:r{comp}{i}",
                       "--created", "1600000000", "--compression", comp)
            seen.add(r.stdout.strip())
        assert len(seen) == 1, comp
        digests.append(seen.pop())
    # the same tar under each compression: one diff_id
    ids = set()
    for comp in ("gzip", "zstd", "none"):
        cfg = json.loads(run(["skopeo", "inspect", "--config",
                              f"oci:{layout}:r{comp}0"]).stdout)
        ids.add(cfg["rootfs"]["diff_ids"][-1])
    assert len(ids) == 1
    # SOURCE_DATE_EPOCH is --created, and clamps file times
    env = dict(os.environ, SOURCE_DATE_EPOCH="1600000000")
    r = run([STRATA, "commit", "--upper", upper, "--from",
             f"oci:{layout}:{tag}", f"oci:{layout}:sde"], env=env)
    assert r.stdout.strip() == digests[0]
    _, _, blob = layer_tar(layout, "sde")
    with tarfile.open(blob) as t:
        assert max(m.mtime for m in t.getmembers()) <= 1600000000


def test_mask_paths_and_volumes(base, overlay, strata, tmp_path):
    layout, tag, rootfs = base
    # an image declaring /var/lib/data a volume
    commit(strata, "--upper", tmp_path_empty(tmp_path / "e"), "--from",
           f"oci:{layout}:{tag}", f"oci:{layout}:vol", "--volume",
           "/var/lib/data")
    merged, upper = overlay(rootfs)
    (merged / "var/lib/data/db").write_text("db\n")
    (merged / "var/cache/c").write_text("c\n")
    (merged / "tmp/t").write_text("t\n")
    (merged / "etc/kept").write_text("k\n")
    commit(strata, "--upper", upper, "--from", f"oci:{layout}:vol",
           f"oci:{layout}:masked", "--mask-path", "/var/cache",
           "--mask-path", "tmp/")
    _, _, blob = layer_tar(layout, "masked")
    with tarfile.open(blob) as t:
        names = sorted(m.name for m in t.getmembers())
    assert names == [".", "etc", "etc/kept"]
    commit(strata, "--upper", upper, "--from", f"oci:{layout}:vol",
           f"oci:{layout}:unmasked", "--no-mask-volumes")
    _, _, blob = layer_tar(layout, "unmasked")
    with tarfile.open(blob) as t:
        names = sorted(m.name for m in t.getmembers())
    assert "var/lib/data/db" in names and "var/cache/c" in names
    # only masked changes: nothing to commit
    merged2, upper2 = overlay(rootfs, name="ovl2")
    (merged2 / "tmp/only").write_text("x\n")
    r = commit(strata, "--upper", upper2, "--from", f"oci:{layout}:vol",
               f"oci:{layout}:none", "--mask-path", "/tmp", check=False)
    assert r.returncode == 1 and "nothing to commit" in r.stderr


def test_nothing_to_commit(base, strata, tmp_path):
    layout, tag, rootfs = base
    before = sorted(p.name for p in (Path(layout) / "blobs/sha256").iterdir())
    index = (Path(layout) / "index.json").read_bytes()
    r = commit(strata, "--upper", tmp_path_empty(tmp_path / "u"), "--from",
               f"oci:{layout}:{tag}", f"oci:{layout}:nothing", check=False)
    assert r.returncode == 1
    assert "nothing to commit" in r.stderr and r.stdout == ""
    assert sorted(p.name for p in (Path(layout) / "blobs/sha256").iterdir()) \
        == before
    assert (Path(layout) / "index.json").read_bytes() == index


def test_only_new_blobs_and_old_tags_kept(base, overlay, strata):
    layout, tag, rootfs = base
    before = {p.name for p in (Path(layout) / "blobs/sha256").iterdir()}
    old = run(["skopeo", "inspect", f"oci:{layout}:{tag}"]).stdout
    merged, upper = overlay(rootfs)
    (merged / "x").write_text("x\n")
    commit(strata, "--upper", upper, "--from", f"oci:{layout}:{tag}",
           f":{tag}-2")
    after = {p.name for p in (Path(layout) / "blobs/sha256").iterdir()}
    assert len(after - before) == 3     # layer, config, manifest
    assert before <= after
    assert run(["skopeo", "inspect", f"oci:{layout}:{tag}"]).stdout == old
    # moving a tag: the index keeps one descriptor per name
    commit(strata, "--upper", upper, "--from", f"oci:{layout}:{tag}",
           f"oci:{layout}:{tag}-2", "--message", "again")
    idx = json.loads((Path(layout) / "index.json").read_text())
    refs = [d["annotations"]["org.opencontainers.image.ref.name"]
            for d in idx["manifests"]]
    assert sorted(refs) == sorted({*refs}) and f"{tag}-2" in refs
    assert not [p for p in Path(layout).iterdir()
                if p.name.startswith(".strata-tmp")]


def test_destinations(base, overlay, strata, mount, tmp_path):
    layout, tag, rootfs = base
    merged, upper = overlay(rootfs, "redirect_dir=on")
    every_change(merged)
    src = f"oci:{layout}:{tag}"
    # another layout, gets the base blobs too
    commit(strata, "--upper", upper, "--from", src,
           f"oci:{tmp_path}/other:p")
    out = umoci_rootfs(tmp_path / "other", "p", tmp_path / "other-unp")
    assert_same_tree(merged, out)
    # Docker media types (skopeo's oci: transport skips them in a layout,
    # so this is read back by stratafs and through a docker-archive)
    commit(strata, "--upper", upper, "--from", src,
           f"oci:{tmp_path}/other:o", "--format", "docker")
    man, last, _ = layer_tar(tmp_path / "other", "o")
    assert man["mediaType"] == \
        "application/vnd.docker.distribution.manifest.v2+json"
    assert man["config"]["mediaType"] == \
        "application/vnd.docker.container.image.v1+json"
    assert last["mediaType"] == \
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert_same_tree(merged, mount(f"oci:{tmp_path}/other:o"))
    # archives strata writes are read by skopeo
    commit(strata, "--upper", upper, "--from", src,
           f"oci-archive:{tmp_path}/o.tar:oa")
    commit(strata, "--upper", upper, "--from", src,
           f"docker-archive:{tmp_path}/d.tar:app:1.1")
    run(["skopeo", "copy", f"oci-archive:{tmp_path}/o.tar:oa",
         f"oci:{tmp_path}/fromoa:x"])
    run(["skopeo", "copy", f"docker-archive:{tmp_path}/d.tar:app:1.1",
         f"oci:{tmp_path}/fromda:x"])
    for d in ("fromoa", "fromda"):
        out = umoci_rootfs(tmp_path / d, "x", tmp_path / f"{d}-unp")
        assert_same_tree(merged, out)
    # the store, then a bare :TAG on a store source
    commit(strata, "--upper", upper, "--from", src, "app:1.1")
    assert_same_tree(merged, mount("app:1.1"))
    merged2, upper2 = overlay(mount("app:1.1"), name="ovl2")
    (merged2 / "more").write_text("more\n")
    commit(strata, "--upper", upper2, "--from", "app:1.1", ":1.2")
    assert_same_tree(merged2, mount("app:1.2"))
    images = strata("images").stdout
    assert "app:1.1" in images and "app:1.2" in images


def test_help(strata):
    r = strata("commit", "--help")
    assert "--upper" in r.stdout and "--compression" in r.stdout
    r = strata("commit", "--from", "x", check=False)
    assert r.returncode == 2


def test_large_layer_threads(base, overlay, strata, tmp_path):
    """Several 1 MiB gzip chunks: the same bytes with 1 and 2 threads, a
    valid gzip stream whose content hashes to the diff_id."""
    import gzip
    import random
    layout, tag, rootfs = base
    merged, upper = overlay(rootfs)
    rnd = random.Random(4)
    for i in range(6):
        words = [rnd.choice(["alpha", "beta", "gamma", str(i)])
                 for _ in range(300000)]
        (merged / f"big{i}").write_text(" ".join(words))
    (merged / "noise").write_bytes(rnd.randbytes(3 << 20))
    seen = set()
    for threads in ("1", "2"):
        seen.add(commit(strata, "--upper", upper, "--from",
                        f"oci:{layout}:{tag}", f"oci:{layout}:t{threads}",
                        "--created", "1600000000", "--threads",
                        threads).stdout.strip())
    assert len(seen) == 1
    man, last, blob = layer_tar(layout, "t2")
    cfg = json.loads(run(["skopeo", "inspect", "--config",
                          f"oci:{layout}:t2"]).stdout)
    data = gzip.open(blob).read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == \
        cfg["rootfs"]["diff_ids"][-1]
    assert last["size"] == os.path.getsize(blob)
    run(["gzip", "-t", blob])
    # --created clamped the file times; unclamped, the tree is the view
    commit(strata, "--upper", upper, "--from", f"oci:{layout}:{tag}",
           f"oci:{layout}:t3")
    out = umoci_rootfs(layout, "t3", tmp_path / "big-unpacked")
    assert_same_tree(merged, out)


@pytest.mark.parametrize("link", ["blobs/sha256", "blobs"])
def test_no_write_through_a_symlinked_blobs_dir(base, overlay, strata,
                                                tmp_path, link):
    """A layout that another user owns may have blobs/ or blobs/sha256 as
    a symlink to somewhere root can write: a commit into it (root, naming
    the layout or `:TAG` of a user's mount) refuses instead of writing
    there. Before: the new blobs were renamed into the link's target."""
    layout, tag, rootfs = base
    lay = Path(layout)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(lay / link, elsewhere, symlinks=True)
    shutil.rmtree(lay / link)
    os.symlink(elsewhere, lay / link)
    before = sorted(p.name for p in elsewhere.rglob("*"))
    index = (lay / "index.json").read_bytes()
    merged, upper = overlay(rootfs)
    (merged / "x").write_text("x\n")
    r = commit(strata, "--upper", upper, "--from", f"oci:{layout}:{tag}",
               f"oci:{layout}:{tag}-2", check=False)
    assert r.returncode != 0
    assert "blobs" in r.stderr
    assert sorted(p.name for p in elsewhere.rglob("*")) == before
    assert (lay / "index.json").read_bytes() == index


def test_deep_upper_commits(base, strata, tmp_path):
    """An upper directory deeper than PATH_MAX (9,045 bytes, past the 8 KiB
    path buffer commit had) commits: the layer holds its entries under
    their full names, as Python's tar reader sees them."""
    layout, tag, _ = base
    upper = tmp_path / "deep-upper"
    upper.mkdir()
    name, depth = "y" * 200, 45
    fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir(name, 0o755, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    f = os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(f, b"deep\n")
    os.close(f)
    os.close(fd)
    commit(strata, "--upper", upper, "--from", f"oci:{layout}:{tag}",
           f"oci:{layout}:deep")
    _, _, blob = layer_tar(layout, "deep")
    want = "/".join([name] * depth) + "/bottom"
    with tarfile.open(blob) as t:
        names = {m.name.rstrip("/"): m for m in t.getmembers()}
        assert want in names, sorted(names)[:3]
        assert t.extractfile(names[want]).read() == b"deep\n"
        assert "/".join([name] * depth) in names
