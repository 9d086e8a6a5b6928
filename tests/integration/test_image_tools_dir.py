"""The dir: transport and Docker schema 1 (issue 12, item 6).

skopeo writes dir: directories (and schema 1 with --format v2s1) from an
image umoci built; strata imports and mounts them and the tree is compared
with `umoci unpack` of the original. strata writes dir: and skopeo reads it
back into an OCI layout that umoci unpacks. Schema 1's config and history
are checked against the v1Compatibility JSON read here in Python, and its
diff_ids against the original image's config. Hostile directories and
manifests get clear errors naming the image and blob."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import assert_same_as_umoci, assert_same_tree, run, umoci_rootfs
from test_registry import busybox_base, second_layer


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """(layout, tag, policy): a two-layer busybox image made by umoci, then
    a config edit (an empty-layer history entry: a throwaway layer in
    schema 1)."""
    d = tmp_path_factory.mktemp("dirsrc")
    layout, tag, bundle = d / "img", "t", d / "bundle"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:{tag}"])
    for step in (busybox_base, second_layer):
        if bundle.exists():
            shutil.rmtree(bundle)
        run(["umoci", "unpack", "--image", f"{layout}:{tag}", bundle])
        step(bundle / "rootfs")
        run(["umoci", "repack", "--image", f"{layout}:{tag}", bundle])
    shutil.rmtree(bundle)
    run(["umoci", "config", "--image", f"{layout}:{tag}",
         "--config.cmd", "/bin/sh", "--config.env", "A=1",
         "--author", "dir-test", "--history.comment", "set cmd"])
    policy = d / "policy.json"
    policy.write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    return layout, tag, policy


def skopeo(policy, *args):
    return run(["skopeo", "--policy", policy, *args])


@pytest.fixture(scope="module")
def dirs(src, tmp_path_factory):
    """skopeo's dir: copies of src: (v2 OCI dir, schema 1 dir)."""
    layout, tag, policy = src
    d = tmp_path_factory.mktemp("dirs")
    skopeo(policy, "copy", f"oci:{layout}:{tag}", f"dir:{d / 'oci'}")
    skopeo(policy, "copy", "--format", "v2s1", f"oci:{layout}:{tag}",
           f"dir:{d / 's1'}")
    return d / "oci", d / "s1"


def oci_manifest(layout, tag):
    idx = json.loads((layout / "index.json").read_text())
    d = [m for m in idx["manifests"]
         if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    m = json.loads((layout / "blobs/sha256" /
                    d[0]["digest"].split(":")[1]).read_text())
    cfg = json.loads((layout / "blobs/sha256" /
                      m["config"]["digest"].split(":")[1]).read_text())
    return m, cfg


def copy_dir(a, b):
    shutil.copytree(a, b)
    return b


def inspect_digest(strata, ref):
    for line in strata("inspect", ref).stdout.splitlines():
        if line.startswith("Digest"):
            return line.split()[1]
    raise AssertionError("no Digest line")


def store_config(store, strata, ref):
    for line in strata("inspect", ref).stdout.splitlines():
        if line.startswith("Config"):
            hexd = line.split()[1].split(":")[1]
            return json.loads(
                (store / "images/blobs/sha256" / hexd).read_text())
    raise AssertionError("no Config line")


# ---------------------------------------------------------------------------
# dir: read


def test_dir_import_and_mount_match_umoci(src, dirs, strata, mount, store,
                                          tmp_path):
    layout, tag, _ = src
    d, _ = dirs
    man = (d / "manifest.json").read_bytes()
    layers = [l["digest"] for l in json.loads(man)["layers"]]
    # inspect reads manifest and config, no layer
    digest = "sha256:" + hashlib.sha256(man).hexdigest()
    assert inspect_digest(strata, f"dir:{d}") == digest
    blobs = store / "images/blobs/sha256"
    assert not any((blobs / l.split(":")[1]).exists() for l in layers)
    # mounted directly, then imported
    assert_same_as_umoci(mount(f"dir:{d}"), layout, tag, tmp_path / "u1")
    assert strata("import", f"dir:{d}", "fromdir:1").stdout.strip() == digest
    assert_same_as_umoci(mount("fromdir:1"), layout, tag, tmp_path / "u2")


def test_dir_index_instances(src, dirs, strata, tmp_path):
    """An index in manifest.json, its instance as HEX.manifest.json (what
    skopeo copy --all writes): the host platform's instance is read."""
    d, _ = dirs
    x = copy_dir(d, tmp_path / "idx")
    man = (x / "manifest.json").read_bytes()
    hexd = hashlib.sha256(man).hexdigest()
    (x / f"{hexd}.manifest.json").write_bytes(man)
    arch = json.loads(strata("inspect", "--config",
                             f"dir:{d}").stdout)["architecture"]
    (x / "manifest.json").write_text(json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + hexd, "size": len(man),
            "platform": {"os": "linux", "architecture": arch}}]}))
    assert strata("import", f"dir:{x}", "idx:1").stdout.strip() == \
        "sha256:" + hexd


