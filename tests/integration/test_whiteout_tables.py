"""OCI-RULES §2.7 scenario tables, transcribed: each layer sequence is
built with ocibuild, mounted, and the visible tree compared with the table
(and with `umoci unpack` of the same layout)."""
import os
import stat

import pytest

from conftest import assert_same_as_umoci
from ocibuild import Layer, build, reg, dir_, symlink, fifo


def entries_from(names):
    """moby-style lists: `x/` is a directory, anything else a file whose
    content is its own name."""
    out = []
    for n in names:
        if n.endswith("/"):
            out.append(dir_(n.rstrip("/")))
        else:
            out.append(reg(n, n))
    return out


def visible(mnt):
    """The view as a moby-style sorted list (`x/` for directories)."""
    out = []
    for d, dirs, files in os.walk(mnt):
        rel = os.path.relpath(d, mnt)
        for n in dirs:
            out.append(os.path.normpath(os.path.join(rel, n)) + "/")
        for n in files:
            out.append(os.path.normpath(os.path.join(rel, n)))
    return sorted(out)


# ---- moby go-archive diff_test.go TestApplyLayerWhiteouts ----

MOBY_LAYERS = [
    (["\u002ebaz", "bar/", "bar/bax", "bar/bay/", "baz", "foo/", "foo/.abc",
      "foo/.bcd/", "foo/.bcd/a", "foo/cde/", "foo/cde/def", "foo/cde/efg",
      "foo/fgh", "foobar"],
     [".baz", "bar/", "bar/bax", "bar/bay/", "baz", "foo/", "foo/.abc",
      "foo/.bcd/", "foo/.bcd/a", "foo/cde/", "foo/cde/def", "foo/cde/efg",
      "foo/fgh", "foobar"]),
    ([".bay", ".wh.baz", "foo/", "foo/.bce", "foo/.wh..wh..opq", "foo/cde/",
      "foo/cde/efg"],
     [".bay", ".baz", "bar/", "bar/bax", "bar/bay/", "foo/", "foo/.bce",
      "foo/cde/", "foo/cde/efg", "foobar"]),
    ([".bay", ".wh..baz", ".wh.foobar", "foo/", "foo/.abc", "foo/.wh.cde",
      "bar/"],
     [".bay", "bar/", "bar/bax", "bar/bay/", "foo/", "foo/.abc", "foo/.bce"]),
    ([".abc", ".wh..wh..opq", "foobar"],
     [".abc", "foobar"]),
]


@pytest.mark.parametrize("upto", [1, 2, 3, 4])
def test_moby_apply_layer_whiteouts(hostile, tmp_path, upto):
    layers = [Layer(entries_from(names)) for names, _ in MOBY_LAYERS[:upto]]
    img = build(tmp_path / "lay", layers)
    mnt = hostile.accepted(img)
    assert visible(mnt) == MOBY_LAYERS[upto - 1][1]
    # files of layer 3 shadow layer 2's `.bay`
    if upto == 3:
        assert (mnt / ".bay").read_text() == ".bay"
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


# ---- go-containerregistry mutate_test.go ----

@pytest.mark.parametrize("marker_first", [True, False])
def test_ggcr_extract_opaque_whiteout(hostile, tmp_path, marker_first):
    upper = [dir_("d"), reg("d/c.txt", "c")]
    upper = ([reg("d/.wh..wh..opq")] + upper) if marker_first else \
        (upper + [reg("d/.wh..wh..opq")])
    img = build(tmp_path / "lay", [
        Layer([dir_("d"), reg("d/a.txt", "a"), reg("d/b.txt", "b")]),
        Layer(upper)])
    mnt = hostile.accepted(img)
    assert visible(mnt) == ["d/", "d/c.txt"]
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_ggcr_extract_whiteout_dir(hostile, tmp_path):
    """W9: `.wh.d`, then `d/x` in a higher layer: d holds only x."""
    img = build(tmp_path / "lay", [
        Layer([dir_("d"), reg("d/a", "a"), dir_("d/sub"), reg("d/sub/b", "b")]),
        Layer([reg(".wh.d")]),
        Layer([dir_("d"), reg("d/x", "x")])])
    mnt = hostile.accepted(img)
    assert visible(mnt) == ["d/", "d/x"]
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


def test_ggcr_whiteout_dir_then_implied_recreate(hostile, tmp_path):
    """As above with no `d/` entry in the top layer (implied parent)."""
    img = build(tmp_path / "lay", [
        Layer([dir_("d"), reg("d/a", "a")]), Layer([reg(".wh.d")]),
        Layer([reg("d/x", "x")])])
    mnt = hostile.accepted(img)
    assert visible(mnt) == ["d/", "d/x"]


# ---- layer.md "Opaque whiteout" example ----

@pytest.mark.parametrize("marker_first", [True, False])
def test_layer_md_opaque_example(hostile, tmp_path, marker_first):
    body = [dir_("a"), dir_("a/b"), dir_("a/b/c"), reg("a/b/c/foo", "foo")]
    marker = [reg("a/.wh..wh..opq")]
    img = build(tmp_path / "lay", [
        Layer([dir_("a"), dir_("a/b"), dir_("a/b/c"), reg("a/b/c/bar", "bar"),
               reg("a/other", "o")]),
        Layer(marker + body if marker_first else body + marker)])
    mnt = hostile.accepted(img)
    assert visible(mnt) == ["a/", "a/b/", "a/b/c/", "a/b/c/foo"]
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")


# ---- umoci oci/layer tar_extract_test.go TestUnpackOpaqueWhiteout ----
# (path, linkname, type, upper): the lower layer holds every entry with
# upper=False, the upper layer an opaque marker at the root followed by the
# upper=True entries in order; exactly the upper (non-whiteout) entries
# survive. With ignore_exist, lower ancestors of upper entries may exist.

