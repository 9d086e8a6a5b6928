"""Layer views (issue 12): `stratafs -o layer=N[,only]` and `strata layers`.

Independent answers: `-o layer=N` against `umoci unpack` of a copy of the
layout whose manifest and config hold only the first N layers; `-o
layer=N,only` against the layer's tar as Python's tarfile reads it; the
statistics of `strata layers` against a count made here from the layer
tars (tarfile over the blobs, whiteouts applied here), and the image's
content minus its wasted bytes against the files of `umoci unpack`.
Images: one made by umoci (deletions, a rewritten big file, a deleted
directory, a directory replaced by a file, hardlinks, xattrs, owners),
one written byte by byte (opaque directories, whiteouts under a
directory the layer does not list, whiteout-and-recreate in one layer).
"""
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from conftest import (assert_same_as_umoci, build_umoci_image, read_blob,
                      run, tree, umoci_rootfs, write_blob)
from ocibuild import Layer, build, dir_, hardlink, opq, reg, symlink, wh

REF_NAME = "org.opencontainers.image.ref.name"
T0 = 1_600_000_000


def _put(p, data, mode=0o644, uid=0, gid=0, t=T0):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.chown(p, uid, gid)
    os.chmod(p, mode)
    os.utime(p, (t, t))


def _step1(r):
    _put(r / "etc/a", b"a" * 100)
    _put(r / "etc/b", b"b" * 64, mode=0o640, uid=1000, gid=1001)
    os.setxattr(r / "etc/b", "user.note", b"kept")
    _put(r / "big", os.urandom(300_000))
    _put(r / "usr/lib/x", b"x" * 3000)
    _put(r / "usr/lib/y", b"y" * 4000, mode=0o755)
    _put(r / "h1", b"h" * 500)
    os.link(r / "h1", r / "h2")
    _put(r / "keep/k", b"k" * 50)
    os.symlink("etc/a", r / "sym")


def _step2(r):
    os.remove(r / "etc/a")
    _put(r / "big", os.urandom(10_000), t=T0 + 1)
    shutil.rmtree(r / "usr/lib")
    _put(r / "new/n", b"n" * 7, uid=7)
    os.chmod(r / "keep/k", 0o600)


def _step3(r):
    _put(r / "usr/lib", b"L" * 20)		# a directory, now a file
    os.remove(r / "h1")			# h2 keeps the content
    _put(r / "etc/b", b"B" * 64, mode=0o640, uid=1000, gid=1001, t=T0 + 2)


def _step4(r):
    os.remove(r / "big")
    (r / "e").mkdir()


@pytest.fixture(scope="module")
def umoci_img(tmp_path_factory):
    base = tmp_path_factory.mktemp("layers-umoci")
    return build_umoci_image(base, [_step1, _step2, _step3, _step4])


@pytest.fixture(scope="module")
def opaque_img(tmp_path_factory):
    base = tmp_path_factory.mktemp("layers-opq")
    img = build(base / "lay", [
        Layer([dir_("d"), reg("d/f", b"f" * 10), reg("d/g", b"g" * 20),
               dir_("gone"), reg("gone/x", b"x" * 30), reg("gone/y", b"y"),
               dir_("w"), reg("w/z", b"z" * 5), reg("top", b"t" * 40),
               dir_("r"), reg("r/old", b"o" * 9), reg("hl", b"H" * 11),
               hardlink("hl2", "hl")]),
        Layer([dir_("d", mode=0o700), opq("d"), reg("d/new", b"n" * 3),
               wh("gone/x"), wh("w"), wh("top"), reg("top", b"T" * 4),
               wh("r"), dir_("r"), reg("r/n", b"rn"), wh("hl"),
               symlink("s", "d/new")]),
        Layer([opq(), dir_("d"), reg("d/f", b"F" * 6), reg("hl2", b"2")]),
    ])
    return img.path, img.tag


def _layout_docs(layout, tag):
    idx = json.loads((Path(layout) / "index.json").read_text())
    mdesc = next(m for m in idx["manifests"]
                 if m.get("annotations", {}).get(REF_NAME) == tag)
    man = json.loads(read_blob(layout, mdesc["digest"]))
    cfg = json.loads(read_blob(layout, man["config"]["digest"]))
    return idx, mdesc, man, cfg


