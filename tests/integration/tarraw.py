"""Tar blocks written field by field, for layers two tar readers might
read differently: every numeric field is given as the raw bytes to store,
and the checksum is computed (or spoiled) on request."""

END = bytes(1024)


def pad(data):
    return data + bytes(-len(data) % 512)


def _field(value, n):
    assert len(value) == n, (value, n)
    return value


def raw_header(name, typeflag, *, size=b"00000000000\0", mode=b"0000644\0",
               uid=b"0000000\0", gid=b"0000000\0", mtime=b"00000000000\0",
               link=b"", magic=b"ustar\x0000", devmajor=b"0000000\0",
               devminor=b"0000000\0", prefix=b"", realsize=None,
               chksum_garbage=False, chksum_suffix=b""):
    """One 512-byte header. @magic is the 8 bytes at 257 (ustar: "ustar\\0"
    "00"; GNU: "ustar  \\0"); @realsize the GNU field at 483."""
    h = bytearray(512)
    name = name.encode() if isinstance(name, str) else name
    h[0:len(name)] = name
    h[100:108] = _field(mode, 8)
    h[108:116] = _field(uid, 8)
    h[116:124] = _field(gid, 8)
    h[124:136] = _field(size, 12)
    h[136:148] = _field(mtime, 12)
    h[156:157] = typeflag
    h[157:157 + len(link)] = link
    h[257:265] = _field(magic, 8)
    h[329:337] = _field(devmajor, 8)
    h[337:345] = _field(devminor, 8)
    h[345:345 + len(prefix)] = prefix
    if realsize is not None:
        h[483:495] = _field(realsize, 12)
    h[148:156] = b" " * 8
    s = sum(h) + (1 if chksum_garbage else 0)
    c = b"%06o\0 " % s
    if chksum_suffix:
        c = b"%06o" % s + b" " + chksum_suffix
    h[148:156] = _field(c, 8)
    return bytes(h)


def ok_file(name, data):
    return raw_header(name, b"0", size=b"%011o\0" % len(data)) + pad(data)


def pax_block(records, name="PaxHeaders/x", typeflag=b"x"):
    body = b""
    for k, v in records.items():
        k = k.encode() if isinstance(k, str) else k
        v = v.encode() if isinstance(v, str) else v
        n = len(k) + len(v) + 3
        ln = n + len(str(n))
        while ln != n + len(str(ln)):
            ln = n + len(str(ln))
        body += b"%d %s=%s\n" % (ln, k, v)
    return raw_header(name, typeflag, size=b"%011o\0" % len(body)) + \
        pad(body)