SHADOW = "../" * 29 + "etc/shadow"
REG, DIR, SYM, FIFO = "reg", "dir", "sym", "fifo"
WH = ".wh."

UMOCI_CASES = {
    "EmptyRootDir": (False, []),
    "RootDirFiles": (False, [
        ("file1", "", REG, False), ("file2", "", REG, False),
        ("symlink", "file1", SYM, False),
        ("symlink2", "/non-existent", SYM, False),
        ("symlink3", SHADOW, SYM, False)]),
    "OneLevel": (False, [
        ("file", "", REG, False), ("link", "..", SYM, True),
        ("badlink", "./nothing", SYM, True), ("fifo", "", FIFO, False)]),
    "OneLevelNoUpper": (False, [
        ("file", "", REG, False), ("link", "..", SYM, False),
        ("badlink", "./nothing", SYM, False), ("fifo", "", FIFO, False)]),
    "TwoLevel": (False, [
        ("file", "", REG, True), ("link", "..", SYM, False),
        ("badlink", "./nothing", SYM, False), ("dir", "", DIR, True),
        ("dir/file", "", REG, True), ("dir/symlink", SHADOW, SYM, False),
        ("dir/verybadlink", SHADOW, SYM, True)]),
    "MultiLevel": (False, [
        ("level1_file", "", REG, True), ("level1_link", "..", SYM, False),
        ("level1a", "", DIR, True),
        ("level1a/level2_file", "", REG, False),
        ("level1a/level2_link", "../../../", SYM, True),
        ("level1a/level2a", "", DIR, False),
        ("level1a/level2a/level3_fileA", "", REG, False),
        ("level1a/level2a/level3_fileB", "", REG, False),
        ("level1a/level2b", "", DIR, True),
        ("level1a/level2b/level3_fileA", "", REG, True),
        ("level1a/level2b/level3_fileB", "", REG, False),
        ("level1a/level2b/level3", "", DIR, False),
        ("level1a/level2b/level3/level4", "", DIR, False),
        ("level1a/level2b/level3/level4", "", DIR, False),
        ("level1a/level2b/level3_fileA", "", REG, True),
        ("level1b", "", DIR, False),
        ("level1b/level2_fileA", "", REG, False),
        ("level1b/level2_fileB", "", REG, False),
        ("level1b/level2", "", DIR, False),
        ("level1b/level2/level3_file", "", REG, False)]),
    "MissingUpperAncestor": (True, [
        ("some", "", DIR, False), ("some/dir", "", DIR, False),
        ("some/dir/somewhere", "", REG, True), ("another", "", DIR, True),
        ("another/dir", "", DIR, False),
        ("another/dir/somewhere", "", REG, False)]),
    "UpperWhiteout": (False, [
        (WH + "fileB", "", REG, True), ("fileA", "", REG, True),
        ("fileB", "", REG, True), ("fileC", "", REG, False),
        (WH + "fileA", "", REG, True), (WH + "fileC", "", REG, True)]),
    "UpperDirWhiteout": (False, [
        (WH + "dir2", "", REG, True), ("dir1", "", DIR, True),
        ("dir1/file", "", REG, True),
        ("dir1/link", "../" * 10, SYM, True), ("dir2", "", DIR, True),
        ("dir2/file", "", REG, True),
        ("dir2/link", "../" * 10, SYM, True), ("dir3", "", DIR, True),
        ("dir3/file", "", REG, False),
        ("dir3/link", "../" * 10, SYM, False),
        (WH + "dir3", "", REG, True)]),
}


def _entry(path, link, kind):
    if kind == REG:
        return reg(path, path)
    if kind == DIR:
        return dir_(path)
    if kind == SYM:
        return symlink(path, link)
    return fifo(path)


@pytest.mark.parametrize("case", sorted(UMOCI_CASES))
def test_umoci_unpack_opaque_whiteout(hostile, tmp_path, case):
    ignore_exist, hdrs = UMOCI_CASES[case]
    lower = [_entry(p, l, k) for p, l, k, up in hdrs if not up]
    upper = [reg(".wh..wh..opq")] + [_entry(p, l, k)
                                     for p, l, k, up in hdrs if up]
    img = build(tmp_path / "lay", [Layer([reg("base", "b")] + lower),
                                   Layer(upper)])
    mnt = hostile.accepted(img)
    survivors = {p for p, _, _, up in hdrs
                 if up and not os.path.basename(p).startswith(WH)}
    ancestors = set()
    for p in survivors:
        while "/" in p:
            p = p.rsplit("/", 1)[0]
            ancestors.add(p)
    for p, link, kind, up in hdrs:
        if os.path.basename(p).startswith(WH):
            assert not os.path.lexists(mnt / p), p
            continue
        if p in survivors:
            st = os.lstat(mnt / p)
            want = {REG: stat.S_ISREG, DIR: stat.S_ISDIR, SYM: stat.S_ISLNK,
                    FIFO: stat.S_ISFIFO}[kind]
            assert want(st.st_mode), p
            if kind == SYM:
                assert os.readlink(mnt / p) == link
            elif kind == REG:
                assert (mnt / p).read_text() == p
        elif ignore_exist and p in ancestors:
            continue
        else:
            assert not os.path.lexists(mnt / p), f"{p} survived the opaque"
    assert not os.path.lexists(mnt / "base")
    names = visible(mnt)
    assert not any(os.path.basename(n.rstrip("/")).startswith(WH)
                   for n in names), names
    assert_same_as_umoci(mnt, img.path, img.tag, tmp_path / "umoci")