def truncated(layout, tag, n, dest):
    """A copy of @layout whose image @tag holds only its first @n layers
    (manifest layers, diff_ids, and history up to the n-th layer)."""
    shutil.copytree(layout, dest)
    idx, mdesc, man, cfg = _layout_docs(dest, tag)
    cfg["rootfs"]["diff_ids"] = cfg["rootfs"]["diff_ids"][:n]
    hist, k = [], 0
    for h in cfg.get("history", []):
        if k == n:
            break
        hist.append(h)
        k += not h.get("empty_layer", False)
    cfg["history"] = hist
    d, size = write_blob(dest, json.dumps(cfg).encode())
    man["config"] = dict(man["config"], digest=d, size=size)
    man["layers"] = man["layers"][:n]
    d, size = write_blob(dest, json.dumps(man).encode())
    idx["manifests"] = [dict(mdesc, digest=d, size=size)]
    (Path(dest) / "index.json").write_text(json.dumps(idx))
    return dest


def layer_tars(layout, tag):
    """The image's layers as tarfile member lists, bottom first, with a
    function giving a member's content."""
    _, _, man, _ = _layout_docs(layout, tag)
    out = []
    for desc in man["layers"]:
        tf = tarfile.open(fileobj=io.BytesIO(read_blob(layout,
                                                       desc["digest"])))
        out.append(tf)
    return out


def _parts(name):
    return tuple(p for p in name.split("/") if p and p != ".")


# ---- -o layer=N --------------------------------------------------------

@pytest.mark.parametrize("which", ["umoci", "opaque"])
def test_layer_n_is_umoci_unpack_of_the_truncated_image(
        which, umoci_img, opaque_img, mount, tmp_path):
    layout, tag = umoci_img if which == "umoci" else opaque_img
    k = len(_layout_docs(layout, tag)[2]["layers"])
    for n in list(range(1, k + 1)) + [-2]:
        want = n if n > 0 else k + 1 + n
        cut = truncated(layout, tag, want, tmp_path / f"cut{n}")
        mnt = mount(f"oci:{layout}:{tag}", opts=f"layer={n}")
        assert_same_as_umoci(mnt, cut, tag, tmp_path / f"umoci{n}")


# ---- -o layer=N,only -----------------------------------------------------

def _tar_view(tf):
    """What the layer's tar says, as tree() would describe the paths it
    names: whiteouts as ("whiteout",), opaque directories in a set."""
    want, opaque, data = {}, set(), {}
    for m in tf.getmembers():
        parts = _parts(m.name)
        if not parts:
            continue
        path = "/" + "/".join(parts)
        parent = "/" + "/".join(parts[:-1]) if len(parts) > 1 else "/"
        if parts[-1] == ".wh..wh..opq":
            opaque.add(parent)
            continue
        if parts[-1].startswith(".wh."):
            gone = parent.rstrip("/") + "/" + parts[-1][4:]
            if gone in want:		# whited out, then made again
                continue
            want[gone] = ("whiteout",)
            continue
        xs = tuple(sorted((k[len("SCHILY.xattr."):], v.encode("utf-8",
                                                              "surrogateescape"))
                          for k, v in m.pax_headers.items()
                          if k.startswith("SCHILY.xattr.")))
        if m.islnk():
            src = "/" + "/".join(_parts(m.linkname))
            want[path] = want[src]
            data[path] = data[src]
            continue
        if m.isreg():
            data[path] = hashlib.sha256(tf.extractfile(m).read()).hexdigest()
            kind, extra, size = stat.S_IFREG, data[path], m.size
        elif m.isdir():
            kind, extra, size = stat.S_IFDIR, None, None
        elif m.issym():
            kind, extra, size = stat.S_IFLNK, m.linkname, len(m.linkname)
        else:
            raise AssertionError(f"unexpected member {m.name}")
        if m.isdir() and want.get(path) == ("whiteout",):
            opaque.add(path)	# whited out and made again: opaque
        want[path] = (kind, m.mode & 0o7777, m.uid, m.gid, size,
                      None if m.issym() else int(m.mtime) * 10**9, extra, xs)
    return want, opaque


OPAQUE_XATTRS = {"trusted.overlay.opaque", "user.overlay.opaque"}


@pytest.mark.parametrize("which", ["umoci", "opaque"])
def test_layer_only_is_the_layer_tar(which, umoci_img, opaque_img, mount):
    layout, tag = umoci_img if which == "umoci" else opaque_img
    tars = layer_tars(layout, tag)
    for n, tf in enumerate(tars, 1):
        want, opaque = _tar_view(tf)
        mnt = mount(f"oci:{layout}:{tag}", opts=f"layer={n},only")
        got, _ = tree(mnt)
        got_opaque = set()
        for path, t in list(got.items()):
            xs = dict(t[7])
            if OPAQUE_XATTRS & set(xs):
                assert all(xs[x] == b"y" for x in OPAQUE_XATTRS), (path, xs)
                got_opaque.add(path)
                got[path] = t[:7] + (tuple((k, v) for k, v in t[7]
                                          if k not in OPAQUE_XATTRS),)
            if stat.S_ISCHR(t[0]) and t[6] == (0, 0):
                assert t[1] == 0, (path, t)
                got[path] = ("whiteout",)
        got.pop("/")
        assert got_opaque == opaque, f"layer {n}"
        for path, t in got.items():
            if path in want:
                continue
            # a directory the tar does not list, made for what is in it
            assert stat.S_ISDIR(t[0]) and any(
                p.startswith(path + "/") for p in want), (n, path, t)
        missing = sorted(set(want) - set(got))
        assert not missing, f"layer {n}: not in the mount: {missing}"
        diffs = [(p, want[p], got[p]) for p in sorted(want)
                 if got[p] != want[p]]
        assert not diffs, f"layer {n} (tar, mount):\n" + "\n".join(
            f"{p}:\n  {a}\n  {b}" for p, a, b in diffs[:10])