# ---------------------------------------------------------------------------
# dir: write


def test_dir_written_is_read_by_skopeo(src, strata, tmp_path):
    layout, tag, policy = src
    man, _ = oci_manifest(layout, tag)
    digest = strata("import", f"oci:{layout}:{tag}", "w:1").stdout.strip()
    out = tmp_path / "out"
    assert strata("copy", "w:1", f"dir:{out}").stdout.strip() == digest
    assert (out / "version").read_text() == \
        "Directory Transport Version: 1.1\n"
    # the manifest's bytes as they are, every blob named by its hex
    assert "sha256:" + hashlib.sha256(
        (out / "manifest.json").read_bytes()).hexdigest() == digest
    names = {p.name for p in out.iterdir()}
    want = {l["digest"].split(":")[1] for l in man["layers"]}
    want |= {man["config"]["digest"].split(":")[1], "manifest.json",
             "version"}
    assert names == want
    skopeo(policy, "copy", f"dir:{out}", f"oci:{tmp_path / 'back'}:t")
    assert_same_tree(umoci_rootfs(tmp_path / "back", "t", tmp_path / "u1"),
                     umoci_rootfs(layout, tag, tmp_path / "u2"))
    # a dir: directory is replaced as a whole; nothing is left beside it
    (out / "signature-1").write_text("stale")
    strata("copy", "w:1", f"dir:{out}")
    assert {p.name for p in out.iterdir()} == want
    assert sorted(p.name for p in tmp_path.iterdir()
                  if p.name.startswith(".")) == []


def test_dir_refuses_to_clobber(strata, src, tmp_path):
    layout, tag, _ = src
    strata("import", f"oci:{layout}:{tag}", "w:1")
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep").write_text("mine")
    r = strata("copy", "w:1", f"dir:{other}", check=False)
    assert r.returncode == 1
    assert f"dir:{other}" in r.stderr and "no version file" in r.stderr
    assert [p.name for p in other.iterdir()] == ["keep"]
    f = tmp_path / "file"
    f.write_text("x")
    r = strata("copy", "w:1", f"dir:{f}", check=False)
    assert r.returncode == 1 and "not a directory" in r.stderr
    assert f.read_text() == "x"


def test_commit_dir_to_dir(strata, src, dirs, tmp_path):
    """A commit on a dir: base, written as dir:."""
    layout, tag, policy = src
    d, _ = dirs
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/added").write_text("added\n")
    out = tmp_path / "c"
    strata("commit", "--upper", upper, "--from", f"dir:{d}", f"dir:{out}")
    skopeo(policy, "copy", f"dir:{out}", f"oci:{tmp_path / 'back'}:t")
    root = umoci_rootfs(tmp_path / "back", "t", tmp_path / "u")
    assert (root / "etc/added").read_text() == "added\n"
    assert (root / "etc/motd").read_text() == "from a registry\n"


# ---------------------------------------------------------------------------
# Docker schema 1


def expected_config(s1man):
    """What the config converted from schema 1 @s1man must say, from its
    v1Compatibility entries (newest first)."""
    compat = [json.loads(h["v1Compatibility"]) for h in s1man["history"]]
    hist = []
    for c in reversed(compat):
        h = {}
        if c.get("created"):
            h["created"] = c["created"]
        by = " ".join((c.get("container_config") or {}).get("Cmd") or [])
        if by:
            h["created_by"] = by
        for k in ("author", "comment"):
            if c.get(k):
                h[k] = c[k]
        if c.get("throwaway"):
            h["empty_layer"] = True
        hist.append(h)
    top = {k: v for k, v in compat[0].items()
           if k not in ("id", "parent", "parent_id", "layer_id",
                        "throwaway", "Size")}
    return top, hist, sum(1 for c in compat if not c.get("throwaway"))


def unsigned(s1dir, dest):
    d = copy_dir(s1dir, dest)
    m = json.loads((d / "manifest.json").read_text())
    del m["signatures"]
    (d / "manifest.json").write_text(json.dumps(m, indent=3))
    return d, m


