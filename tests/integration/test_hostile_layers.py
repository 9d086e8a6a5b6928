"""Hostile layers (OCI-RULES §2.1-2.5: P*, L*, W*, T*, R*).

Every layer is written byte by byte with ocibuild. A refused layer must make
`strata import` (and `stratafs` on the same oci: reference) fail with one
line naming the image, the layer blob and the entry, publish nothing under
STORE/layers and tag nothing; an accepted one must show the tree the rules
prescribe (compared with `umoci unpack` where umoci accepts the layout).
In every case nothing outside the store may change (the `hostile` fixture's
sentinel directory and /tmp/<unique> path)."""
import os
import stat
import tempfile
import shutil
import subprocess
import tarfile
import gzip

import pytest
from pathlib import Path

from conftest import assert_same_as_umoci
from ocibuild import (Layer, build, reg, dir_, symlink, hardlink, chardev,
                      blockdev, fifo, typed, wh, opq, make_tar, header_block,
                      compress, flip_byte, MT_LAYER, MT_LAYER_GZIP,
                      MT_LAYER_ZSTD, MTIME)


def short(layer):
    """How messages name a layer blob: the digest cut to 12 hex digits."""
    return layer.digest[:len("sha256:") + 12]


def lay(tmp_path, layers, name="lay", **kw):
    return build(tmp_path / name, layers, **kw)


def refuse_layer(hostile, tmp_path, entries, entry, args=(), top=None):
    """One-layer image (or a base layer plus @entries when @top) refused,
    naming @entry, the bad layer and the image."""
    layers = [Layer(entries)] if top is None else [Layer(top), Layer(entries)]
    img = lay(tmp_path, layers)
    bad = img.layers[-1]
    err = hostile.refused(img, names=[entry, short(bad), img.ref], args=args,
                          diff_ids=[bad.diff_id])
    return img, err


# ---- P1, P2, P4, P6: names ----

@pytest.mark.parametrize("name", [
    "../evil", "../../../../pwned", "..", "../", "a/../../b",
    "/../victim/slash-dotdot", "./../x", "a/b/../../../c",
])
def test_p1_p2_parent_escape_refused(hostile, tmp_path, name):
    """P1/P2: `..` that leaves the root is refused (moby/ggcr policy,
    recommended by the rules; strata's policy too)."""
    refuse_layer(hostile, tmp_path, [reg(name, "escape")], name)


def test_p1_escape_to_unique_tmp_path(hostile, tmp_path):
    name = "../" * 30 + str(hostile.outside)[1:] + "/dotdot"
    refuse_layer(hostile, tmp_path, [reg(name, "escape")], "dotdot")


def test_p2_p3_absolute_and_dotted_names_sanitised(hostile, tmp_path):
    """P2: leading `/` stripped; P3: `./`, `//`, trailing `/` normalised;
    the view equals umoci's extraction."""
    img = lay(tmp_path, [Layer([
        dir_("etc"), reg("/etc/passwd", "root:x:0:0\n"),
        dir_("./usr/"), dir_("usr//bin/"), reg("./usr//bin///tool", "t"),
        reg("//abs-root-file", "r"),
    ])])
    mnt = hostile.accepted(img)
    assert (mnt / "etc/passwd").read_text() == "root:x:0:0\n"
    assert (mnt / "usr/bin/tool").read_text() == "t"
    assert (mnt / "abs-root-file").read_text() == "r"
    assert not hostile.outside.exists()
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_p4_root_directory_entry_sets_root_attributes(hostile, tmp_path):
    img = lay(tmp_path, [Layer([dir_(".", mode=0o711, uid=5, gid=6),
                                reg("a", "a")])])
    mnt = hostile.accepted(img)
    st = os.stat(mnt)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o711, 5, 6)
    assert st.st_mtime == MTIME


@pytest.mark.parametrize("entry", [
    lambda o: symlink(".", o), lambda o: symlink("./", "/"),
    lambda o: reg(".", "x"), lambda o: reg("/.", "x"),
    lambda o: hardlink(".", "a"), lambda o: chardev(".", 1, 3),
], ids=["symlink-dot", "symlink-dotslash", "file-dot", "file-slash",
        "hardlink-dot", "chardev-dot"])
def test_p4_non_directory_root_refused(hostile, tmp_path, entry):
    ti, data = entry(str(hostile.outside))
    refuse_layer(hostile, tmp_path, [reg("a", "a"), (ti, data)],
                 "non-directory entry for the root")


def test_p5_non_utf8_names_shown_unchanged(hostile, tmp_path):
    name = b"dir/caf\xe9-\xff.txt".decode("utf-8", "surrogateescape")
    img = lay(tmp_path, [Layer([dir_("dir"), reg(name, "bytes")],
                               fmt=tarfile.GNU_FORMAT)])
    mnt = hostile.accepted(img)
    assert os.listdir(os.fsencode(mnt / "dir")) == [b"caf\xe9-\xff.txt"]
    with open(os.fsencode(mnt) + b"/dir/caf\xe9-\xff.txt", "rb") as f:
        assert f.read() == b"bytes"


def test_p6_long_pax_path_accepted(hostile, tmp_path):
    """A 2 KiB PAX path with 200-byte components is legal: shown whole."""
    comps = [c * 200 for c in "abcdefghij"]
    name = "/".join(comps) + "/leaf"
    img = lay(tmp_path, [Layer([reg(name, "deep")])])
    mnt = hostile.accepted(img)
    assert (mnt / name).read_text() == "deep"
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


