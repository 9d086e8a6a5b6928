"""Verification of blobs and documents (OCI-RULES §1.2, §1.3, R7-R14).

Every refused image: non-zero exit, one stderr line naming the image and
the blob/document at fault, no tag, no layer published, nothing written
outside the store (the `hostile` fixture). Plus a killed import: nothing
half-written is ever published, and the next import works."""
import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import STRATA
from ocibuild import (Layer, build, reg, dir_, flip_byte, digest_of,
                      MT_LAYER, MT_MANIFEST, MT_INDEX)


def short(d):
    return d[:len(d.split(":")[0]) + 1 + 12]


def lay(tmp_path, layers=None, name="lay", **kw):
    if layers is None:
        layers = [Layer([dir_("etc"), reg("etc/f", b"F" * 3000)],
                        compression="none")]
    return build(tmp_path / name, layers, **kw)


# ---- R7, R8, R9: blob digests, sizes, diff_ids ----

def test_r7_layer_digest_mismatch_same_length(hostile, tmp_path):
    """One byte of file content changed (the tar still parses): refused,
    naming the layer digest; nothing published."""
    img = lay(tmp_path, [Layer([dir_("etc"), reg("etc/f", b"F" * 3000)],
                               compression="none",
                               mutate=lambda b: flip_byte(b, 1024 + 100))])
    err = hostile.refused(img, names=[img.layers[0].digest, img.ref])
    assert "digest" in err


def test_r7_gzip_layer_digest_mismatch(hostile, tmp_path):
    """umoci hardening.bats: the layer re-gzipped differently."""
    import gzip
    good = Layer([dir_("etc"), reg("etc/f", os.urandom(5000))])
    regz = gzip.compress(good.tar, compresslevel=3, mtime=12345)
    assert len(regz) != len(good.blob) or regz != good.blob
    # store the other gzip under the original digest, fix the size
    good.mutate = lambda b: regz
    good.size_override = len(regz)
    img = lay(tmp_path, [good])
    hostile.refused(img, names=[short(img.layers[0].digest), img.ref])


@pytest.mark.parametrize("delta", [+1, -1])
def test_r8_descriptor_size_mismatch(hostile, tmp_path, delta):
    base = Layer([dir_("etc"), reg("etc/f", b"F" * 3000)])
    img = lay(tmp_path, [Layer([dir_("etc"), reg("etc/f", b"F" * 3000)],
                               size=len(base.blob) + delta)])
    err = hostile.refused(img, names=[short(img.layers[0].digest), img.ref])
    assert "size" in err


@pytest.mark.parametrize("how", ["append", "truncate"])
def test_r8_blob_one_byte_longer_or_shorter(hostile, tmp_path, how):
    mut = {"append": lambda b: b + b"\0", "truncate": lambda b: b[:-1]}[how]
    img = lay(tmp_path, [Layer([dir_("etc"), reg("etc/f", b"F" * 3000)],
                               compression="none", mutate=mut)])
    hostile.refused(img, names=[short(img.layers[0].digest), img.ref])


def test_r9_diff_id_mismatch(hostile, tmp_path):
    wrong = digest_of(b"something else")
    img = lay(tmp_path, [Layer([reg("a", "a")], diff_id=wrong)])
    # a lazy mount (the default for a gzip layer of a layout) goes live
    # and its fill finds the diff_id wrong: test_lazy_gzip.py
    # test_wrong_diff_id_found_by_fill; a full unpack refuses it at once
    err = hostile.refused(img, names=[img.layers[0].digest, wrong, img.ref],
                          diff_ids=[wrong], mount_opts="lazy=0")
    assert "diff_id" in err


def test_r9_diff_id_count_mismatch(hostile, tmp_path):
    l1, l2 = Layer([reg("a", "a")]), Layer([reg("b", "b")])
    img = lay(tmp_path, [l1, l2], config_edit=lambda c: c["rootfs"].update(
        diff_ids=c["rootfs"]["diff_ids"][:1]))
    hostile.refused(img, names=[img.ref], diff_ids=[l2.diff_id])


