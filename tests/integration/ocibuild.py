"""A small pure-python OCI image layout writer for hostile-input tests.

Full control over every byte: layers are built from tar entries (any type,
name, linkname, mode, owner, PAX records, xattrs as SCHILY.xattr.*) or given
as raw tar / raw blob bytes; compression gzip, none or zstd (the `zstd`
CLI); config, manifest and index.json are generated with correct digests
unless a knob says otherwise.

    from ocibuild import Layer, build, reg, dir_, symlink, hardlink, wh
    img = build(tmp_path / "lay", [Layer([dir_("etc"), reg("etc/a", b"x")])])
    img.ref  -> "oci:/.../lay:t";  os.fspath(img) -> the layout path

Corruption knobs: Layer(digest=, size=, diff_id=, media_type=,
mutate=callable(blob)->blob written in place of the blob after its digest
was computed, blob= raw compressed bytes, tar= raw tar bytes), and on
build(): config_raw/manifest_raw/index_raw (raw JSON bytes, digest computed
over them), config_edit/manifest_edit/index_edit (callables editing the
dict before serialisation), config_mutate/manifest_mutate (bytes written in
place of the blob after hashing), alg ("sha256"/"sha512").

With STRATA_SAVE_LAYERS=DIR in the environment, build() also saves every
layer's tar in DIR, named by their sha256: that is how
tests/gotar/harvest.sh collects the suite's layers as seeds for the
differential test against Go's archive/tar.
"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZIP = MT_LAYER + "+gzip"
MT_LAYER_ZSTD = MT_LAYER + "+zstd"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"

MEDIA_TYPES = {"gzip": MT_LAYER_GZIP, "none": MT_LAYER, "zstd": MT_LAYER_ZSTD}
MTIME = 1_600_000_000


def digest_of(data, alg="sha256"):
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


# ---- tar entries: (TarInfo, payload bytes or None) ----

def _info(name, type_, mode, uid=0, gid=0, mtime=MTIME, xattrs=None,
          pax=None, uname="", gname=""):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = mode
    ti.uid = uid
    ti.gid = gid
    ti.uname = uname
    ti.gname = gname
    ti.mtime = mtime
    headers = dict(pax or {})
    for k, v in (xattrs or {}).items():
        headers["SCHILY.xattr." + k] = v
    ti.pax_headers = headers
    return ti


def reg(name, data=b"", mode=0o644, **kw):
    """A regular file with content @data (bytes or str)."""
    if isinstance(data, str):
        data = data.encode()
    ti = _info(name, tarfile.REGTYPE, mode, **kw)
    ti.size = len(data)
    return ti, data


def dir_(name, mode=0o755, **kw):
    return _info(name, tarfile.DIRTYPE, mode, **kw), None


def symlink(name, target, **kw):
    ti = _info(name, tarfile.SYMTYPE, kw.pop("mode", 0o777), **kw)
    ti.linkname = target
    return ti, None


def hardlink(name, target, data=None, **kw):
    """A hardlink entry; @data makes it a hardlink *with* a payload (L12)."""
    ti = _info(name, tarfile.LNKTYPE, kw.pop("mode", 0o644), **kw)
    ti.linkname = target
    if data is not None:
        ti.size = len(data)
    return ti, data


def chardev(name, major, minor, mode=0o666, **kw):
    ti = _info(name, tarfile.CHRTYPE, mode, **kw)
    ti.devmajor, ti.devminor = major, minor
    return ti, None


def blockdev(name, major, minor, mode=0o660, **kw):
    ti = _info(name, tarfile.BLKTYPE, mode, **kw)
    ti.devmajor, ti.devminor = major, minor
    return ti, None


def fifo(name, mode=0o644, **kw):
    return _info(name, tarfile.FIFOTYPE, mode, **kw), None


def typed(name, typeflag, data=b"", mode=0o644, **kw):
    """An entry with an arbitrary typeflag byte (e.g. b"7", b"Z")."""
    ti = _info(name, typeflag, mode, **kw)
    ti.size = len(data)
    return ti, data


def wh(path):
    """The whiteout entry deleting @path ("a/b" -> "a/.wh.b")."""
    head, _, base = path.rpartition("/")
    return reg((head + "/" if head else "") + ".wh." + base)


def opq(dirpath=""):
    """The opaque marker for @dirpath ("" = the root)."""
    return reg((dirpath.rstrip("/") + "/" if dirpath else "") +
               ".wh..wh..opq")


def make_tar(entries, fmt=tarfile.PAX_FORMAT, global_pax=None):
    """Serialise (TarInfo, data) pairs with tarfile, nothing normalised."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt,
                      pax_headers=global_pax or {}) as tf:
        for ti, data in entries:
            if data is not None and ti.size != len(data):
                raise ValueError(f"{ti.name}: size {ti.size} != data")
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def header_block(ti, fmt=tarfile.GNU_FORMAT):
    """Raw header block(s) of @ti, for hand-made malformed tars."""
    return ti.tobuf(fmt, tarfile.ENCODING, "surrogateescape")


def pad(data):
    return data + b"\0" * (-len(data) % 512)


def compress(data, how, level=6):
    if how == "none":
        return data
    if how == "gzip":
        return gzip.compress(data, compresslevel=level, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c", f"-{min(level, 19)}", "-"],
                              input=data, capture_output=True,
                              check=True).stdout
    raise ValueError(how)


