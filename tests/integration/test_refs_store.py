"""References (oci:, oci-archive:, docker-archive:, store names), the store
commands (import, images, rmi, inspect), platform selection and layer
sharing, checked against umoci unpack, skopeo and the JSON we wrote."""
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import (STRATA, STRATAFS, append_raw_layer, assert_same_tree, tar_dir,
                      is_mounted, read_blob, run, tar_file, umoci_rootfs,
                      write_blob)

REF_NAME = "org.opencontainers.image.ref.name"


def layer_one(root):
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text("ID=strata-test\n")
    (root / "etc/gone").write_text("gone\n")
    (root / "bin").mkdir()
    (root / "bin/tool").write_bytes(b"\x7fELF" + bytes(range(256)) * 40)
    os.chmod(root / "bin/tool", 0o755)
    os.symlink("tool", root / "bin/alias")
    (root / "data").mkdir()
    os.chown(root / "data", 1000, 1000)


def layer_two(root):
    (root / "etc/gone").unlink()
    (root / "etc/added").write_text("added\n")


def configure(layout, tag):
    run(["umoci", "config", "--image", f"{layout}:{tag}",
         "--config.env", "PATH=/bin", "--config.env", "A=b c",
         "--config.cmd", "--serve", "--config.cmd", "x y",
         "--config.entrypoint", "/bin/tool",
         "--config.label", "org.example.k=v", "--config.label", "two=2",
         "--config.workingdir", "/data", "--config.user", "1000:1000",
         "--author", "tester",
         "--history.comment", "configured"])


@pytest.fixture
def image(umoci_image):
    """A two-layer umoci image with a full config: (layout, tag)."""
    layout, tag = umoci_image([layer_one, layer_two])
    configure(layout, tag)
    return layout, tag


def index_of(layout):
    return json.loads((Path(layout) / "index.json").read_text())


def manifest_digest(layout, tag):
    for m in index_of(layout)["manifests"]:
        if m.get("annotations", {}).get(REF_NAME) == tag:
            return m["digest"]
    raise KeyError(tag)


def add_variant(layout, from_tag, new_tag, step, tmp_path):
    """Tag @new_tag in @layout: @from_tag plus one umoci layer made by @step."""
    bundle = tmp_path / f"variant-{new_tag}"
    run(["umoci", "unpack", "--image", f"{layout}:{from_tag}", bundle])
    step(bundle / "rootfs")
    run(["umoci", "repack", "--image", f"{layout}:{new_tag}", bundle])
    shutil.rmtree(bundle)


def mount_fails(mount, ref, opts=None):
    """stratafs on a bad @ref: non-zero, one clear line, no mount left."""
    r = mount(ref, opts=opts, check=False)
    assert r.returncode != 0
    assert r.stderr.startswith("stratafs: "), r.stderr
    return r.stderr


# --- oci: references --------------------------------------------------------

def test_oci_tag_and_digest(image, mount, tmp_path):
    layout, tag = image

    def other(root):
        (root / "etc/os-release").write_text("ID=other\n")
    add_variant(layout, tag, "u", other, tmp_path)
    ref_t = umoci_rootfs(layout, tag, tmp_path / "ref-t")
    ref_u = umoci_rootfs(layout, "u", tmp_path / "ref-u")

    assert_same_tree(mount(f"oci:{layout}:{tag}"), ref_t)
    assert_same_tree(mount(f"oci:{layout}:u"), ref_u)
    for t, ref in ((tag, ref_t), ("u", ref_u)):
        mnt = mount(f"oci:{layout}@{manifest_digest(layout, t)}")
        assert_same_tree(mnt, ref)
    assert (mnt / "etc/os-release").read_text() == "ID=other\n"


def test_oci_single_image_without_tag(image, mount, tmp_path):
    layout, tag = image
    assert_same_tree(mount(f"oci:{layout}"),
                     umoci_rootfs(layout, tag, tmp_path / "ref"))


def test_oci_unknown_tag_lists_tags(image, mount, strata, tmp_path):
    layout, tag = image
    run(["umoci", "tag", "--image", f"{layout}:{tag}", "second"])
    err = mount_fails(mount, f"oci:{layout}:nope")
    assert "nope" in err and tag in err and "second" in err, err
    r = strata("inspect", f"oci:{layout}:nope", check=False)
    assert r.returncode != 0
    assert "nope" in r.stderr and tag in r.stderr and "second" in r.stderr
    # two images, no tag: ambiguous
    r = strata("inspect", f"oci:{layout}", check=False)
    assert r.returncode != 0 and tag in r.stderr and "second" in r.stderr, r.stderr
    # a digest that is not in the layout
    r = strata("inspect", f"oci:{layout}@sha256:" + "0" * 64, check=False)
    assert r.returncode != 0 and "0" * 12 in r.stderr, r.stderr


