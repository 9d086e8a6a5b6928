"""A layer tar means what Go's archive/tar (the reader behind Docker,
containerd, podman and umoci) reads in it, or it is refused naming the
entry: never a third tree.

Layers are written field by field (tarraw.py) or taken from Go's own
testdata (data/gotar/). Every expected value below is Go's reading of the
same bytes, found with a throwaway program over archive/tar (Go 1.19):
`tr.Next()` then `io.Copy(io.Discard, tr)`, printing each header or the
error; "Go: refused" means Next() returned an error for the layer."""
import os
import stat
from pathlib import Path

import pytest

from ocibuild import Layer, build
from tarraw import END, raw_header, ok_file, pad, pax_block

DATA = Path(__file__).parent / "data" / "gotar"
FIRST = ok_file("first", b"1")  # so libarchive has bid for the format


def short(layer):
    return layer.digest[:len("sha256:") + 12]


def one_layer(tmp_path, tar, name="lay"):
    return build(tmp_path / name, [Layer(tar=tar, compression="none")])


def refused(hostile, tmp_path, tar, entry):
    img = one_layer(tmp_path, tar)
    return hostile.refused(img, names=[entry, short(img.layers[0]),
                                       img.ref])


# ---- 1. the watch never stops watching ----

@pytest.mark.parametrize("case", [
    # Go: "ok", then ErrHeader (checksum); libarchive reads the
    # checksum field "NNNNNN x" up to the space
    "checksum-garbage",
    # Go: ErrHeader at the negative base-256 size
    "negative-base256-size",
    # Go: ErrFieldTooLong (a pax header over 1 MiB)
    "pax-over-1MiB",
])
def test_lost_framing_refuses_the_layer(hostile, tmp_path, case):
    """Where the watch cannot follow the framing it refuses the layer: it
    used to stop watching, and a later 'Z' entry went through as a file."""
    bad = {
        "checksum-garbage": raw_header("garbled", b"0",
                                       chksum_suffix=b"x"),
        "negative-base256-size": raw_header("garbled", b"0",
                                            size=b"\xff" * 11 + b"\xfe"),
        "pax-over-1MiB": pax_block({"path": "v" * ((1 << 20) + 10)}),
    }[case]
    tar = FIRST + bad + raw_header("later", b"Z") + END
    refused(hostile, tmp_path, tar, {"checksum-garbage": "first",
                                     "negative-base256-size": "garbled",
                                     "pax-over-1MiB": "PaxHeaders/x"}[case])


def test_all_nul_size_field_followed(hostile, tmp_path):
    """A size field of all NULs is 0 for both readers (Go: "a" size 0,
    then "later" type 'Z'); the watch reads on and refuses the 'Z'."""
    tar = FIRST + raw_header("a", b"0", size=b"\0" * 12) + \
        raw_header("later", b"Z") + END
    err = refused(hostile, tmp_path, tar, "later")
    assert "'Z'" in err


def test_header_after_end_of_archive_block_refused(hostile, tmp_path):
    """Go: "first", "a", then ErrHeader (one zero block, then a header);
    libarchive stopped at the zero block and showed "first" and "a"."""
    tar = FIRST + ok_file("a", b"a") + bytes(512) + ok_file("b", b"b") + END
    refused(hostile, tmp_path, tar, "a")


# ---- 2. numeric fields the readers parse differently ----

def test_leading_nul_size_read_as_go_or_refused(hostile, tmp_path):
    """Go skips leading NULs and reads a 512-byte file "a" and then "b";
    libarchive read size 0 and took a's data for a header ("hidden")."""
    tar = (FIRST + raw_header("a", b"0", size=b"\0\0\0" + b"0001000\0\0") +
           pad(raw_header("hidden", b"0")) + ok_file("b", b"b") + END)
    refused(hostile, tmp_path, tar, "a")


@pytest.mark.parametrize("field,value", [
    ("size", b"0000000001 x"),      # octal, then garbage after a space
    ("size", b"\t0000000001\0"),    # a tab: Go does not trim it
    ("uid", b"0001750x"),           # garbage after the digits
    ("devmajor", b"12x\0\0\0\0\0"),  # on a regular file: Go still parses it
])
def test_numeric_field_go_refuses(hostile, tmp_path, field, value):
    """Go: ErrHeader for each (strconv.ParseUint of the trimmed field);
    libarchive reads a number out of the same bytes and went on."""
    data = b"y" * 512 if field == "size" else b""   # libarchive: 1 byte
    tar = FIRST + raw_header("a", b"0", **{field: value}) + data + \
        ok_file("b", b"b") + END
    refused(hostile, tmp_path, tar, "a")