def test_r9_not_checked_only_on_cache_miss(hostile, tmp_path):
    """A layer whose diff_id is already in the cache is still verified:
    a second image pointing at a different, corrupt blob (trailer CRC
    broken, its own digest correct) for the same diff_id is refused, not
    accepted because the cache has that diff_id."""
    tar = Layer([dir_("d"), reg("d/f", os.urandom(4000))]).tar
    good = lay(tmp_path, [Layer(tar=tar)], name="lay-good")
    hostile.accepted(good, name="good:1")
    import gzip
    gz = gzip.compress(tar, compresslevel=1, mtime=7)
    bad = gz[:-8] + bytes(4) + gz[-4:]
    img = lay(tmp_path, [Layer(tar=tar, blob=bad)], name="lay-bad")
    assert img.layers[0].diff_id == good.layers[0].diff_id
    r = hostile.strata("import", img.ref, "bad:1", check=False)
    assert r.returncode != 0, "corrupt blob accepted because its diff_id " \
        "was cached"
    assert short(img.layers[0].digest) in r.stderr
    assert "bad:1" not in hostile.images()


def test_r9_wrong_compression_not_hidden_by_cache(hostile, tmp_path):
    tar = Layer([dir_("d"), reg("d/f", os.urandom(4000))]).tar
    good = lay(tmp_path, [Layer(tar=tar)], name="lay-good")
    hostile.accepted(good, name="good:1")
    img = lay(tmp_path, [Layer(tar=tar, compression="gzip",
                               media_type=MT_LAYER)], name="lay-bad")
    r = hostile.strata("import", img.ref, "bad:1", check=False)
    assert r.returncode != 0, "gzip bytes under a plain-tar media type " \
        "accepted because the diff_id was cached"
    assert "bad:1" not in hostile.images()


def test_config_digest_mismatch(hostile, tmp_path):
    img = lay(tmp_path, config_mutate=lambda b: b.replace(b"amd64",
                                                          b"amd65"))
    err = hostile.refused(img, names=[img.config_digest, img.ref])
    assert "digest" in err


def test_manifest_digest_mismatch(hostile, tmp_path):
    img = lay(tmp_path, manifest_mutate=lambda b: b.replace(b'"schemaVersion":2',
                                                            b'"schemaVersion":3'))
    err = hostile.refused(img, names=[img.manifest_digest, img.ref])
    assert "digest" in err


def test_manifest_size_mismatch(hostile, tmp_path):
    img = lay(tmp_path, manifest_size=10)
    hostile.refused(img, names=[img.manifest_digest, img.ref])


def test_config_size_mismatch(hostile, tmp_path):
    def edit(m):
        m["config"]["size"] += 1
    img = lay(tmp_path, manifest_edit=edit)
    hostile.refused(img, names=[img.config_digest, img.ref])


def test_sha512_accepted(hostile, tmp_path):
    img = lay(tmp_path, [Layer([dir_("etc"), reg("etc/f", "sha512")])],
              alg="sha512")
    assert img.manifest_digest.startswith("sha512:")
    assert img.layers[0].diff_id.startswith("sha512:")
    mnt = hostile.accepted(img)
    assert (mnt / "etc/f").read_text() == "sha512"


def test_sha512_mismatch_refused(hostile, tmp_path):
    img = lay(tmp_path, [Layer([reg("f", b"x" * 2000)], compression="none",
                               mutate=lambda b: flip_byte(b, 600))],
              alg="sha512")
    hostile.refused(img, names=[short(img.layers[0].digest), img.ref])


def test_unknown_algorithm_refused(hostile, tmp_path):
    """Grammar-valid but unverifiable: cannot be read (§1.3)."""
    layer = Layer([reg("a", "a")])
    fake = "md5:" + hashlib.md5(layer.blob).hexdigest()
    img = lay(tmp_path, [layer], manifest_edit=lambda m: m["layers"][0]
              .update(digest=fake))
    (img.path / "blobs/md5").mkdir()
    (img.path / "blobs/md5" / fake[4:]).write_bytes(layer.blob)
    hostile.refused(img, names=["md5", img.ref])