@pytest.mark.parametrize("name,fmt", [
    ("n" * 256, tarfile.PAX_FORMAT),
    ("d/" + "n" * 300, tarfile.GNU_FORMAT),      # ././@LongLink
    ("/".join(["d" * 200] * 25) + "/f", tarfile.PAX_FORMAT),  # > PATH_MAX
])
def test_p6_too_long_names_refused(hostile, tmp_path, name, fmt):
    img = lay(tmp_path, [Layer([reg(name, "x")], fmt=fmt)])
    hostile.refused(img, names=[name[:40], short(img.layers[0]), img.ref])


def test_p6_too_long_symlink_target_refused(hostile, tmp_path):
    refuse_layer(hostile, tmp_path,
                 [symlink("longlink", "x" * 5000)], "longlink")


def test_p8_implied_parents_created(hostile, tmp_path):
    img = lay(tmp_path, [Layer([reg("a/b/c/file", "f")])])
    mnt = hostile.accepted(img)
    assert (mnt / "a/b/c/file").read_text() == "f"
    for d in ("a", "a/b", "a/b/c"):
        assert stat.S_ISDIR(os.lstat(mnt / d).st_mode)


# ---- L1-L5: symlinks then writes ----

def test_l1_absolute_symlink_then_write_refused(hostile, tmp_path):
    """L1 (containerd SymlinkAbsolute, moby TestUntarThroughAbsoluteSymlink):
    `localetc -> /etc` then `localetc/unbroken` in the same layer.
    containerd and moby resolve it inside the root; strata refuses any
    entry whose path goes through a symlink of its own layer (issue 2:
    "paths through symlinks ... are refused with an error naming the
    entry"), so no producer-side trick decides where a file lands."""
    img = lay(tmp_path, [Layer([dir_("etc"), symlink("localetc", "/etc"),
                                reg("localetc/unbroken", "u")])])
    err = hostile.refused(img, names=["localetc/unbroken"])
    assert "symlink" in err


def test_l1_symlink_to_host_tmp_then_write(hostile, tmp_path):
    """`x -> /tmp/<unique>` then `x/file`: whatever the policy (refuse, or
    resolve inside the view), the host path is never created."""
    out = str(hostile.outside)
    img = lay(tmp_path, [Layer([symlink("x", out), reg("x/file", "pwn")])])
    r = hostile.strata("import", img.ref, "sym:1", check=False)
    hostile.untouched()
    if r.returncode != 0:
        assert "x/file" in r.stderr and short(img.layers[0]) in r.stderr
        assert not hostile.published(img.layers[0].diff_id)
        return
    mnt = hostile.mount("sym:1")
    assert os.readlink(mnt / "x") == out
    assert (mnt / out.lstrip("/") / "file").read_text() == "pwn"
    hostile.untouched()


def test_l1_symlink_chain_then_write(hostile, tmp_path):
    """containerd SymlinkMultipleAbsolute/Relative: chains resolve in root."""
    out = str(hostile.outside)
    img = lay(tmp_path, [Layer([
        dir_("dummy"), symlink("dummy/etc", out), symlink("localetc",
                                                          "./dummy/etc"),
        reg("localetc/unbroken", "u")])])
    r = hostile.strata("import", img.ref, "chain:1", check=False)
    hostile.untouched()
    if r.returncode != 0:
        assert "localetc/unbroken" in r.stderr
        return
    mnt = hostile.mount("chain:1")
    assert (mnt / out.lstrip("/") / "unbroken").read_text() == "u"


@pytest.mark.parametrize("entries,writer", [
    # L2 moby TestUntarInvalidSymlink
    (lambda o: [symlink("loophole-victim", "../victim"),
                reg("loophole-victim/file", "x")], "loophole-victim/file"),
    (lambda o: [dir_("dir"), symlink("dir/loophole", "../../victim"),
                reg("dir/loophole/newdir/newfile", "x")],
     "dir/loophole/newdir/newfile"),
    (lambda o: [symlink("up", "../../../../../../../.." + o),
                reg("up/file", "x")], "up/file"),
    # L3 moby TestUntarSymlinkBreakout
    (lambda o: [dir_("inner"), symlink("inner/go_up", ".."),
                symlink("inner/go_up/escape", "../" * 8 + o[1:]),
                reg("inner/go_up/escape/newfile", "x")],
     "inner/go_up/escape"),
    # moby TestUnpackRejectsRelativeEscapeBeforeAbsoluteSymlink
    (lambda o: [symlink("escape", ".."), symlink("escape/absolute", o),
                reg("escape/absolute/file", "x")], "escape/absolute"),
], ids=["loophole-victim", "dir-loophole", "deep-relative", "two-hop",
        "escape-before-absolute"])
def test_l2_l3_relative_escape_then_write(hostile, tmp_path, entries, writer):
    """Either refused naming the entry (moby) or clamped into the view
    (containerd); never written on the host."""
    img = lay(tmp_path, [Layer(entries(str(hostile.outside)))])
    r = hostile.strata("import", img.ref, "esc:1", check=False)
    hostile.untouched()
    if r.returncode != 0:
        assert writer in r.stderr, r.stderr
        assert short(img.layers[0]) in r.stderr
        assert not hostile.published(img.layers[0].diff_id)
        return
    mnt = hostile.mount("esc:1")
    files = [os.path.join(d, f) for d, _, fs in os.walk(mnt) for f in fs]
    assert any(open(f).read() == "x" for f in files
               if os.path.isfile(f) and not os.path.islink(f))
    hostile.untouched()


