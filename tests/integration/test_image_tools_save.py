"""strata save / strata load (issue 12, item 5): several images in one
docker-archive or oci-archive, and isula-build's separated images.

The images are made by umoci from busybox-static: base (busybox), lib
(base + /lib/x), app:1 and app:2 (lib + one file each), so the two apps
share two layers. Independent answers: podman load (its image ID is the
config digest; it checks every layer against the config's diff_ids),
skopeo reading the archives, umoci unpack of what skopeo copied out of
them against umoci unpack of the originals, Python's tarfile and hashlib
reading the archives and tarballs themselves.
"""
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import (STRATA, assert_same_as_umoci, assert_same_tree, run,
                      umoci_rootfs)
from test_commit_peers import (busybox_steps, podman,  # noqa: F401
                               sweep_mounts)

APPS = ("a1", "a2")


def _umoci_from(layout, src, dest, step, bundle):
    if bundle.exists():
        shutil.rmtree(bundle)
    run(["umoci", "unpack", "--image", f"{layout}:{src}", bundle])
    step(bundle / "rootfs")
    run(["umoci", "repack", "--image", f"{layout}:{dest}", bundle])
    shutil.rmtree(bundle)


def _index_manifest(layout, tag):
    idx = json.loads((layout / "index.json").read_text())
    for d in idx["manifests"]:
        if d["annotations"]["org.opencontainers.image.ref.name"] == tag:
            return json.loads((layout / "blobs/sha256" /
                               d["digest"].split(":")[1]).read_text()), d
    raise KeyError(tag)