class Layer:
    """One layer. Give @entries (list of (TarInfo, data)) or @tar (raw tar
    bytes); @blob overrides the compressed bytes entirely (then give
    @diff_id or @tar so the config can name it)."""

    def __init__(self, entries=None, tar=None, compression="gzip", blob=None,
                 media_type=None, digest=None, size=None, diff_id=None,
                 mutate=None, fmt=tarfile.PAX_FORMAT, global_pax=None,
                 level=6, annotations=None, write_blob=True):
        if tar is None and entries is not None:
            tar = make_tar(entries, fmt, global_pax)
        self.tar = tar
        self.compression = compression
        self.blob = blob if blob is not None else compress(tar, compression,
                                                           level)
        self.media_type = media_type or MEDIA_TYPES[compression]
        self.digest_override = digest
        self.size_override = size
        self.diff_id_override = diff_id
        self.mutate = mutate
        self.annotations = annotations
        self.write_blob = write_blob
        # filled in by build()
        self.digest = self.diff_id = self.size = None


class Image:
    """What build() made: os.fspath() gives the layout path."""

    def __init__(self, path, tag):
        self.path = Path(path)
        self.tag = tag
        self.layers = []
        self.config_digest = self.manifest_digest = None
        self.config = self.manifest = None

    @property
    def ref(self):
        return f"oci:{self.path}:{self.tag}" if self.tag else f"oci:{self.path}"

    def blob_path(self, digest):
        alg, hexd = digest.split(":", 1)
        return self.path / "blobs" / alg / hexd

    def __fspath__(self):
        return str(self.path)

    def __str__(self):
        return str(self.path)


def _dumps(doc):
    return json.dumps(doc, separators=(",", ":")).encode()


def _save_for_seeds(lay):
    dest = os.environ.get("STRATA_SAVE_LAYERS")
    if dest and lay.tar is not None:
        name = hashlib.sha256(lay.tar).hexdigest()[:16] + ".tar"
        Path(dest, name).write_bytes(lay.tar)


def build(path, layers, tag="t", *, alg="sha256", diff_alg=None,
          config=None, config_edit=None, config_raw=None, config_mutate=None,
          config_media_type=MT_CONFIG,
          manifest_edit=None, manifest_raw=None, manifest_mutate=None,
          manifest_media_type=MT_MANIFEST, manifest_size=None,
          index_edit=None, index_raw=None, diff_ids=None, platform=None):
    """Write an OCI layout at @path holding one image tagged @tag (None: no
    ref.name annotation) made of @layers (Layer objects); return an Image."""
    path = Path(path)
    img = Image(path, tag)
    diff_alg = diff_alg or alg
    (path / "blobs" / alg).mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(data, mutate=None):
        d = digest_of(data, alg)
        a, h = d.split(":")
        (path / "blobs" / a).mkdir(parents=True, exist_ok=True)
        (path / "blobs" / a / h).write_bytes(mutate(data) if mutate else data)
        return d

    descs = []
    for lay in layers:
        _save_for_seeds(lay)
        real = digest_of(lay.blob, alg)
        if lay.write_blob:
            put(lay.blob, lay.mutate)
        lay.digest = lay.digest_override or real
        lay.size = lay.size_override if lay.size_override is not None \
            else len(lay.blob)
        if lay.diff_id_override:
            lay.diff_id = lay.diff_id_override
        elif lay.tar is not None:
            lay.diff_id = digest_of(lay.tar, diff_alg)
        else:
            raise ValueError("a raw blob layer needs tar= or diff_id=")
        desc = {"mediaType": lay.media_type, "digest": lay.digest,
                "size": lay.size}
        if lay.annotations:
            desc["annotations"] = lay.annotations
        descs.append(desc)
        img.layers.append(lay)

    if config_raw is None:
        cfg = {"architecture": "amd64", "os": "linux",
               "config": {}, "rootfs": {"type": "layers", "diff_ids":
                                        diff_ids if diff_ids is not None
                                        else [l.diff_id for l in layers]},
               "history": [{"created_by": "ocibuild"} for _ in layers]}
        if config:
            cfg.update(config)
        if config_edit:
            config_edit(cfg)
        config_raw = _dumps(cfg)
    img.config = config_raw
    img.config_digest = put(config_raw, config_mutate)

    if manifest_raw is None:
        man = {"schemaVersion": 2, "mediaType": manifest_media_type,
               "config": {"mediaType": config_media_type,
                          "digest": img.config_digest,
                          "size": len(config_raw)},
               "layers": descs}
        if manifest_edit:
            manifest_edit(man)
        manifest_raw = _dumps(man)
    img.manifest = manifest_raw
    img.manifest_digest = put(manifest_raw, manifest_mutate)

    if index_raw is None:
        mdesc = {"mediaType": MT_MANIFEST, "digest": img.manifest_digest,
                 "size": manifest_size if manifest_size is not None
                 else len(manifest_raw)}
        if tag:
            mdesc["annotations"] = {REF_NAME: tag}
        if platform:
            mdesc["platform"] = platform
        idx = {"schemaVersion": 2, "mediaType": MT_INDEX,
               "manifests": [mdesc]}
        if index_edit:
            index_edit(idx)
        index_raw = _dumps(idx)
    (path / "index.json").write_bytes(index_raw)
    return img


def flip_byte(data, at=None):
    """Same length, one byte changed (a digest mismatch, not a size one)."""
    at = len(data) // 2 if at is None else at
    b = bytearray(data)
    b[at] ^= 0xFF
    return bytes(b)