def test_l5_symlink_replaced_by_later_entries(hostile, tmp_path):
    """L5 (containerd SymlinkOverridePath / DirectoryOverrideSymlink): `foo`
    dir, `foo -> /<outside>`, `foo` dir again, `foo/x`. Later entries
    replace earlier ones (R16, as the peers apply them): foo is the last
    directory, holding x, and nothing goes through the symlink."""
    out = str(hostile.outside)
    img = lay(tmp_path, [Layer([dir_("foo"), symlink("foo", out),
                                dir_("foo", mode=0o750), reg("foo/x", "x")])])
    mnt = hostile.accepted(img)
    assert stat.S_ISDIR(os.lstat(mnt / "foo").st_mode)
    assert stat.S_IMODE(os.lstat(mnt / "foo").st_mode) == 0o750
    assert (mnt / "foo/x").read_text() == "x"
    assert not os.path.lexists(hostile.outside)
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_l6_escaping_symlink_target_kept_verbatim(hostile, tmp_path):
    img = lay(tmp_path, [Layer([
        dir_("dir"), symlink("dir/verybadlink", "../../../../etc/shadow"),
        symlink("abs", str(hostile.outside))])])
    mnt = hostile.accepted(img)
    assert os.readlink(mnt / "dir/verybadlink") == "../../../../etc/shadow"
    assert os.readlink(mnt / "abs") == str(hostile.outside)
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_p9_lower_symlink_parent_absolute_to_host_path(hostile, tmp_path):
    """P9/L1 across layers: lower `x -> /tmp/<unique>`, upper `x/file`: the
    file appears at /tmp/<unique>/file inside the view, `x` stays a
    symlink, the host path is never created."""
    out = str(hostile.outside)
    img = lay(tmp_path, [Layer([symlink("x", out)]),
                         Layer([reg("x/file", "pwn")])])
    mnt = hostile.accepted(img)
    assert os.readlink(mnt / "x") == out
    assert (mnt / out.lstrip("/") / "file").read_text() == "pwn"
    hostile.untouched()
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_p9_lower_symlink_parent_relative_escape(hostile, tmp_path):
    """Lower `esc -> ../../../../..<outside>`, upper `esc/file`: refused, or
    clamped inside the view; the host is never touched."""
    out = str(hostile.outside)
    img = lay(tmp_path, [Layer([symlink("esc", "../" * 12 + out[1:])]),
                         Layer([reg("esc/file", "pwn")])])
    r = hostile.strata("import", img.ref, "esc:1", check=False)
    hostile.untouched()
    if r.returncode == 0:
        mnt = hostile.mount("esc:1")
        assert os.readlink(mnt / "esc") == "../" * 12 + out[1:]
        assert (mnt / out.lstrip("/") / "file").read_text() == "pwn"
        hostile.untouched()
    else:
        assert "esc/file" in r.stderr


# ---- L7-L12: hardlinks ----

@pytest.mark.parametrize("target", [
    "../victim/hello", "/../victim/hello", "../../../../../etc/passwd",
    "dir/../../victim", "..",
])
def test_l7_hardlink_outside_refused(hostile, tmp_path, target):
    """L7: moby rejects ("invalid hardlink target"); strata refuses. The
    message must name the hardlink *entry* (dotdot-link)."""
    refuse_layer(hostile, tmp_path,
                 [dir_("dir"), reg("dir/hello", "h"),
                  hardlink("dotdot-link", target)], "dotdot-link")


def test_l7_hardlink_to_host_path_refused(hostile, tmp_path):
    (hostile.sentinel / "secret").write_text("s")
    hostile._before = __import__("conftest")._snapshot(hostile.sentinel)
    refuse_layer(hostile, tmp_path,
                 [hardlink("hl-secret", str(hostile.sentinel / "secret"))],
                 "hl-secret")


def test_l7_absolute_hardlink_is_root_relative(hostile, tmp_path):
    """kaniko writes `/usr/bin/perlbug` style link targets."""
    img = lay(tmp_path, [Layer([dir_("usr"), dir_("usr/bin"),
                                reg("usr/bin/perl", "perl"),
                                hardlink("usr/bin/perlbug", "/usr/bin/perl")])])
    mnt = hostile.accepted(img)
    a, b = os.lstat(mnt / "usr/bin/perl"), os.lstat(mnt / "usr/bin/perlbug")
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert (mnt / "usr/bin/perlbug").read_text() == "perl"
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_l8_hardlink_to_symlink_links_the_symlink(hostile, tmp_path):
    out = str(hostile.outside)
    img = lay(tmp_path, [Layer([symlink("s", out), hardlink("h", "s")])])
    mnt = hostile.accepted(img)
    assert os.readlink(mnt / "h") == out
    assert os.lstat(mnt / "h").st_ino == os.lstat(mnt / "s").st_ino


def test_l9_hardlink_symlink_chmod_leaves_host_alone(hostile, tmp_path):
    """CVE-2021-32760 shape: symlink to a host file, hardlink to it, then a
    later entry of the same name with mode 0777. The sentinel keeps its
    mode whatever strata decides."""
    secret = hostile.sentinel / "keep"
    os.chmod(secret, 0o400)
    hostile._before = __import__("conftest")._snapshot(hostile.sentinel)
    img = lay(tmp_path, [Layer([symlink("s", str(secret)),
                                hardlink("h", "s"),
                                reg("h", "", mode=0o777)])])
    hostile.strata("import", img.ref, "chmod:1", check=False)
    hostile.untouched()
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o400