def test_layer_usage_errors(umoci_img, mount, tmp_path):
    layout, tag = umoci_img
    ref = f"oci:{layout}:{tag}"
    for opts in ("layer=0", "layer=2x", "only",
                 f"layer=1,upper={tmp_path / 'up'}"):
        r = mount(ref, opts=opts, check=False)
        assert r.returncode == 2, (opts, r.stderr)
        assert "stratafs:" in r.stderr and "layer" in r.stderr, r.stderr
    assert not (tmp_path / "up").exists()
    for opts in ("layer=5", "layer=-5,only"):
        r = mount(ref, opts=opts, check=False)
        assert r.returncode == 1, (opts, r.stderr)
        assert f"image {ref} has 4 layers" in r.stderr, r.stderr


# ---- strata layers -------------------------------------------------------

def tar_stats(tars):
    """Per layer: what the tar adds, changes, removes (counts and content
    bytes), the content it carries and what of it the final image no
    longer reaches, counted here from the tars (see strata(1) layers)."""
    keys = ("added", "added_bytes", "changed", "changed_bytes", "removed",
            "removed_bytes", "replaced_bytes", "content", "wasted")
    out = [dict.fromkeys(keys, 0) for _ in tars]
    state, refs, size_of = {}, {}, {}	# path -> [is_dir, inode key]

    def drop(path, cur, removal):
        key = state.pop(path)[1]
        if key is None:
            return
        refs[key] -= 1
        if refs[key] == 0:
            out[key[0]]["wasted"] += size_of[key]
            out[cur]["removed_bytes" if removal else "replaced_bytes"] += \
                size_of[key]

    def remove_below(path, cur):
        for p in [p for p in state
                  if len(p) > len(path) and p[:len(path)] == path]:
            drop(p, cur, True)
            out[cur]["removed"] += 1

    def remove(path, cur, counted):
        remove_below(path, cur)
        drop(path, cur, counted)
        out[cur]["removed"] += counted

    for cur, tf in enumerate(tars):
        s = out[cur]
        entries = []
        for m in tf.getmembers():	# whiteouts first: they hide only
            parts = _parts(m.name)	# what the layers below have
            if not parts:
                continue
            base, parent = parts[-1], parts[:-1]
            if base == ".wh..wh..opq":
                if not parent or state.get(parent, [False])[0]:
                    remove_below(parent, cur)
            elif base.startswith(".wh."):
                if parent + (base[4:],) in state:
                    remove(parent + (base[4:],), cur, True)
            else:
                entries.append((parts, m))
        made = set()
        for parts, m in entries:
            for i in range(1, len(parts)):
                a = parts[:i]
                if a in state and state[a][0]:
                    continue
                if a in state:
                    remove(a, cur, True)
                state[a] = [True, None]
                made.add(a)
            x = state.get(parts)
            if m.isdir():
                if parts in made:
                    made.discard(parts)
                    s["added"] += 1
                elif x is None:
                    s["added"] += 1
                    state[parts] = [True, None]
                else:
                    s["changed"] += 1
                    if not x[0]:
                        remove(parts, cur, False)
                        state[parts] = [True, None]
                continue
            nbytes = m.size if m.isreg() else 0
            s["content"] += nbytes
            if x is not None:
                remove(parts, cur, False)
                s["changed"] += 1
                s["changed_bytes"] += nbytes
            else:
                s["added"] += 1
                s["added_bytes"] += nbytes
            key = None
            if m.isreg():
                key = (cur, parts)
                refs[key], size_of[key] = 1, m.size
            elif m.islnk():
                key = state[_parts(m.linkname)][1]
                refs[key] += 1
            state[parts] = [False, key]
    return out