def _config(layout, tag):
    man, desc = _index_manifest(layout, tag)
    cfg = man["config"]["digest"]
    return cfg, json.loads((layout / "blobs/sha256" /
                            cfg.split(":")[1]).read_text())


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A source store holding base:1, lib:1, app:1, app:2 (and other:1,
    which shares nothing), made from the umoci layout it returns."""
    d = tmp_path_factory.mktemp("save")
    layout, bundle = d / "layout", d / "bundle"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:empty"])
    _umoci_from(layout, "empty", "base", busybox_steps, bundle)

    def lib(root):
        (root / "lib").mkdir()
        (root / "lib/x").write_text("lib\n")
    _umoci_from(layout, "base", "lib", lib, bundle)
    for a in APPS:
        _umoci_from(layout, "lib", a,
                    lambda root, a=a: (root / a).write_text(a * 100), bundle)
    _umoci_from(layout, "empty", "other",
                lambda root: (root / "o").write_text("o"), bundle)
    env = dict(os.environ, STRATA_ROOT=str(d / "store"))
    for tag, name in (("base", "base:1"), ("lib", "lib:1"), ("a1", "app:1"),
                      ("a2", "app:2"), ("other", "other:1")):
        run([STRATA, "-q", "import", f"oci:{layout}:{tag}", name], env=env)
    return {"dir": d, "layout": layout, "env": env}


def src_strata(images, *args, check=True):
    return run([STRATA, *args], check=check, env=images["env"])


def diff_ids(layout, tag):
    return _config(layout, tag)[1]["rootfs"]["diff_ids"]


# ---- several images in one archive ----------------------------------------

def test_docker_archive_two_images_podman_load(images, tmp_path, podman):
    layout = images["layout"]
    arch = tmp_path / "apps.tar"
    src_strata(images, "save", "app:1", "app:2", f"docker-archive:{arch}")

    with tarfile.open(arch) as t:
        names = t.getnames()
        manifest = json.load(t.extractfile("manifest.json"))
        repos = json.load(t.extractfile("repositories"))
    # base, lib, a1, a2: four layers, each written once
    layer_files = [n for n in names if n.endswith("/layer.tar")]
    assert len(layer_files) == len(set(layer_files)) == 4, names
    assert len(names) == len(set(names))
    assert [m["RepoTags"] for m in manifest] == [["app:1"], ["app:2"]]
    assert manifest[0]["Layers"][:2] == manifest[1]["Layers"][:2]
    assert set(repos) == {"app"} and set(repos["app"]) == {"1", "2"}

    # podman load: both images, each with the original config (its ID)
    # and diff_ids (podman verifies every layer against them)
    podman("load", "-i", arch)
    for tag, name in zip(APPS, ("app:1", "app:2")):
        cfg, config = _config(layout, tag)
        info = json.loads(podman("image", "inspect",
                                 f"localhost/{name}").stdout)[0]
        assert info["Id"] == cfg.split(":")[1]
        assert info["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]

    # the content, through skopeo and umoci, equals umoci's own unpack
    out = tmp_path / "out"
    run(["skopeo", "copy", f"docker-archive:{arch}:app:2", f"oci:{out}:t"])
    assert_same_tree(umoci_rootfs(out, "t", tmp_path / "u1"),
                     umoci_rootfs(layout, "a2", tmp_path / "u2"))


def test_oci_archive_two_images_skopeo(images, tmp_path, strata):
    layout = images["layout"]
    arch = tmp_path / "apps.oci.tar"
    src_strata(images, "save", "app:1", "app:2", "base:1",
               f"oci-archive:{arch}")
    with tarfile.open(arch) as t:
        blobs = [n for n in t.getnames() if n.startswith("blobs/sha256/")]
        index = json.load(t.extractfile("index.json"))
    # 4 layers + 3 configs + 3 manifests, each once
    assert len(blobs) == len(set(blobs)) == 10
    refs = {d["annotations"]["org.opencontainers.image.ref.name"]: d["digest"]
            for d in index["manifests"]}
    assert set(refs) == {"app:1", "app:2", "base:1"}
    for tag, name in zip(APPS + ("base",), ("app:1", "app:2", "base:1")):
        _, desc = _index_manifest(layout, tag)
        info = json.loads(run(["skopeo", "inspect",
                               f"oci-archive:{arch}:{name}"]).stdout)
        # the manifests are copied as they are: same digests as umoci's
        assert info["Digest"] == desc["digest"] == refs[name]
    out = tmp_path / "out"
    run(["skopeo", "copy", f"oci-archive:{arch}:app:1", f"oci:{out}:t"])
    assert_same_tree(umoci_rootfs(out, "t", tmp_path / "u1"),
                     umoci_rootfs(layout, "a1", tmp_path / "u2"))

    # strata load: every image of the archive, under its name
    r = strata("load", f"oci-archive:{arch}")
    assert r.stdout.split() == ["app:1", "app:2", "base:1"]
    for tag, name in zip(APPS, ("app:1", "app:2")):
        _, desc = _index_manifest(layout, tag)
        assert desc["digest"] in strata("inspect", name).stdout


def test_load_docker_archive_written_by_skopeo(images, tmp_path, strata):
    """strata load of a two-image archive another tool wrote."""
    layout = images["layout"]
    arch = tmp_path / "sk.tar"
    run(["skopeo", "copy", "--additional-tag", "x/two:2",
         f"oci:{layout}:a2", f"docker-archive:{arch}:x/one:1"])
    r = strata("load", str(arch))
    assert sorted(r.stdout.split()) == ["docker.io/x/one:1",
                                        "docker.io/x/two:2"]
    out = strata("inspect", "docker.io/x/two:2").stdout
    for d in diff_ids(layout, "a2"):
        assert d in out


def test_save_usage_errors(strata):
    r = strata("save", "app:1", check=False)
    assert r.returncode == 2 and "missing DEST" in r.stderr
    r = strata("save", "--dir", "/nonexistent", "app:1", check=False)
    assert r.returncode == 2 and "--base" in r.stderr
    r = strata("save", "app:1", "oci:/tmp/x:t", check=False)
    assert r.returncode == 1 and "docker-archive:FILE or oci-archive:FILE" \
        in r.stderr
    r = strata("load", check=False)
    assert r.returncode == 2 and "missing ARCHIVE" in r.stderr
    assert "separated" in strata("save", "--help").stdout


# ---- isula-build's separated images ---------------------------------------

@pytest.fixture(scope="module")
def separated(images):
    d = images["dir"] / "sep"
    src_strata(images, "save", "--base", "base:1", "--lib", "lib:1",
               "--dir", d, "app:1", "app:2")
    return d


def _tar_entries(p):
    with tarfile.open(p, "r:gz") as t:
        return [(m.name, m.isdir(), m.mtime, m.uid, m.gid) for m in t], t


def test_separated_layout(images, separated):
    """File names, manifest fields and tarball layout as isula-build's."""
    layout = images["layout"]
    files = sorted(os.listdir(separated))
    assert files == ["app_1_app_image.tar.gz", "app_1_base_image.tar.gz",
                     "app_1_lib_image.tar.gz", "app_2_app_image.tar.gz",
                     "manifest"]
    man = json.loads((separated / "manifest").read_text())
    assert set(man) == {"app:1", "app:2"}
    for name, tag in (("app:1", "a1"), ("app:2", "a2")):
        t = man[name]
        assert list(t) == ["app", "appHash", "appLayers", "lib", "libHash",
                           "libImageName", "libLayers", "base", "baseHash",
                           "baseImageName", "baseLayer"]
        # images sharing the base and lib share their tarballs
        assert t["base"] == "app_1_base_image.tar.gz"
        assert t["lib"] == "app_1_lib_image.tar.gz"
        assert t["app"] == f"app_{name[-1]}_app_image.tar.gz"
        assert t["baseImageName"] == "base:1"
        assert t["libImageName"] == "lib:1"
        for k in ("app", "lib", "base"):
            assert t[k + "Hash"] == hashlib.sha256(
                (separated / t[k]).read_bytes()).hexdigest()
        ids = diff_ids(layout, tag)
        with tarfile.open(separated / t["app"], "r:gz") as a:
            names = a.getnames()
            assert names == sorted(names)
            mj = json.load(a.extractfile("manifest.json"))
            repos = json.load(a.extractfile("repositories"))
            cfg, _ = _config(layout, tag)
            assert a.extractfile(cfg.split(":")[1] + ".json").read() == \
                (layout / "blobs/sha256" / cfg.split(":")[1]).read_bytes()
            app_layer = a.extractfile(
                t["appLayers"][0] + "/layer.tar").read()
            assert a.extractfile(t["appLayers"][0] + "/VERSION").read() \
                == b"1.0"
            top = json.load(a.extractfile(t["appLayers"][0] + "/json"))
            assert all(m.mtime == 1483142400 and m.uid == 0 for m in a)
        assert mj == [{"Config": cfg.split(":")[1] + ".json",
                       "RepoTags": [name],
                       "Layers": [f"{i}/layer.tar" for i in
                                  [t["baseLayer"], *t["libLayers"],
                                   *t["appLayers"]]]}]
        assert repos == {"app": {name[-1]: t["appLayers"][-1]}}
        assert top["id"] == t["appLayers"][0]
        assert top["parent"] == t["libLayers"][-1]
        # layer.tar is the uncompressed layer: its sha256 is the diff_id
        assert "sha256:" + hashlib.sha256(app_layer).hexdigest() == ids[2]
        assert t["baseLayer"] == ids[0].split(":")[1]
    with tarfile.open(separated / "app_1_lib_image.tar.gz", "r:gz") as lt:
        assert lt.getnames() == [man["app:1"]["libLayers"][0] + x for x in
                                 ("", "/VERSION", "/json", "/layer.tar")]
        assert "sha256:" + hashlib.sha256(lt.extractfile(
            lt.getnames()[3]).read()).hexdigest() == diff_ids(layout, "a1")[1]