@pytest.mark.parametrize("entries,entry", [
    ([hardlink("hl-missing", "nope")], "hl-missing"),
    ([hardlink("hl-before", "later"), reg("later", "l")], "hl-before"),
    ([dir_("d"), hardlink("hl-dir", "d")], "hl-dir"),
    ([reg("a", "a"), hardlink("hl-self", "hl-self")], "hl-self"),
], ids=["missing", "target-later", "directory", "self"])
def test_l10_hardlink_to_missing_or_directory_refused(hostile, tmp_path,
                                                      entries, entry):
    refuse_layer(hostile, tmp_path, entries, entry)


def test_l11_hardlink_to_lower_layer(hostile, tmp_path):
    """L11: "may fail" (layer.md). Refused naming the entry, or shown as
    the lower file's content sharing its inode."""
    img = lay(tmp_path, [Layer([reg("lower", "L")]),
                         Layer([hardlink("hl-lower", "lower")])])
    r = hostile.strata("import", img.ref, "l11:1", check=False)
    hostile.untouched()
    if r.returncode != 0:
        assert "hl-lower" in r.stderr and short(img.layers[1]) in r.stderr
        assert not hostile.published(img.layers[1].diff_id)
        return
    mnt = hostile.mount("l11:1")
    assert (mnt / "hl-lower").read_text() == "L"
    assert os.lstat(mnt / "hl-lower").st_ino == os.lstat(mnt / "lower").st_ino


def test_l12_hardlink_with_different_data_refused(hostile, tmp_path):
    """A PAX hardlink with a payload (libarchive honours the size under
    PAX): never written through the link."""
    refuse_layer(hostile, tmp_path,
                 [reg("a", "abc"), hardlink("hl-data", "a", b"PAYLOAD!",
                                            pax={"comment": "pax"})],
                 "hl-data")


def test_l12_hardlink_payload_ignored(hostile, tmp_path):
    """Same-size payload: accepted or refused, but never shown."""
    img = lay(tmp_path, [Layer([reg("a", "abc"),
                                hardlink("b", "a", b"zzz",
                                         pax={"comment": "pax"})])])
    r = hostile.strata("import", img.ref, "l12:1", check=False)
    if r.returncode != 0:
        assert "b" in r.stderr
        return
    mnt = hostile.mount("l12:1")
    assert (mnt / "a").read_text() == "abc"
    assert (mnt / "b").read_text() == "abc"


# ---- W1-W5, W8, W11: whiteout names ----

@pytest.mark.parametrize("name", [
    ".wh.", "some/path/.wh.", ".wh..", ".wh...", "etc/.wh..", "etc/.wh...",
])
def test_w1_w2_invalid_whiteouts_refused(hostile, tmp_path, name):
    refuse_layer(hostile, tmp_path, [dir_("etc"), reg("etc/f", "f"),
                                     reg(name)], name,
                 top=[dir_("etc"), reg("etc/keep", "k")])


def test_w5_whiteout_prefix_on_directory_refused(hostile, tmp_path):
    refuse_layer(hostile, tmp_path, [reg(".wh.etc/somefile", "x")],
                 ".wh.etc/somefile")


def test_w3_whiteout_of_symlink_removes_only_the_link(hostile, tmp_path):
    img = lay(tmp_path, [Layer([dir_("etc"), reg("etc/passwd", "p"),
                                symlink("localetc", "/etc")]),
                         Layer([wh("localetc")])])
    mnt = hostile.accepted(img)
    assert not os.path.lexists(mnt / "localetc")
    assert (mnt / "etc/passwd").read_text() == "p"
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_w4_whiteout_through_lower_symlink_parent(hostile, tmp_path):
    """containerd WhiteoutSymlinkPath: `localetc/.wh.whitedout` with lower
    `localetc -> /etc` removes etc/whitedout; localetc stays a symlink."""
    img = lay(tmp_path, [Layer([dir_("etc"), reg("etc/whitedout", "w"),
                                reg("etc/kept", "k"),
                                symlink("localetc", "/etc")]),
                         Layer([wh("localetc/whitedout")])])
    mnt = hostile.accepted(img)
    assert os.readlink(mnt / "localetc") == "/etc"
    assert sorted(os.listdir(mnt / "etc")) == ["kept"]


def test_w4_whiteout_under_dangling_symlink_is_noop(hostile, tmp_path):
    """containerd WhiteoutDeadSymlinkParent."""
    img = lay(tmp_path, [Layer([dir_("etc"), reg("etc/f", "f"),
                                symlink("dead", "/nonexistent")]),
                         Layer([wh("dead/f")])])
    mnt = hostile.accepted(img)
    assert os.readlink(mnt / "dead") == "/nonexistent"
    assert (mnt / "etc/f").read_text() == "f"
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_w8_whiteout_of_nothing_is_hidden(hostile, tmp_path):
    img = lay(tmp_path, [Layer([reg("a", "a")]),
                         Layer([wh("nothing"), wh(".hidden"), reg("b", "b")])])
    mnt = hostile.accepted(img)
    assert sorted(os.listdir(mnt)) == ["a", "b"]
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_w8_whiteout_under_missing_dir_is_noop(hostile, tmp_path):
    """W8 "no-op": `d/.wh.deeper` with no `d` below must not make an empty
    `d` appear (umoci agrees; containerd/moby mkdir the parent before
    looking at the name, an extractor artefact)."""
    img = lay(tmp_path, [Layer([reg("a", "a")]),
                         Layer([wh("d/deeper"), reg("b", "b")])])
    mnt = hostile.accepted(img)
    assert sorted(os.listdir(mnt)) == ["a", "b"]
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_w11_aufs_metadata_hidden(hostile, tmp_path):
    """W11: `.wh..wh.plnk/…` and other `.wh..wh.*` are AUFS metadata:
    hidden from the view (moby), not a reason to refuse the layer."""
    img = lay(tmp_path, [Layer([reg("a", "a")]),
                         Layer([dir_(".wh..wh.plnk"),
                                reg(".wh..wh.plnk/1234.5678", "x"),
                                reg(".wh..wh.aufs"), reg("b", "b")])])
    mnt = hostile.accepted(img)
    assert sorted(os.listdir(mnt)) == ["a", "b"]