# ---- R12, R18: missing blobs; unknown media types ----

def test_r12_missing_layer_blob(hostile, tmp_path):
    img = lay(tmp_path, [Layer([reg("a", "a")]),
                         Layer([reg("b", "b")], write_blob=False)])
    hostile.refused(img, names=[img.layers[1].digest, img.ref],
                    diff_ids=[img.layers[1].diff_id])


def test_r12_missing_config_blob(hostile, tmp_path):
    img = lay(tmp_path)
    os.unlink(img.blob_path(img.config_digest))
    hostile.refused(img, names=[img.config_digest, img.ref])


def test_r12_missing_manifest_blob(hostile, tmp_path):
    img = lay(tmp_path)
    os.unlink(img.blob_path(img.manifest_digest))
    hostile.refused(img, names=[img.manifest_digest, img.ref])


@pytest.mark.parametrize("mt", [
    "application/vnd.oci.image.layer.v1.tar+bzip2",
    "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
    "application/octet-stream",
])
def test_unknown_layer_media_type_named(hostile, tmp_path, mt):
    img = lay(tmp_path, [Layer([reg("a", "a")], media_type=mt)])
    # names the media type and the manifest holding the descriptor
    hostile.refused(img, names=[mt, short(img.manifest_digest), img.ref])


def test_nondistributable_layer_read_like_distributable(hostile, tmp_path):
    img = lay(tmp_path, [Layer([reg("a", "nd")], media_type=
                               "application/vnd.oci.image.layer."
                               "nondistributable.v1.tar+gzip")])
    mnt = hostile.accepted(img)
    assert (mnt / "a").read_text() == "nd"


def test_rootfs_type_not_layers(hostile, tmp_path):
    img = lay(tmp_path, config_edit=lambda c: c["rootfs"].update(
        type="flattened"))
    hostile.refused(img, names=[img.ref, "rootfs"])


# ---- R10, R11, R14: strict JSON ----

def _text(img, which):
    return {"index": (img.path / "index.json").read_bytes(),
            "manifest": img.manifest, "config": img.config}[which]


def _rebuild(tmp_path, which, raw):
    """The default image again, with @which's bytes replaced by @raw (and
    every digest above it recomputed, so only the JSON itself is wrong)."""
    layers = [Layer([dir_("etc"), reg("etc/f", b"F" * 3000)],
                    compression="none")]
    kw = {f"{which}_raw": raw}
    return build(tmp_path / "lay-bad", layers, **kw)