# --- archives --------------------------------------------------------------

def test_oci_archive(image, mount, tmp_path):
    layout, tag = image
    arch = tmp_path / "img.tar"
    run(["skopeo", "copy", "-q", f"oci:{layout}:{tag}", f"oci-archive:{arch}:{tag}"])
    ref = umoci_rootfs(layout, tag, tmp_path / "ref")
    assert_same_tree(mount(f"oci-archive:{arch}:{tag}"), ref)
    assert_same_tree(mount(f"oci-archive:{arch}"), ref)
    err = mount_fails(mount, f"oci-archive:{arch}:missing")
    assert "missing" in err and tag in err, err


def test_docker_archive(image, mount, strata, tmp_path):
    layout, tag = image
    arch = tmp_path / "docker.tar"
    run(["skopeo", "copy", "-q", f"oci:{layout}:{tag}",
         f"docker-archive:{arch}:example/app:v1"])
    ref = umoci_rootfs(layout, tag, tmp_path / "ref")
    assert_same_tree(mount(f"docker-archive:{arch}:example/app:v1"), ref)
    assert_same_tree(mount(f"docker-archive:{arch}"), ref)
    # the config survives the trip: same as skopeo reads it
    want = json.loads(run(["skopeo", "inspect", "--config",
                           f"docker-archive:{arch}"]).stdout)
    got = json.loads(strata("inspect", "--json",
                            f"docker-archive:{arch}:example/app:v1").stdout)
    assert got["config"]["env"] == want["config"]["Env"]
    assert got["config"]["cmd"] == want["config"]["Cmd"]
    assert [l["diffId"] for l in got["layers"]] == want["rootfs"]["diff_ids"]
    err = mount_fails(mount, f"docker-archive:{arch}:example/app:v2")
    assert "example/app:v1" in err, err


def merge_docker_archives(out, archives):
    """One docker-archive holding every image of @archives (single-image
    archives written by skopeo): all members, one manifest.json listing
    every entry, merged repositories."""
    manifest, repos, seen = [], {}, set()
    with tarfile.open(out, "w") as dst:
        for a in archives:
            with tarfile.open(a) as src:
                for m in src.getmembers():
                    if m.name == "manifest.json":
                        manifest += json.load(src.extractfile(m))
                    elif m.name == "repositories":
                        for k, v in json.load(src.extractfile(m)).items():
                            repos.setdefault(k, {}).update(v)
                    elif m.name not in seen:
                        seen.add(m.name)
                        dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        for name, obj in (("manifest.json", manifest), ("repositories", repos)):
            data = json.dumps(obj).encode()
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            import io
            dst.addfile(ti, io.BytesIO(data))
    return manifest


def test_docker_archive_two_images(umoci_image, mount, strata, tmp_path):
    def a_only(root):
        (root / "which").write_text("image A\n")
        (root / "common").write_text("same\n")

    def b_only(root):
        (root / "which").write_text("image B\n")
        os.mkfifo(root / "fifo")
    la, ta = umoci_image([layer_one, a_only], name="a")
    lb, tb = umoci_image([layer_one, b_only], name="b")
    parts = []
    for layout, tag, name in ((la, ta, "first/img:1.0"), (lb, tb, "second:latest")):
        p = tmp_path / f"{layout.name}.tar"
        run(["skopeo", "copy", "-q", f"oci:{layout}:{tag}", f"docker-archive:{p}:{name}"])
        parts.append(p)
    both = tmp_path / "both.tar"
    manifest = merge_docker_archives(both, parts)
    assert len(manifest) == 2
    # skopeo reads the merged archive too (a sanity check of the fixture)
    run(["skopeo", "inspect", f"docker-archive:{both}:second:latest"])

    mnt = mount(f"docker-archive:{both}:first/img:1.0")
    assert (mnt / "which").read_text() == "image A\n"
    assert_same_tree(mnt, umoci_rootfs(la, ta, tmp_path / "ref-a"))
    mnt = mount(f"docker-archive:{both}:second:latest")
    assert (mnt / "which").read_text() == "image B\n"
    assert_same_tree(mnt, umoci_rootfs(lb, tb, tmp_path / "ref-b"))
    # the same through the store
    strata("import", f"docker-archive:{both}:second:latest", "b:1")
    assert (mount("b:1") / "which").read_text() == "image B\n"
    # no name with two images: ambiguous, both named in the error
    err = mount_fails(mount, f"docker-archive:{both}")
    assert "first/img" in err and "second" in err, err
    err = mount_fails(mount, f"docker-archive:{both}:third:1")
    assert "third:1" in err and "first/img:1.0" in err and "second:latest" in err, err