@pytest.mark.parametrize("order", ["dir-first", "inner-first"])
def test_whiteout_inside_whited_out_dir(hostile, tmp_path, order):
    """Layer 2 holds `.wh.d` and `d/.wh.x`: whiteouts are not content, so
    `d` must not come back as an (empty) directory when `d/.wh.x` comes
    first (every extractor removes d last). Compared with umoci."""
    inner = [wh("d/x")]
    outer = [wh("d")]
    top = outer + inner if order == "dir-first" else inner + outer
    img = lay(tmp_path, [Layer([dir_("d"), reg("d/x", "x"), reg("d/y", "y"),
                                reg("keep", "k")]),
                         Layer(top)])
    mnt = hostile.accepted(img)
    assert not os.path.exists(mnt / "d/x") and not os.path.exists(mnt / "d/y")
    if order == "inner-first":
        # containerd, moby and umoci all end without d
        assert not os.path.lexists(mnt / "d")
        assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")
    elif os.path.lexists(mnt / "d"):
        # containerd/moby re-create the parent (empty); umoci does not
        assert os.listdir(mnt / "d") == []


# ---- R16: duplicates ----

DUPLICATES = {
    # later file wins
    "file-file": [reg("a", "first"), reg("a", "second")],
    # a directory replaces a file, a file a symlink
    "file-dir": [reg("b", "file"), dir_("b", mode=0o700), reg("b/in", "i")],
    "symlink-file": [symlink("s", "x"), reg("s", "plain")],
    # a file replaces a directory and everything the layer put in it
    "dir-file": [dir_("d"), reg("d/x", "x"), dir_("d/sub"),
                 reg("d/sub/y", "y"), reg("d", "now a file")],
    # ... and a directory made there again starts empty (hides d/low)
    "dir-file-dir": [dir_("d"), reg("d/x", "x"), reg("d", "f"), dir_("d"),
                     reg("d/y", "y")],
    # a hardlink keeps the content of the name it linked, replaced later
    "hardlink-then-replaced": [reg("a", "one"), hardlink("h", "a"),
                               reg("a", "two")],
    # a hardlink group whose leader a directory replaces
    "leader-replaced-by-dir": [reg("a", "one"), hardlink("h1", "a"),
                               hardlink("h2", "a"), dir_("a")],
    # whiteout of a same-layer name, then the name again
    "whiteout-then-readd": [reg("w", "one"), wh("w"), reg("w", "two")],
}


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_r16_duplicate_entries_last_wins(hostile, tmp_path, case):
    """R16: a layer naming a path twice is applied in order, the later
    entry replacing the earlier (a directory over a directory merges),
    as umoci, containerd and Docker apply it, with a warning; strata
    refused such layers. umoci unpacks the same layout as the judge (the
    lower layer gives d/low, a and w something to hide)."""
    img = lay(tmp_path, [Layer([dir_("d"), reg("d/low", "low"),
                                reg("w", "lower")]),
                         Layer(DUPLICATES[case])])
    r = hostile.strata("import", img.ref, "dup:1", check=False)
    assert r.returncode == 0, r.stderr
    assert "given twice" in r.stderr
    mnt = hostile.mount("dup:1")
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_duplicate_directory_entries_merge(hostile, tmp_path):
    img = lay(tmp_path, [Layer([dir_("d", mode=0o700), reg("d/a", "a"),
                                dir_("./d/", mode=0o750), reg("d/b", "b")])])
    mnt = hostile.accepted(img)
    assert stat.S_IMODE(os.stat(mnt / "d").st_mode) == 0o750
    assert sorted(os.listdir(mnt / "d")) == ["a", "b"]


# ---- T1-T9: entry types and metadata ----

def test_t1_t3_devices_and_setuid_shown_not_created(hostile, tmp_path):
    img = lay(tmp_path, [Layer([
        dir_("dev"), chardev("dev/null", 1, 3, mode=0o666),
        blockdev("dev/sda", 8, 0, mode=0o660, gid=6),
        chardev("dev/big", 4095, 1048575), fifo("dev/fifo", mode=0o600),
        chardev("dev/wh", 0, 0),
        reg("bin/su", "su", mode=0o4755), reg("bin/sg", "sg", mode=0o2711),
        dir_("tmp", mode=0o1777)])])
    mnt = hostile.accepted(img)
    want = {"dev/null": (stat.S_IFCHR, 0o666, (1, 3)),
            "dev/sda": (stat.S_IFBLK, 0o660, (8, 0)),
            "dev/big": (stat.S_IFCHR, 0o666, (4095, 1048575)),
            "dev/wh": (stat.S_IFCHR, 0o666, (0, 0)),
            "dev/fifo": (stat.S_IFIFO, 0o600, None),
            "bin/su": (stat.S_IFREG, 0o4755, None),
            "bin/sg": (stat.S_IFREG, 0o2711, None),
            "tmp": (stat.S_IFDIR, 0o1777, None)}
    for p, (kind, mode, dev) in want.items():
        st = os.lstat(mnt / p)
        assert stat.S_IFMT(st.st_mode) == kind, p
        assert stat.S_IMODE(st.st_mode) == mode, p
        if dev:
            assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == dev, p
    assert os.lstat(mnt / "dev/sda").st_gid == 6
    hostile.store_is_inert()
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")
    # the mount must not honour them
    opts = [l.split()[3] for l in open("/proc/self/mounts")
            if l.split()[1] == str(mnt)]
    assert opts and "nosuid" in opts[0].split(",") and \
        "nodev" in opts[0].split(","), opts