def _strata_stats(doc):
    return [{"added": l["added"]["count"], "added_bytes": l["added"]["bytes"],
             "changed": l["changed"]["count"],
             "changed_bytes": l["changed"]["bytes"],
             "removed": l["removed"]["count"],
             "removed_bytes": l["removed"]["bytes"],
             "replaced_bytes": l["replacedBytes"],
             "content": l["contentBytes"], "wasted": l["wastedBytes"]}
            for l in doc["layers"]]


def _unpacked_bytes(root):
    """Bytes of the regular files under @root, each inode once."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if stat.S_ISREG(st.st_mode) and st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


@pytest.mark.parametrize("which", ["umoci", "opaque"])
def test_layers_stats_match_the_tars(which, umoci_img, opaque_img, strata,
                                     tmp_path):
    layout, tag = umoci_img if which == "umoci" else opaque_img
    ref = f"oci:{layout}:{tag}"
    doc = json.loads(strata("layers", "--json", ref).stdout)
    want = tar_stats(layer_tars(layout, tag))
    got = _strata_stats(doc)
    for n, (g, w) in enumerate(zip(got, want), 1):
        assert g == w, f"layer {n}: strata {g}\n   tars {w}"
    assert len(got) == len(want)
    _, _, man, cfg = _layout_docs(layout, tag)
    assert [l["digest"] for l in doc["layers"]] == \
        [d["digest"] for d in man["layers"]]
    assert [l["size"] for l in doc["layers"]] == \
        [d["size"] for d in man["layers"]]
    assert [l["diffId"] for l in doc["layers"]] == cfg["rootfs"]["diff_ids"]
    content = sum(w["content"] for w in want)
    wasted = sum(w["wasted"] for w in want)
    assert doc["contentBytes"] == content
    assert doc["wastedBytes"] == wasted
    assert doc["efficiency"] == pytest.approx(1 - wasted / content)
    # what is not wasted is what the unpacked image holds
    root = umoci_rootfs(layout, tag, tmp_path / "full")
    assert content - wasted == _unpacked_bytes(root)
    text = strata("layers", ref).stdout
    assert f"efficiency {100 * (1 - wasted / content):.1f}%" in text
    assert len(text.splitlines()) == len(want) + 2


def test_layers_umoci_image_figures(umoci_img, strata):
    """The figures the steps above make, spelled out: the 300 kB file
    rewritten in layer 2 and the rest of it deleted in layer 4; umoci
    writes h2 again in layer 3 (its link count changed), so the whiteout
    of h1 there frees nothing, the new h2 replaces the 500 bytes."""
    layout, tag = umoci_img
    doc = json.loads(strata("layers", "--json", f"oci:{layout}:{tag}").stdout)
    s = _strata_stats(doc)
    assert s[0]["wasted"] == 300_000 + 100 + 3000 + 4000 + 50 + 64 + 500
    assert s[2]["removed"] == 1 and s[2]["removed_bytes"] == 0
    assert s[2]["replaced_bytes"] == 64 + 500
    assert s[1]["removed"] == 4		# etc/a, usr/lib, lib/x, lib/y
    assert s[1]["removed_bytes"] == 100 + 3000 + 4000
    assert s[1]["replaced_bytes"] == 300_000 + 50
    assert s[3]["removed_bytes"] == 10_000 and s[1]["wasted"] == 10_000
    assert s[2]["wasted"] == 0 and s[3]["wasted"] == 0


def test_layers_usage(strata):
    for args in ((), ("a", "b")):
        r = strata("layers", *args, check=False)
        assert r.returncode == 2, r.stderr
        assert "usage: strata layers" in r.stderr
    r = strata("layers", "--help")
    assert "WASTED" in r.stdout and "efficiency" in r.stdout
    r = strata("layers", "oci:/nonexistent:t", check=False)
    assert r.returncode == 1 and "/nonexistent" in r.stderr


def test_layer_only_mounts_stack_on_the_kernel_overlay(umoci_img, mount,
                                                       ovl_mounts, tmp_path):
    """The kernel overlay, given every layer's `only` mount as its lower
    directories, reads their whiteouts and opaque marks as the image's:
    it shows what the mount of the image shows. (Directories: the kernel
    takes attributes from the topmost layer holding one, listed in the
    tar or not, so only their presence is compared.)"""
    layout, tag = umoci_img
    ref = f"oci:{layout}:{tag}"
    lowers = [mount(ref, opts=f"layer={n},only") for n in range(4, 0, -1)]
    full = mount(ref)
    k = tmp_path / "kernel"
    k.mkdir()
    ovl_mounts.kernel(lowers, None, None, k)
    a, la = tree(full)
    b, lb = tree(k)
    for t in (a, b):
        for p in t:
            if stat.S_ISDIR(t[p][0]):
                t[p] = "dir"
    assert a == b
    assert la == lb