# --- the store -------------------------------------------------------------

def test_import_images_rmi(image, mount, strata, store, tmp_path):
    layout, tag = image
    digest = manifest_digest(layout, tag)
    r = strata("import", f"oci:{layout}:{tag}", "app:1")
    assert r.stdout.strip() == digest
    strata("import", f"oci:{layout}:{tag}", "app:2")
    strata("import", f"oci:{layout}:{tag}", "other")
    listed = json.loads(strata("images", "--json").stdout)
    assert sorted((i["name"], i["digest"]) for i in listed) == [
        ("app:1", digest), ("app:2", digest), ("other:latest", digest)]
    text = strata("images", "--digests").stdout
    for n in ("app:1", "app:2", "other:latest"):
        assert any(l.split()[:2] == [n, digest] for l in text.splitlines()), text

    ref = umoci_rootfs(layout, tag, tmp_path / "ref")
    assert_same_tree(mount("app:1"), ref)
    assert_same_tree(mount("other"), ref)
    assert_same_tree(mount("other:latest"), ref)

    strata("rmi", "app:1")
    names = [i["name"] for i in json.loads(strata("images", "--json").stdout)]
    assert sorted(names) == ["app:2", "other:latest"]
    err = mount_fails(mount, "app:1")
    assert "app:1" in err, err
    assert_same_tree(mount("app:2"), ref)
    r = strata("rmi", "app:1", check=False)
    assert r.returncode != 0 and "app:1" in r.stderr
    strata("rmi", "app:2")
    strata("rmi", "other")
    assert json.loads(strata("images", "--json").stdout) == []


def test_root_option_and_env(image, mount, strata, store, tmp_path):
    layout, tag = image
    alt = tmp_path / "alt-root"
    strata("--root", alt, "import", f"oci:{layout}:{tag}", "alt:1")
    assert (alt / "images/index.json").exists()
    assert not (store / "images/index.json").exists() or \
        json.loads(strata("images", "--json").stdout) == []
    names = [i["name"] for i in
             json.loads(strata("--root", alt, "images", "--json").stdout)]
    assert names == ["alt:1"]
    env = dict(os.environ, STRATA_ROOT=str(alt))
    names = [i["name"] for i in json.loads(
        run([STRATA, "images", "--json"], env=env).stdout)]
    assert names == ["alt:1"]
    ref = umoci_rootfs(layout, tag, tmp_path / "ref")
    assert_same_tree(mount("alt:1", opts=f"root={alt}"), ref)
    assert_same_tree(mount("alt:1", env=env), ref)
    mount_fails(mount, "alt:1")           # not in the default (fixture) store
    # --root beats STRATA_ROOT
    other = tmp_path / "other-root"
    run([STRATA, "--root", other, "import", f"oci:{layout}:{tag}", "o:1"], env=env)
    assert [i["name"] for i in json.loads(
        run([STRATA, "images", "--json"], env=env).stdout)] == ["alt:1"]


# --- platforms ---------------------------------------------------------------

@pytest.fixture
def multi(umoci_image):
    """Layout with tag 'multi' -> an index of linux/amd64 and linux/arm64
    images (file /arch tells which) and the arm64 manifest digest."""
    def arch(name):
        def step(root):
            (root / "arch").write_text(name + "\n")
        return step
    la, ta = umoci_image([layer_one, arch("amd64")], name="amd")
    lb, tb = umoci_image([layer_one, arch("arm64")], name="arm")
    run(["umoci", "config", "--image", f"{lb}:{tb}", "--architecture", "arm64",
         "--no-history"])
    for blob in (lb / "blobs/sha256").iterdir():
        shutil.copy(blob, la / "blobs/sha256" / blob.name)
    descs = []
    for layout, tag, arch_ in ((la, ta, "amd64"), (lb, tb, "arm64")):
        d = next(m for m in index_of(layout)["manifests"]
                 if m["annotations"][REF_NAME] == tag)
        descs.append({"mediaType": d["mediaType"], "digest": d["digest"],
                      "size": d["size"],
                      "platform": {"architecture": arch_, "os": "linux"}})
    # arm64 first: a reader taking the first entry would be wrong on amd64
    idx = {"schemaVersion": 2,
           "mediaType": "application/vnd.oci.image.index.v1+json",
           "manifests": [descs[1], descs[0]]}
    digest, size = write_blob(la, json.dumps(idx).encode())
    top = index_of(la)
    top["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
                             "digest": digest, "size": size,
                             "annotations": {REF_NAME: "multi"}})
    (la / "index.json").write_text(json.dumps(top))
    return la, descs[0]["digest"], descs[1]["digest"]