def check_loaded(images, strata, mount, tmp_path, name, tag):
    """@name in the store has @tag's config and diff_ids, and (with
    @mount) mounts as umoci unpacks @tag."""
    layout = images["layout"]
    cfg, config = _config(layout, tag)
    out = strata("inspect", name).stdout
    assert cfg in out
    for d in config["rootfs"]["diff_ids"]:
        assert d in out
    if mount:
        assert_same_as_umoci(mount(name), layout, tag, tmp_path / f"u-{tag}")


def test_separated_load_empty_store(images, separated, strata, mount,
                                    tmp_path, podman):
    r = strata("load", "--dir", separated, "app:2")
    assert r.stdout.split() == ["app:2"]
    check_loaded(images, strata, mount, tmp_path, "app:2", "a2")
    # the reassembled image, written out as a docker-archive, is what
    # podman load reads back: config and diff_ids of the original
    arch = tmp_path / "again.tar"
    strata("save", "app:2", f"docker-archive:{arch}")
    podman("load", "-i", arch)
    cfg, config = _config(images["layout"], "a2")
    info = json.loads(podman("image", "inspect", "localhost/app:2").stdout)[0]
    assert info["Id"] == cfg.split(":")[1]
    assert info["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]


def test_separated_tampered_refused(separated, strata, store, tmp_path):
    d = tmp_path / "sep"
    shutil.copytree(separated, d)
    lib = d / "app_1_lib_image.tar.gz"
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xff
    lib.write_bytes(bytes(data))
    r = strata("load", "--dir", d, "app:1", check=False)
    assert r.returncode == 1
    assert "app_1_lib_image.tar.gz" in r.stderr and "sha256" in r.stderr
    assert strata("images").stdout.splitlines()[1:] == []
    assert not any((store / "images/blobs/sha256").iterdir())
    # a manifest naming a tarball outside DIR is refused as such
    man = json.loads((d / "manifest").read_text())
    man["app:1"]["app"] = "../../etc/passwd"
    (d / "manifest").write_text(json.dumps(man))
    r = strata("load", "--dir", d, "app:1", check=False)
    assert r.returncode == 1 and "is not a file name" in r.stderr
    r = strata("load", "--dir", d, "nosuch:1", check=False)
    assert r.returncode == 1 and "no image nosuch:1" in r.stderr
    assert "app:1, app:2" in r.stderr


def test_separated_base_from_store(images, separated, strata, mount,
                                   tmp_path):
    d = tmp_path / "sep"
    shutil.copytree(separated, d)
    (d / "app_1_base_image.tar.gz").unlink()
    r = strata("load", "--dir", d, "app:1", check=False)
    assert r.returncode == 1
    assert "no image of the store" in r.stderr
    assert "app_1_base_image.tar.gz is missing" in r.stderr
    strata("-q", "import", f"oci:{images['layout']}:base", "mybase:7")
    strata("load", "--dir", d, "app:1")
    check_loaded(images, strata, mount, tmp_path, "app:1", "a1")


def test_separated_base_and_lib_given(images, separated, strata, tmp_path):
    """-b and -l name the tarballs wherever they are (isula-build's)."""
    d, elsewhere = tmp_path / "sep", tmp_path / "else"
    elsewhere.mkdir()
    shutil.copytree(separated, d)
    for k in ("base", "lib"):
        shutil.move(d / f"app_1_{k}_image.tar.gz", elsewhere / f"{k}.tgz")
    strata("load", "-d", d, "-b", elsewhere / "base.tgz",
           "-l", elsewhere / "lib.tgz", "-i", "app:2")
    check_loaded(images, strata, None, tmp_path, "app:2", "a2")


def test_separated_base_not_prefix(images, tmp_path):
    r = src_strata(images, "save", "--base", "other:1", "--dir",
                   tmp_path / "s", "app:1", check=False)
    assert r.returncode == 1
    assert "other:1" in r.stderr and "app:1" in r.stderr
    assert "not a prefix" in r.stderr
    r = src_strata(images, "save", "--base", "base:1", "--lib", "other:1",
                   "--dir", tmp_path / "s", "app:1", check=False)
    assert r.returncode == 1 and "other:1" in r.stderr
    assert not (tmp_path / "s").exists() or not os.listdir(tmp_path / "s")


def test_separated_rename(images, tmp_path, strata):
    ren = tmp_path / "rename.json"
    ren.write_text(json.dumps([
        {"name": "app_1_app_image.tar.gz", "rename": "myapp.tgz"},
        {"name": "app_1_base_image.tar.gz", "rename": "mybase.tgz"}]))
    d = tmp_path / "s"
    src_strata(images, "save", "-b", "base:1", "-r", ren, "-d", d, "app:1")
    assert sorted(os.listdir(d)) == ["manifest", "myapp.tgz", "mybase.tgz"]
    man = json.loads((d / "manifest").read_text())["app:1"]
    assert (man["app"], man["base"], man["lib"], man["libLayers"]) == \
        ("myapp.tgz", "mybase.tgz", "", None)
    assert len(man["appLayers"]) == 2
    strata("load", "--dir", d, "app:1")
    check_loaded(images, strata, None, tmp_path, "app:1", "a1")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "x", "rename": "../escape"}]))
    r = src_strata(images, "save", "-b", "base:1", "-r", bad, "-d",
                   tmp_path / "s2", "app:1", check=False)
    assert r.returncode == 1 and "not a file name" in r.stderr