@pytest.mark.parametrize("major,minor", [(4096, 0), (0, 1 << 20),
                                         (2047, 1 << 21)])
def test_t2_device_numbers_out_of_range(hostile, tmp_path, major, minor):
    """T2: a device number the view cannot show exactly (Linux: 12-bit
    major, 20-bit minor) is refused, never truncated."""
    img = lay(tmp_path, [Layer([chardev("baddev", major, minor)],
                               fmt=tarfile.GNU_FORMAT)])
    r = hostile.strata("import", img.ref, "dev:1", check=False)
    if r.returncode != 0:
        assert "baddev" in r.stderr
        hostile.untouched()
        return
    mnt = hostile.mount("dev:1")
    st = os.lstat(mnt / "baddev")
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor), \
        "device number silently truncated"


def test_t4_capability_and_user_xattrs_shown(hostile, tmp_path):
    cap = "\x01\x00\x00\x02" + "\x00" * 16
    img = lay(tmp_path, [Layer([
        reg("ping", "p", mode=0o755,
            xattrs={"security.capability": cap, "user.note": "n"})])])
    mnt = hostile.accepted(img)
    assert os.getxattr(mnt / "ping", "security.capability") == \
        cap.encode("utf-8", "surrogateescape")
    assert os.getxattr(mnt / "ping", "user.note") == b"n"
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_t5_overlay_xattrs_not_interpreted(hostile, tmp_path):
    """T5: `trusted.overlay.opaque=y` in a layer is not an opaque marker
    for this fs, and does not leak into the view."""
    img = lay(tmp_path, [Layer([dir_("d"), reg("d/lower", "l")]),
                         Layer([dir_("d", xattrs={
                             "trusted.overlay.opaque": "y",
                             "user.overlay.opaque": "y"}),
                             reg("d/upper", "u")])])
    mnt = hostile.accepted(img)
    assert sorted(os.listdir(mnt / "d")) == ["lower", "upper"]
    xs = os.listxattr(mnt / "d")
    assert not any("overlay." in x for x in xs), xs


def test_t7_pax_global_headers_ignored(hostile, tmp_path):
    """moby TestTypeXGlobalHeaderDoesNotFail / TestXGlobalNoParent: a `g`
    header named foo/bar creates nothing; a global `path` record does not
    rename anything."""
    g = tarfile.TarInfo("foo/bar")
    g.type = tarfile.XGLTYPE
    tar = make_tar([(g, None), reg("a", "a")],
                   global_pax={"comment": "global"})
    img = lay(tmp_path, [Layer(tar=tar)])
    mnt = hostile.accepted(img)
    assert sorted(os.listdir(mnt)) == ["a"]
    assert (mnt / "a").read_text() == "a"


def test_t9_contiguous_file_is_regular(hostile, tmp_path):
    img = lay(tmp_path, [Layer([typed("contig", b"7", b"data", mode=0o640)])])
    mnt = hostile.accepted(img)
    st = os.lstat(mnt / "contig")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert (mnt / "contig").read_bytes() == b"data"


@pytest.mark.parametrize("flag", [b"Z", b"9", b"M", b"V", b"D", b"S"])
def test_t9_unknown_typeflag_refused(hostile, tmp_path, flag):
    """T9: unknown typeflag → reject (umoci "unknown typeflag", containerd
    "unhandled tar header type"), not shown as a regular file."""
    refuse_layer(hostile, tmp_path, [reg("ok", "ok"),
                                     typed("weird", flag, b"abc")], "weird")


def _framing_entries():
    """Entries whose headers a tar reader must follow: long names and link
    names (pax path/linkpath, or GNU L/K blocks), big pax xattrs, data
    that ends exactly on a block, an empty file, directories, a hardlink
    and a symlink."""
    long = "d/" + "n" * 120 + "/" + "f" * 90
    return [dir_("d"), dir_("d/" + "n" * 120),
            reg(long, os.urandom(5000)),
            reg("d/block", b"b" * 1024), reg("d/empty", b""),
            reg("d/xattrs", "x", pax={"SCHILY.xattr.user.big": "v" * 3000}),
            hardlink("d/hl", long),
            symlink("d/" + "s" * 150, "target/" + "t" * 150)]


@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_t9_typeflag_found_past_long_headers(hostile, tmp_path, fmt):
    """The type-flag watch follows pax and GNU extended headers, payloads
    and padding: a bad type flag after them is still found and named."""
    f = tarfile.PAX_FORMAT if fmt == "pax" else tarfile.GNU_FORMAT
    entries = [e for e in _framing_entries()
               if fmt == "pax" or e[0].name != "d/xattrs"]
    tar = make_tar(entries + [typed("weird", b"Z", b"abc")], fmt=f)
    img = lay(tmp_path, [Layer(tar=tar)])
    err = hostile.refused(img, names=["weird", short(img.layers[0]),
                                      img.ref])
    assert "type" in err


def test_t9_gnu_tar_layers_accepted(hostile, tmp_path):
    """Layers written by GNU tar (--format=gnu and posix, sparse files,
    long names, hardlinks, an unaligned tail) import, and the mount equals
    what umoci unpacks: the watch never refuses a valid layer."""
    work = Path(tempfile.mkdtemp(prefix="strata-gnutar-"))
    try:
        _gnu_tar_layers(hostile, tmp_path, work)
    finally:
        shutil.rmtree(work)