def test_two_platform_index(multi, mount, strata, tmp_path):
    layout, amd, arm = multi
    assert os.uname().machine == "x86_64"
    ref = f"oci:{layout}:multi"
    assert (mount(ref) / "arch").read_text() == "amd64\n"
    mnt = mount(ref, opts="platform=linux/arm64")
    assert (mnt / "arch").read_text() == "arm64\n"
    assert (mount(ref, opts="platform=linux/amd64") / "arch").read_text() == "amd64\n"
    # store: import picks the same way
    assert strata("import", ref, "m:host").stdout.strip() == amd
    assert strata("import", "--platform", "linux/arm64", ref, "m:arm").stdout.strip() == arm
    assert (mount("m:arm") / "arch").read_text() == "arm64\n"
    assert (mount("m:host") / "arch").read_text() == "amd64\n"
    # inspect
    j = json.loads(strata("inspect", "--json", "--platform", "linux/arm64", ref).stdout)
    assert j["digest"] == arm
    assert j["platform"]["architecture"] == "arm64"
    j = json.loads(strata("inspect", "--json", ref).stdout)
    assert j["digest"] == amd
    # a platform that is not there
    err = mount_fails(mount, ref, opts="platform=linux/s390x")
    assert "s390x" in err, err
    r = strata("import", "--platform", "linux/s390x", ref, "m:s390x", check=False)
    assert r.returncode != 0 and "s390x" in r.stderr


def test_platform_skips_missing_blobs_of_other_platforms(multi, mount, tmp_path):
    """Blobs of the platform not chosen may be missing (image-layout.md)."""
    layout, amd, arm = multi
    manifest = json.loads(read_blob(layout, arm))
    for d in [manifest["config"]] + manifest["layers"]:
        p = layout / "blobs/sha256" / d["digest"].split(":")[1]
        if d["digest"] not in json.dumps(json.loads(read_blob(layout, amd))):
            p.unlink()
    (layout / "blobs/sha256" / arm.split(":")[1]).unlink()
    assert (mount(f"oci:{layout}:multi") / "arch").read_text() == "amd64\n"
    err = mount_fails(mount, f"oci:{layout}:multi", opts="platform=linux/arm64")
    assert arm.split(":")[1][:12] in err, err


# --- inspect ------------------------------------------------------------------

def test_inspect_json_matches_skopeo(image, strata, tmp_path):
    layout, tag = image
    ref = f"oci:{layout}:{tag}"
    cfg = json.loads(run(["skopeo", "inspect", "--config", ref]).stdout)
    raw = json.loads(run(["skopeo", "inspect", "--raw", ref]).stdout)
    strata("import", ref, "insp:1")
    for r in (ref, "insp:1"):
        j = json.loads(strata("inspect", "--json", r).stdout)
        assert j["digest"] == manifest_digest(layout, tag)
        assert j["config"]["digest"] == raw["config"]["digest"]
        c = cfg["config"]
        assert j["config"]["env"] == c["Env"] == ["PATH=/bin", "A=b c"]
        assert j["config"]["cmd"] == c["Cmd"] == ["--serve", "x y"]
        assert j["config"]["entrypoint"] == c["Entrypoint"] == ["/bin/tool"]
        assert j["config"]["labels"] == c["Labels"] == {"org.example.k": "v", "two": "2"}
        assert j["config"]["workingDir"] == c["WorkingDir"] == "/data"
        assert j["config"]["user"] == c["User"] == "1000:1000"
        assert j["author"] == cfg["author"] == "tester"
        assert j["created"] == cfg["created"]
        assert j["platform"] == {"os": cfg["os"], "architecture": cfg["architecture"]}
        assert [(l["digest"], l["size"], l["mediaType"]) for l in j["layers"]] == \
            [(l["digest"], l["size"], l["mediaType"]) for l in raw["layers"]]
        assert [l["diffId"] for l in j["layers"]] == cfg["rootfs"]["diff_ids"]
        assert len(j["history"]) == len(cfg["history"]) == 3
        for h, w in zip(j["history"], cfg["history"]):
            assert h["created"] == w["created"]
            assert h["createdBy"] == w.get("created_by")
            assert h["comment"] == w.get("comment")
            assert h["author"] == w.get("author")
            assert h["emptyLayer"] == w.get("empty_layer", False)
    # the text form names the same things
    text = strata("inspect", ref).stdout
    for want in ["/bin/tool", "/data", "1000:1000", "org.example.k=v"] + \
            cfg["rootfs"]["diff_ids"] + [l["digest"] for l in raw["layers"]]:
        assert want in text, want