def _bad_variants():
    """(id, which, transform(bytes)->bytes) for the strict-JSON rows."""
    def sub(old, new):
        return lambda b: b.replace(old, new, 1)

    def layer_size(v):
        return lambda b: _resize(b, v)
    return [
        ("index-trailing-garbage", "index", lambda b: b + b"garbage"),
        ("index-second-document", "index", lambda b: b + b"{}"),
        ("manifest-trailing-garbage", "manifest", lambda b: b + b"]"),
        ("config-trailing-garbage", "config", lambda b: b + b"xx"),
        ("index-invalid-utf8", "index",
         sub(b'"t"}', b'"t\xff\xfe"},"x":"\xc3\x28"}')),
        ("manifest-invalid-utf8", "manifest",
         sub(b'"schemaVersion":2', b'"schemaVersion":2,"annotations":'
             b'{"a":"\xed\xa0\x80"}')),
        ("config-invalid-utf8", "config", sub(b'"os":"linux"',
                                              b'"os":"lin\xffux"')),
        ("manifest-duplicate-layers", "manifest",
         sub(b'"schemaVersion":2', b'"schemaVersion":2,"layers":[]')),
        ("index-duplicate-manifests", "index",
         sub(b'"schemaVersion":2', b'"schemaVersion":2,"manifests":[]')),
        ("config-duplicate-rootfs", "config",
         sub(b'"os":"linux"', b'"os":"linux","rootfs":{"type":"layers",'
             b'"diff_ids":[]}')),
        ("size-float", "manifest", layer_size(b"3072.0")),
        ("size-fraction", "manifest", layer_size(b"3072.5")),
        ("size-string", "manifest", layer_size(b'"3072"')),
        ("size-negative", "manifest", layer_size(b"-1")),
        ("size-huge", "manifest", layer_size(b"99999999999999999999")),
        ("size-2^63", "manifest", layer_size(b"9223372036854775808")),
        ("size-NaN", "manifest", layer_size(b"NaN")),
        ("size-exponent", "manifest", layer_size(b"3.072e3")),
        ("digest-nul", "manifest", lambda b: _layer_digest(
            b, lambda d: d[:20] + b"\\u0000" + d[20:])),
        ("digest-nul-suffix", "manifest", lambda b: _layer_digest(
            b, lambda d: d + b"\\u0000")),
        ("digest-uppercase", "manifest", lambda b: _layer_digest(
            b, lambda d: d.split(b":")[0] + b":" + d.split(b":")[1].upper())),
        ("digest-short", "manifest", lambda b: _layer_digest(
            b, lambda d: d[:-1])),
        ("digest-long", "manifest", lambda b: _layer_digest(
            b, lambda d: d + b"0")),
        ("digest-slash", "manifest", lambda b: _layer_digest(
            b, lambda d: b"sha256:../../../../etc/passwd")),
        ("digest-no-alg", "manifest", lambda b: _layer_digest(
            b, lambda d: d.split(b":")[1])),
        ("single-quotes", "manifest", sub(b'"schemaVersion":2',
                                          b"'schemaVersion':2")),
        ("manifest-with-manifests", "manifest",
         sub(b'"schemaVersion":2', b'"schemaVersion":2,"manifests":[]')),
        ("manifest-is-index-type", "manifest",
         sub(MT_MANIFEST.encode(), MT_INDEX.encode())),
        ("config-not-object", "config", lambda b: b"[" + b + b"]"),
        ("manifest-missing-config", "manifest", lambda b: _drop(b, "config")),
        ("manifest-layers-not-array", "manifest",
         lambda b: _edit(b, lambda m: m.update(layers={}))),
        ("nesting-100", "manifest", lambda b: b[:-1] + b',"x":' +
         b"[" * 100 + b"]" * 100 + b"}"),
        ("nesting-100-config", "config", lambda b: b[:-1] + b',"x":' +
         b'{"a":' * 100 + b"1" + b"}" * 100 + b"}"),
    ]


def _edit(b, fn):
    d = json.loads(b)
    fn(d)
    return json.dumps(d, separators=(",", ":")).encode()


def _drop(b, key):
    return _edit(b, lambda d: d.pop(key))


def _resize(b, v):
    d = json.loads(b)
    old = d["layers"][0]["size"]
    return b.replace(b'"size":%d}' % old, b'"size":' + v + b"}", 1)


def _layer_digest(b, fn):
    d = json.loads(b)["layers"][0]["digest"].encode()
    return b.replace(d, fn(d), 1)


@pytest.mark.parametrize("which,transform",
                         [(w, t) for _, w, t in _bad_variants()],
                         ids=[i for i, _, _ in _bad_variants()])
def test_strict_json_refused(hostile, tmp_path, which, transform):
    good = lay(tmp_path, name="lay-good")
    raw = transform(_text(good, which))
    assert raw != _text(good, which)
    img = _rebuild(tmp_path, which, raw)
    # make an odd-named layer blob exist too (upper-case, short, long
    # digests), so only the digest grammar can catch it
    try:
        d = json.loads(img.manifest)["layers"][0]["digest"]
        a, h = d.split(":", 1)
        if a == "sha256" and h and "/" not in h and "\0" not in h:
            p = img.path / "blobs" / a / h
            if not p.exists():
                p.write_bytes(img.layers[0].blob)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        pass
    where = {"index": "index.json", "manifest": short(img.manifest_digest),
             "config": short(img.config_digest)}[which]
    hostile.refused(img, names=[str(img.path), where],
                    diff_ids=[img.layers[0].diff_id])