def _gnu_tar_layers(hostile, tmp_path, work):
    src = work / "src"
    deep = src / ("n" * 120) / ("m" * 120)
    deep.mkdir(parents=True)
    (deep / ("f" * 100)).write_bytes(os.urandom(70001))
    os.link(deep / ("f" * 100), src / "hl")
    with open(src / "sparse", "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"middle")
    os.symlink("n" * 120, src / ("l" * 140))

    def gnu_tar(fmt, *opts):
        out = work / f"{fmt}{len(opts)}.tar"
        subprocess.run(["tar", "-C", src, f"--format={fmt}", *opts,
                        "--numeric-owner", "-cf", out, "."], check=True)
        return Layer(tar=out.read_bytes())
    # GNU format (L and K blocks); posix with pax sparse maps (type '0')
    img = lay(tmp_path, [gnu_tar("gnu"), gnu_tar("posix", "--sparse")])
    mnt = hostile.accepted(img)
    assert (mnt / "sparse").stat().st_size == 8 << 20
    assert (mnt / "sparse").read_bytes()[4 << 20:(4 << 20) + 6] == b"middle"
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")
    # old GNU sparse entries (type 'S'): refused, as umoci and moby do
    img = lay(tmp_path, [gnu_tar("gnu", "--sparse")], name="lay-sparse")
    hostile.refused(img, names=["sparse", short(img.layers[0]), img.ref])


# ---- R1-R6: sizes and compression ----

@pytest.mark.parametrize("size", [1 << 40, 1 << 48, 1 << 62])
def test_r1_gigantic_header_little_data(hostile, tmp_path, size):
    ti = tarfile.TarInfo("big")
    ti.size = size
    ti.mtime = MTIME
    tar = header_block(ti, tarfile.GNU_FORMAT) + b"x" * 1024 + bytes(1024)
    img = lay(tmp_path, [Layer(tar=tar)])
    hostile.refused(img, names=["big", short(img.layers[0]), img.ref])


def _base_tar():
    return make_tar([dir_("d"), reg("d/f", os.urandom(20000) + b"x" * 100000),
                     reg("d/g", "g")])


@pytest.mark.parametrize("cut", ["half", "trailer", "header"])
def test_r2_truncated_gzip(hostile, tmp_path, cut):
    tar = _base_tar()
    gz = compress(tar, "gzip")
    blob = {"half": gz[:len(gz) // 2], "trailer": gz[:-4],
            "header": gz[:6]}[cut]
    img = lay(tmp_path, [Layer(tar=tar, blob=blob)])
    hostile.refused(img, names=[short(img.layers[0]), img.ref])


def test_r3_corrupt_crc_blob_changed_after_hashing(hostile, tmp_path):
    """Blob changed after hashing (CRC zeroed): refused (by the trailer
    check or the digest, whichever comes first in one streaming pass)."""
    img = lay(tmp_path, [Layer(tar=_base_tar(),
                               mutate=lambda b: b[:-8] + bytes(4) + b[-4:])])
    hostile.refused(img, names=[short(img.layers[0]), img.ref])


def test_r3_corrupt_crc_with_matching_digest(hostile, tmp_path):
    """The descriptor names the corrupt bytes: the trailer check catches it
    (libarchive alone would not)."""
    tar = _base_tar()
    gz = compress(tar, "gzip")
    img = lay(tmp_path, [Layer(tar=tar, blob=gz[:-8] + bytes(4) + gz[-4:])])
    hostile.refused(img, names=[short(img.layers[0]), img.ref])


@pytest.mark.parametrize("kind", ["multi-member", "many-members"])
def test_r4_multimember_accepted(hostile, tmp_path, kind):
    """Concatenated gzip members are one stream (RFC 1952; Go's gzip
    reader is multistream by default and reads them whole)."""
    tar = _base_tar()
    blob = {
        "multi-member": gzip.compress(tar[:7000], mtime=0) +
        gzip.compress(tar[7000:], mtime=0),
        "many-members": b"".join(gzip.compress(tar[i:i + 512], mtime=0)
                                 for i in range(0, len(tar), 512)),
    }[kind]
    img = lay(tmp_path, [Layer(tar=tar, blob=blob)])
    mnt = hostile.accepted(img)
    with tarfile.open(fileobj=__import__("io").BytesIO(tar)) as tf:
        want = tf.extractfile("d/f").read()
    assert (mnt / "d/f").read_bytes() == want
    assert (mnt / "d/g").read_text() == "g"


@pytest.mark.parametrize("junk", [bytes(4096), b"not gzip at all",
                                  b"\x1fnot gzip", b"\x1f\x8b"],
                         ids=["zeros", "garbage", "1f-garbage", "1f8b"])
def test_r4_bytes_after_the_gzip_stream_refused(hostile, tmp_path, junk):
    """Go's compress/gzip fails on each ("gzip: invalid header" for the
    first two, "unexpected EOF" for the last two), so Docker, containerd
    and podman cannot read the layer; strata refused it only when the
    junk began with 0x1f, and showed the tar otherwise."""
    tar = _base_tar()
    img = lay(tmp_path, [Layer(tar=tar, blob=compress(tar, "gzip") + junk)])
    err = hostile.refused(img, names=[short(img.layers[0]), img.ref])
    assert "gzip" in err


def _zstd_frames(*parts):
    return b"".join(compress(p, "zstd") for p in parts)


@pytest.mark.parametrize("kind", ["frames", "skippable"])
def test_r4_zstd_frames_and_skippable_frames_accepted(hostile, tmp_path,
                                                      kind):
    """Concatenated zstd frames are one stream and skippable frames carry
    no data (RFC 8878; `zstd -d` reads both so)."""
    tar = _base_tar()
    skip = (0x184D2A50).to_bytes(4, "little") + (5).to_bytes(4, "little") + \
        b"hello"
    blob = {"frames": _zstd_frames(tar[:7000], tar[7000:]),
            "skippable": skip + compress(tar, "zstd") + skip}[kind]
    assert subprocess.run(["zstd", "-dc"], input=blob, capture_output=True,
                          check=True).stdout == tar
    img = lay(tmp_path, [Layer(tar=tar, blob=blob, compression="zstd")])
    mnt = hostile.accepted(img)
    assert (mnt / "d/g").read_text() == "g"


@pytest.mark.parametrize("junk", [bytes(4096), b"not zstd", b"\x28\xb5"],
                         ids=["zeros", "garbage", "cut-magic"])
def test_r4_bytes_after_the_zstd_stream_refused(hostile, tmp_path, junk):
    """`zstd -d` fails on each ("unknown header" / "truncated")."""
    tar = _base_tar()
    blob = compress(tar, "zstd") + junk
    assert subprocess.run(["zstd", "-dc"], input=blob,
                          capture_output=True).returncode != 0
    img = lay(tmp_path, [Layer(tar=tar, blob=blob, compression="zstd")])
    err = hostile.refused(img, names=[short(img.layers[0]), img.ref])
    assert "zstd" in err


def test_r5_gzip_bomb_refused_by_max_layer_bytes(hostile, tmp_path):
    tar = make_tar([reg("zeros", bytes(64 << 20))])
    img = lay(tmp_path, [Layer(tar=tar, level=9)])
    assert img.layers[0].size < 1 << 20
    hostile.refused(img, args=("--max-layer-bytes", str(1 << 20)),
                    names=[short(img.layers[0]), img.ref])
    # the same image is fine without the limit
    hostile.accepted(img)


def test_r5_zstd_bomb_refused_by_max_layer_bytes(hostile, tmp_path):
    tar = make_tar([reg("zeros", bytes(64 << 20))])
    img = lay(tmp_path, [Layer(tar=tar, compression="zstd", level=19)])
    hostile.refused(img, args=("--max-layer-bytes", str(1 << 20)),
                    names=[short(img.layers[0]), img.ref])


def test_r5_max_entries(hostile, tmp_path):
    img = lay(tmp_path, [Layer([reg(f"f{i}") for i in range(101)])])
    hostile.refused(img, args=("--max-entries", "100"),
                    names=["f100", short(img.layers[0]), img.ref])
    ok = lay(tmp_path, [Layer([reg(f"f{i}") for i in range(100)])],
             name="lay-ok")
    mnt = hostile.accepted(ok, args=("--max-entries", "100"))
    assert len(os.listdir(mnt)) == 100


@pytest.mark.parametrize("comp,mt", [
    ("gzip", MT_LAYER), ("none", MT_LAYER_GZIP), ("zstd", MT_LAYER_GZIP),
    ("gzip", MT_LAYER_ZSTD), ("none", MT_LAYER_ZSTD), ("zstd", MT_LAYER),
])
def test_r6_wrong_compression_for_media_type(hostile, tmp_path, comp, mt):
    img = lay(tmp_path, [Layer(tar=_base_tar(), compression=comp,
                               media_type=mt)])
    hostile.refused(img, names=[short(img.layers[0]), img.ref])


@pytest.mark.parametrize("comp", ["gzip", "none", "zstd"])
def test_compressions_accepted(hostile, tmp_path, comp):
    img = lay(tmp_path, [Layer([dir_("d"), reg("d/f", "hello")],
                               compression=comp)])
    mnt = hostile.accepted(img)
    assert (mnt / "d/f").read_text() == "hello"
    if comp != "zstd":      # umoci 0.4 cannot read zstd layers
        assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_r16_go_testdata_hdr_only(hostile, tmp_path):
    """Go's testdata hdr-only.tar names every header-only type twice (the
    second time with a size field of 5 and no data, which Go reads as no
    data). Go's reading, applied in order: the same eight names once."""
    data = Path(__file__).parent / "data" / "gotar" / "hdr-only.tar"
    img = lay(tmp_path, [Layer(tar=data.read_bytes(), compression="none")])
    mnt = hostile.accepted(img)
    assert sorted(os.listdir(mnt)) == ["badlink", "dir", "fifo", "file",
                                       "hardlink", "null", "sda", "symlink"]
    st = {n: os.lstat(mnt / n) for n in os.listdir(mnt)}
    assert stat.S_ISDIR(st["dir"].st_mode)
    assert stat.S_IMODE(st["dir"].st_mode) == 0o750
    assert stat.S_ISFIFO(st["fifo"].st_mode)
    assert stat.S_ISCHR(st["null"].st_mode)
    assert os.major(st["null"].st_rdev) == 1
    assert os.minor(st["null"].st_rdev) == 3
    assert stat.S_ISBLK(st["sda"].st_mode)
    assert os.major(st["sda"].st_rdev) == 8
    assert st["file"].st_size == 46
    assert st["hardlink"].st_ino == st["file"].st_ino
    assert os.readlink(mnt / "symlink") == "file"
    assert os.readlink(mnt / "badlink") == "missing"
    assert all((s.st_uid, s.st_gid) == (319973, 5000) for s in st.values())