# --- concurrency and sharing -------------------------------------------------------

def test_concurrent_imports(image, mount, store, tmp_path):
    layout, tag = image
    # make the unpacking take a while, so that the imports overlap
    entries = [tar_dir("many")]
    entries += [tar_file(f"many/{i:05d}", str(i).encode()) for i in range(3000)]
    entries.append(tar_file("big", os.urandom(1 << 20) * 8))
    append_raw_layer(layout, tag, entries)
    digest = manifest_digest(layout, tag)
    procs = [subprocess.Popen([str(STRATA), "import", f"oci:{layout}:{tag}", name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("same:1", "same:1", "other:1", "other:2", "same:1")]
    outs = [p.communicate() + (p.returncode,) for p in procs]
    for out, err, rc in outs:
        assert rc == 0, err
        assert out.strip() == digest
    listed = json.loads(run([STRATA, "images", "--json"]).stdout)
    assert sorted(i["name"] for i in listed) == ["other:1", "other:2", "same:1"]
    ref = umoci_rootfs(layout, tag, tmp_path / "ref")
    for n in ("same:1", "other:1", "other:2"):
        # "/": the hand-made layer has no "./" entry; umoci then leaves the
        # root with the time of its unpack
        assert_same_tree(mount(n), ref, ignore=["/"])
    assert not list((store / "tmp").iterdir()) if (store / "tmp").exists() else True


def layer_dirs(store):
    return sorted(p.name for p in (store / "layers/sha256").iterdir()
                  if not p.name.endswith(".lock"))


def test_shared_layer_stored_once(image, mount, strata, store, tmp_path):
    layout, tag = image
    copy = tmp_path / "copy"
    shutil.copytree(layout, copy)
    append_raw_layer(copy, tag, [tar_file("extra", b"extra\n")])
    cfg_a = json.loads(run(["skopeo", "inspect", "--config", f"oci:{layout}:{tag}"]).stdout)
    cfg_b = json.loads(run(["skopeo", "inspect", "--config", f"oci:{copy}:{tag}"]).stdout)
    ids_a, ids_b = cfg_a["rootfs"]["diff_ids"], cfg_b["rootfs"]["diff_ids"]
    assert ids_b[:-1] == ids_a and len(ids_b) == 3

    strata("import", f"oci:{layout}:{tag}", "a:1")
    assert layer_dirs(store) == sorted(i.split(":")[1] for i in ids_a)
    before = {n: os.stat(store / "layers/sha256" / n).st_ino for n in layer_dirs(store)}
    strata("import", f"oci:{copy}:{tag}", "b:1")
    assert layer_dirs(store) == sorted(i.split(":")[1] for i in ids_b)
    # the shared layers were not unpacked again
    for n, ino in before.items():
        assert os.stat(store / "layers/sha256" / n).st_ino == ino
    mb = mount("b:1")
    assert (mb / "extra").read_text() == "extra\n"
    assert_same_tree(mb, umoci_rootfs(copy, tag, tmp_path / "ref-b"))
    # removing one image keeps what the other needs
    strata("rmi", "a:1")
    assert_same_tree(mount("b:1"), umoci_rootfs(copy, tag, tmp_path / "ref-b2"))


def test_index_of_another_version_unpacked_again(image, mount, strata, store,
                                                 tmp_path):
    """A layer whose cached index was written by another strata version
    (its magic differs) is unpacked again when the image is next used, and
    the mount shows the image as umoci unpacks it."""
    layout, tag = image
    strata("import", f"oci:{layout}:{tag}", "v:1")
    names = layer_dirs(store)
    old = store / "layers/sha256" / names[0] / "index"
    with open(old, "r+b") as f:
        magic = f.read(8)
        f.seek(0)
        f.write(b"STRTLX00")
    # lazy=0: by default a gzip layer not usable in layers/ would get a
    # lazy entry (layers/lazy/) instead; this is about the full unpack
    mnt = mount("v:1", opts="lazy=0")
    with open(store / "layers/sha256" / names[0] / "index", "rb") as f:
        assert f.read(8) == magic
    assert_same_tree(mnt, umoci_rootfs(layout, tag, tmp_path / "ref"))