def test_numeric_fields_read_as_go(hostile, tmp_path):
    """Go's values: leading NULs skipped in uid (1000), mode (0755) and
    mtime (1000); a positive base-256 size (5) and a space-padded one (5);
    a negative base-256 mtime (-2). libarchive read 0 for the first
    three."""
    tar = (FIRST +
           raw_header("uid", b"0", uid=b"\0\0" + b"01750\0") +
           raw_header("mode", b"0", mode=b"\0\0\0" + b"0755\0") +
           raw_header("mtime", b"0", mtime=b"\0" * 6 + b"01750\0") +
           raw_header("b256", b"0", size=b"\x80" + bytes(10) + b"\x05") +
           pad(b"hello") +
           raw_header("spaces", b"0", size=b"     5     \0") + pad(b"12345") +
           raw_header("negtime", b"0", mtime=b"\xff" * 11 + b"\xfe") + END)
    img = one_layer(tmp_path, tar)
    mnt = hostile.accepted(img)
    assert os.lstat(mnt / "uid").st_uid == 1000
    assert stat.S_IMODE(os.lstat(mnt / "mode").st_mode) == 0o755
    assert os.lstat(mnt / "mtime").st_mtime == 1000
    assert (mnt / "b256").read_bytes() == b"hello"
    assert (mnt / "spaces").read_bytes() == b"12345"
    assert os.lstat(mnt / "negtime").st_mtime == -2


@pytest.mark.parametrize("name,entry", [
    ("neg-size.tar", None),                # Go: ErrHeader
    ("pax-bad-mtime-file.tar", "foo"),     # Go: ErrHeader (pax mtime)
    ("pax-nul-path.tar", None),            # Go: ErrHeader (NUL in path)
    ("invalid-go17.tar", "aaaa"),          # Go: prefix from atime/ctime
])
def test_go_testdata_refused(hostile, tmp_path, name, entry):
    """Go refuses the first three; the last Go reads with the pre-1.8
    GNU prefix ("aaa…a/foo") where libarchive reads "foo": refused."""
    img = one_layer(tmp_path, (DATA / name).read_bytes())
    hostile.refused(img, names=[short(img.layers[0])] +
                    ([entry] if entry else []))


# (Go's reading: name, size, mode, uid, gid, mtime)
GO_READS = {
    "star.tar": [("small.txt", 5, 0o640, 73025, 5000, 1244592783),
                 ("small2.txt", 11, 0o640, 73025, 5000, 1244592783)],
    "v7.tar": [("small.txt", 5, 0o444, 73025, 5000, 1244593104),
               ("small2.txt", 11, 0o444, 73025, 5000, 1244593104)],
    "ustar-file-devs.tar": [("file", 0, 0o644, 0, 0, 0)],
    "nil-uid.tar": [("P1050238.JPG.log", 14, 0o664, 0, 0, 1365454838)],
}


@pytest.mark.parametrize("name", sorted(GO_READS))
def test_go_testdata_read_as_go(hostile, tmp_path, name):
    img = one_layer(tmp_path, (DATA / name).read_bytes())
    mnt = hostile.accepted(img)
    assert sorted(os.listdir(mnt)) == sorted(e[0] for e in GO_READS[name])
    for n, size, mode, uid, gid, mtime in GO_READS[name]:
        st = os.lstat(mnt / n)
        assert stat.S_ISREG(st.st_mode)
        assert (st.st_size, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                st.st_mtime) == (size, mode, uid, gid, mtime), n


@pytest.mark.parametrize("name,link,target", [
    ("gnu-multi-hdrs.tar", "GNU2/GNU2/long-path-name",
     "GNU4/GNU4/long-linkpath-name"),
    ("pax-multi-hdrs.tar", "bar", "PAX4/PAX4/long-linkpath-name"),
])
def test_repeated_extended_headers_read_as_go(hostile, tmp_path, name, link,
                                              target):
    """Several GNU L/K or pax headers before one entry: Go takes the last
    of each."""
    mnt = hostile.accepted(one_layer(tmp_path, (DATA / name).read_bytes()))
    assert os.readlink(mnt / link) == target


# ---- 3. a GNU realsize on a plain file is not its size ----

def test_gnu_realsize_ignored_on_plain_file(hostile, tmp_path):
    """Go's testdata nil-uid.tar: a 14-byte file whose GNU realsize field
    says 2,176 (Go: size 14). strata showed 2,176 bytes, zero-filled."""
    mnt = hostile.accepted(one_layer(tmp_path,
                                     (DATA / "nil-uid.tar").read_bytes()))
    f = mnt / "P1050238.JPG.log"
    assert f.stat().st_size == 14
    assert f.read_bytes() == (DATA / "nil-uid.tar").read_bytes()[512:526]


def test_gnu_realsize_8g_ignored(hostile, tmp_path):
    """A GNU header with 5 bytes of data and realsize 8 GiB (Go: size 5,
    "hello")."""
    gnu = b"ustar  \0"
    tar = (FIRST + raw_header("f", b"0", size=b"00000000005\0", magic=gnu,
                              realsize=b"100000000000") +
           pad(b"hello") + END)
    mnt = hostile.accepted(one_layer(tmp_path, tar))
    assert (mnt / "f").stat().st_size == 5
    assert (mnt / "f").read_bytes() == b"hello"


# ---- pax sparse files: Go's map, or refused ----