def test_schema1_dir_matches_umoci(src, dirs, strata, mount, store,
                                   tmp_path):
    layout, tag, _ = src
    _, s1 = dirs
    s1man = json.loads((s1 / "manifest.json").read_text())
    assert s1man["schemaVersion"] == 1 and s1man["signatures"]
    r = strata("import", f"dir:{s1}", "s1:1")
    assert "signature" in r.stderr and "not checked" in r.stderr
    assert "trust anchor" in r.stderr
    digest = r.stdout.strip()
    assert_same_as_umoci(mount("s1:1"), layout, tag, tmp_path / "u")
    cfg = store_config(store, strata, "s1:1")
    top, hist, n_layers = expected_config(s1man)
    _, orig = oci_manifest(layout, tag)
    assert cfg["rootfs"] == {"type": "layers",
                             "diff_ids": orig["rootfs"]["diff_ids"]}
    assert n_layers == len(orig["rootfs"]["diff_ids"])
    assert cfg["history"] == hist
    for k, v in top.items():
        assert cfg[k] == v, k
    assert cfg["config"]["Cmd"] == ["/bin/sh"]
    assert "A=1" in cfg["config"]["Env"]
    assert any(h.get("empty_layer") for h in hist)
    # the same manifest unsigned is the same image, without the notice
    d, _ = unsigned(s1, tmp_path / "unsigned")
    r = strata("import", f"dir:{d}", "s1u:1")
    assert r.stdout.strip() == digest and "signature" not in r.stderr


@pytest.fixture
def s1registry(registry):
    """A registry that still takes schema 1 pushes (distribution 2.8
    refuses them unless told)."""
    return registry("compatibility:\n  schema1:\n    enabled: true\n")


def test_schema1_from_registry(src, s1registry, strata, mount, store,
                               tmp_path):
    layout, tag, policy = src
    ref = f"{s1registry}/s1/img:1"
    skopeo(policy, "copy", "--dest-tls-verify=false", "--format", "v2s1",
           f"oci:{layout}:{tag}", f"docker://{ref}")
    raw = json.loads(skopeo(policy, "inspect", "--raw", "--tls-verify=false",
                            f"docker://{ref}").stdout)
    assert raw["schemaVersion"] == 1
    r = strata("import", "--tls-verify=false", f"docker://{ref}", "rs1:1")
    assert "not checked" in r.stderr
    assert_same_as_umoci(mount("rs1:1"), layout, tag, tmp_path / "u")
    cfg = store_config(store, strata, "rs1:1")
    _, hist, _ = expected_config(raw)
    assert cfg["history"] == hist
    _, orig = oci_manifest(layout, tag)
    assert cfg["rootfs"]["diff_ids"] == orig["rootfs"]["diff_ids"]


# ---------------------------------------------------------------------------
# hostile


def flip(p):
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 1
    p.write_bytes(bytes(b))


def refused(strata, store, ref, *words):
    r = strata("import", ref, "bad:1", check=False)
    assert r.returncode == 1, r
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert "bad:1" not in strata("images").stdout
    return r


def test_hostile_dirs(dirs, strata, store, tmp_path):
    d, s1 = dirs
    man = json.loads((d / "manifest.json").read_text())
    # a layer whose bytes are not what its name says
    bad = copy_dir(d, tmp_path / "blob")
    layer = man["layers"][-1]["digest"]
    p = bad / layer.split(":")[1]
    flip(p)
    refused(strata, store, f"dir:{bad}", f"dir:{bad}", layer,
            "digest mismatch")
    assert not (store / "images/blobs/sha256" / layer.split(":")[1]).exists()
    # broken manifest.json
    bad = copy_dir(d, tmp_path / "json")
    (bad / "manifest.json").write_text('{"schemaVersion": 2, "config": ')
    refused(strata, store, f"dir:{bad}", f"dir:{bad}", "manifest.json")
    # schema 1 whose fsLayers and history do not pair up
    bad, m = unsigned(s1, tmp_path / "len")
    m["history"] = m["history"][1:]
    (bad / "manifest.json").write_text(json.dumps(m))
    mdig = hashlib.sha256((bad / "manifest.json").read_bytes()).hexdigest()
    refused(strata, store, f"dir:{bad}", f"dir:{bad}", mdig[:12],
            f"{len(m['fsLayers'])} fsLayers but {len(m['history'])} history")
    # a v1Compatibility that is not JSON
    bad, m = unsigned(s1, tmp_path / "compat")
    m["history"][0]["v1Compatibility"] = "{not json"
    (bad / "manifest.json").write_text(json.dumps(m))
    mdig = hashlib.sha256((bad / "manifest.json").read_bytes()).hexdigest()
    refused(strata, store, f"dir:{bad}", f"dir:{bad}", mdig[:12],
            "history[0].v1Compatibility")
    # a schema 1 layer whose bytes do not match its blobSum
    bad, m = unsigned(s1, tmp_path / "s1blob")
    real = [f["blobSum"] for f in m["fsLayers"]
            if f["blobSum"] != m["fsLayers"][0]["blobSum"]][0]
    p = bad / real.split(":")[1]
    flip(p)
    refused(strata, store, f"dir:{bad}", f"dir:{bad}", real,
            "digest mismatch")
    # not a dir: directory at all
    refused(strata, store, f"dir:{tmp_path}", "no version file")