def test_r10_huge_index_json(hostile, tmp_path):
    """A 30 MiB index.json is refused before parsing (containerd caps such
    files at 20 MiB), naming index.json."""
    good = lay(tmp_path, name="lay-good")
    idx = json.loads((good.path / "index.json").read_bytes())
    idx["annotations"] = {"pad": "x" * (30 << 20)}
    raw = json.dumps(idx).encode()
    img = _rebuild(tmp_path, "index", raw)
    assert len(raw) > 30 << 20
    hostile.refused(img, names=[str(img.path), "index.json"])


def test_r10_huge_manifest(hostile, tmp_path):
    good = lay(tmp_path, name="lay-good")
    man = json.loads(good.manifest)
    man["annotations"] = {"pad": "y" * (30 << 20)}
    img = _rebuild(tmp_path, "manifest", json.dumps(man).encode())
    hostile.refused(img, names=[img.ref, short(img.manifest_digest)])


def test_r14_index_with_layers_and_config(hostile, tmp_path):
    """CVE-2021-41190: an index that also carries `config`/`layers`."""
    good = lay(tmp_path, name="lay-good")
    man = json.loads(good.manifest)

    def edit(i):
        i["layers"] = man["layers"]
        i["config"] = man["config"]
    img = build(tmp_path / "lay-bad", [Layer([dir_("etc"),
                                              reg("etc/f", b"F" * 3000)],
                                             compression="none")],
                index_edit=edit)
    hostile.refused(img, names=[str(img.path), "index.json"])


def test_strict_json_control_accepted(hostile, tmp_path):
    """The unmodified documents (and valid extras: unknown fields,
    annotations, whitespace) are accepted, so the refusals above are about
    the defects alone."""
    good = lay(tmp_path, name="lay-good")
    raw = b"  \n" + good.manifest[:-1] + \
        b',"annotations":{"k":"v\\u00e9"},"x-unknown":[1,2,{"a":null}]}\n'
    img = _rebuild(tmp_path, "manifest", raw)
    mnt = hostile.accepted(img)
    assert (mnt / "etc/f").read_bytes() == b"F" * 3000


def test_image_names_in_errors_for_store_refs(hostile, tmp_path):
    """A missing store image is named in the error."""
    r = hostile.strata("import", "nosuchimage:9", "x:1", check=False)
    assert r.returncode != 0 and "nosuchimage" in r.stderr


# ---- a killed import ----

def test_killed_import_publishes_nothing(hostile, tmp_path, store):
    """kill -9 in the middle of unpacking a 120 MB layer: STORE/layers has
    no entry for it (only STORE/tmp may hold the half-unpacked tree), no
    tag; a second import succeeds and mounts correctly."""
    data = os.urandom(120 << 20)
    want = hashlib.sha256(data).hexdigest()
    big = Layer([dir_("big"), reg("big/blob", data), reg("big/small", "s")],
                level=1)
    del data
    img = build(tmp_path / "lay-big", [Layer([reg("first", "1")]), big])
    layer_dir = store / "layers" / "sha256" / big.diff_id.split(":")[1]
    proc = subprocess.Popen([str(STRATA), "import", img.ref, "big:1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait until the unpack has produced data in STORE/tmp
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        tmp = store / "tmp"
        sizes = [os.path.getsize(os.path.join(d, f))
                 for d, _, fs in os.walk(tmp) for f in fs] \
            if tmp.exists() else []
        if sum(sizes) > 8 << 20:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.01)
    proc.wait()
    assert killed, "import finished before it could be killed: make the " \
        "layer bigger"
    assert not layer_dir.exists(), "a half-unpacked layer was published"
    assert "big:1" not in hostile.images()
    hostile.untouched()
    # a second import cleans up and succeeds
    mnt = hostile.accepted(img, name="big:1")
    h = hashlib.sha256()
    with open(mnt / "big/blob", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    assert h.hexdigest() == want
    assert (mnt / "big/small").read_text() == "s"
    assert (mnt / "first").read_text() == "1"
    leftovers = list((store / "tmp").iterdir()) if (store / "tmp").exists() \
        else []
    assert not leftovers, f"tmp not cleaned: {leftovers}"