def _sparse(kind, map_text=b"1\n50\n5\n", data=b"hello"):
    """A pax sparse file "s" of 100 bytes holding @data at 50, in GNU
    sparse format 1.0 (map in the data), 0.1 or 0.0 (map in records)."""
    if kind == "1.0":
        recs = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                "GNU.sparse.name": "s", "GNU.sparse.realsize": "100"}
        body = pad(map_text) + data
    elif kind == "0.1":
        recs = {"GNU.sparse.major": "0", "GNU.sparse.minor": "1",
                "GNU.sparse.name": "s", "GNU.sparse.realsize": "100",
                "GNU.sparse.numblocks": "1",
                "GNU.sparse.map": map_text.decode()}
        body = data
    else:
        off, n = map_text.decode().split(",")
        recs = {"GNU.sparse.size": "100", "GNU.sparse.numblocks": "1",
                "GNU.sparse.offset": off, "GNU.sparse.numbytes": n}
        body = data
    return (FIRST + pax_block(recs) +
            raw_header("s", b"0", size=b"%011o\0" % len(body)) + pad(body) +
            END)


@pytest.mark.parametrize("kind,map_text", [
    ("1.0", b"1\n50\n5\n"), ("0.1", b"50,5"), ("0.0", b"50,5")])
def test_pax_sparse_read_as_go(hostile, tmp_path, kind, map_text):
    """Go: "s", 100 bytes, "hello" at offset 50, zeros elsewhere."""
    mnt = hostile.accepted(one_layer(tmp_path, _sparse(kind, map_text)))
    assert (mnt / "s").read_bytes() == bytes(50) + b"hello" + bytes(45)


@pytest.mark.parametrize("kind,map_text,data", [
    ("1.0", b"1\n500\n5\n", b"hello"),   # a fragment past the size
    ("1.0", b"1\n50\n5\n", b"hel"),      # less data than the map says
    ("0.1", b"5x,5", b"hello"),          # not a number
    ("0.0", b"x,5", b"hello"),
], ids=["past-size", "short-data", "0.1-garbage", "0.0-garbage"])
def test_pax_sparse_map_go_refuses(hostile, tmp_path, kind, map_text, data):
    """Go: ErrHeader, or "sparse file references non-existent data" for
    short-data; libarchive read each (zeros, or its own guess)."""
    refused(hostile, tmp_path, _sparse(kind, map_text, data), "s")


# ---- 7. messages ----

def test_no_null_in_messages(hostile, tmp_path):
    """libarchive fails this sparse map without a message: strata said
    "corrupt tar: (null)". Go: ErrHeader ("zz" is not a number)."""
    err = refused(hostile, tmp_path, _sparse("1.0", b"zz\nqq\n"), "s")
    assert "(null)" not in err


@pytest.mark.parametrize("typeflag", [b"0", b"5"])
def test_entry_with_no_name(hostile, tmp_path, typeflag):
    """Go reads an entry named "" (type '0' or '5'); strata refuses it as
    an entry with no name. It was "entry : non-directory entry for the
    root", or the directory was taken for the root's attributes."""
    tar = FIRST + raw_header("", typeflag) + END
    err = refused(hostile, tmp_path, tar, "entry with no name")
    assert "for the root" not in err


# ---- 6. xattrs Linux can hold, as Go reads them ----

def test_xattrs_as_go_reads_them(hostile, tmp_path):
    """Go's archive/tar gives the SCHILY.xattr.* records (PAXRecords; the
    peers setxattr each): here user.ok, security.selinux, com.apple.x and
    "bare". Linux holds only the first two (setxattr(2) refuses names
    outside user., trusted., security., system.), so only they are
    shown. LIBARCHIVE.xattr.* is libarchive's own record, which Go does not
    read: not shown (strata showed com.apple.x, bare and user.lib)."""
    recs = {"SCHILY.xattr.user.ok": "yes",
            "SCHILY.xattr.security.selinux": "system_u:object_r:bin_t:s0",
            "SCHILY.xattr.com.apple.x": "mac",
            "SCHILY.xattr.bare": "none",
            "LIBARCHIVE.xattr.user.lib": "aGk=",
            "SCHILY.acl.access": "user::rwx,group::r-x,other::r-x"}
    tar = FIRST + pax_block(recs) + ok_file("f", b"f") + END
    mnt = hostile.accepted(one_layer(tmp_path, tar))
    names = set(os.listxattr(mnt / "f", follow_symlinks=False))
    assert names - {"security.selinux"} == {"user.ok"}
    assert os.getxattr(mnt / "f", "user.ok") == b"yes"


def test_go_testdata_xattrs(hostile, tmp_path):
    """Go's testdata xattrs.tar: small.txt has user.key=value,
    user.key2=value2 and a security.selinux label (Go's reading)."""
    mnt = hostile.accepted(one_layer(tmp_path,
                                     (DATA / "xattrs.tar").read_bytes()))
    f = mnt / "small.txt"
    assert os.getxattr(f, "user.key") == b"value"
    assert os.getxattr(f, "user.key2") == b"value2"
    assert {"user.key", "user.key2"} <= set(os.listxattr(f))
