"""Access points into gzip and zstd blobs (store/layer/zran.c), against the tools.

Blobs are made by the gzip and zstd command-line tools from a tar of
varied content (GNU tar), indexed by strata (tests/tools/zrantool.c), and
ranges read through the access points are compared with the same ranges of
what `gzip -dc` / `zstd -dc` write, and whole files with what Python's
tarfile reads from that stream.
"""
import hashlib
import io
import json
import random
import subprocess
import tarfile

import pytest

from conftest import BUILD, run

ZRANTOOL = BUILD / "tests" / "zrantool"
SPAN = 65536


def sh(cmd, cwd):
    subprocess.run(cmd, shell=True, check=True, cwd=cwd)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """{name: (blob path, uncompressed bytes as the tool decompresses them)}"""
    d = tmp_path_factory.mktemp("zran")
    src = d / "src"
    src.mkdir()
    rnd = random.Random(7)
    words = [b"layer ", b"access ", b"point\n", b"window ", b"strata "]
    for i in range(60):
        size = rnd.choice([0, 10, 700, 5000, 40000, 150000])
        data = b"".join(rnd.choice(words) if rnd.random() > 0.05
                        else rnd.randbytes(50) for _ in range(size // 6))
        (src / f"f{i:02d}").write_bytes(data[:size])
    sh("tar --sort=name -cf layer.tar -C src .", d)
    sh("head -c 500000 layer.tar > part1 && tail -c +500001 layer.tar > part2",
       d)
    recipes = {
        "gzip -6": "gzip -6 -n -c layer.tar > b",
        "gzip -1": "gzip -1 -n -c layer.tar > b",
        "gzip -9, two members": "gzip -9 -c part1 > b && gzip -c part2 >> b",
        "zstd one frame": "zstd -q -3 -c layer.tar > b",
        "zstd two frames": "zstd -q -c part1 > b && zstd -q -19 -c part2 >> b",
    }
    out = {}
    for i, (name, cmd) in enumerate(recipes.items()):
        sh(cmd, d)
        blob = d / f"blob{i}"
        (d / "b").rename(blob)
        dec = "gzip -dc" if name.startswith("gzip") else "zstd -q -dc"
        stream = subprocess.run(f"{dec} {blob}", shell=True, check=True,
                                capture_output=True).stdout
        out[name] = (blob, stream)
    return out


def index(blob, span, tmp):
    idx = tmp / (blob.name + f".{span}.zran")
    run([ZRANTOOL, "index", blob, span, "deflated", idx])
    return idx


def read(blob, idx, ranges):
    r = run([ZRANTOOL, "read", blob, idx],
            input="".join(f"{o} {n}\n" for o, n in ranges))
    return [line.split()[2] for line in r.stdout.splitlines()]


@pytest.mark.parametrize("name", ["gzip -6", "gzip -1", "gzip -9, two members",
                                  "zstd one frame", "zstd two frames"])
def test_ranges_equal_the_tools_output(blobs, name, tmp_path):
    blob, stream = blobs[name]
    n = len(stream)
    rnd = random.Random(n)
    ranges = [(0, n), (n - 1, 1), (0, 0)] + \
        [(o, rnd.randrange(0, min(70000, n - o)))
         for o in (rnd.randrange(n) for _ in range(25))]
    idx = index(blob, SPAN, tmp_path)
    got = read(blob, idx, ranges)
    want = [hashlib.sha256(stream[o:o + k]).hexdigest() for o, k in ranges]
    assert got == want


def test_files_equal_tarfile(blobs, tmp_path):
    """Each file of the tar, read at its offset through the points, is
    what Python's tarfile reads from the gzip tool's stream."""
    blob, stream = blobs["gzip -9, two members"]
    idx = index(blob, SPAN, tmp_path)
    with tarfile.open(fileobj=io.BytesIO(stream)) as tf:
        files = [(m.offset_data, m.size, tf.extractfile(m).read())
                 for m in tf if m.isreg()]
    got = read(blob, idx, [(o, k) for o, k, _ in files])
    assert got == [hashlib.sha256(d).hexdigest() for _, _, d in files]
    assert len(files) == 60


def test_beyond_the_end_refused(blobs, tmp_path):
    blob, stream = blobs["gzip -6"]
    idx = index(blob, SPAN, tmp_path)
    r = run([ZRANTOOL, "read", blob, idx], check=False,
            input=f"{len(stream)} 1\n")
    assert r.returncode == 1 and "Invalid argument" in r.stderr


def test_damaged_index_refused(blobs, tmp_path):
    blob, _ = blobs["gzip -6"]
    idx = index(blob, SPAN, tmp_path)
    data = bytearray(idx.read_bytes())
    data[300] ^= 1
    idx.write_bytes(bytes(data))
    r = run([ZRANTOOL, "read", blob, idx], check=False, input="0 1\n")
    assert r.returncode == 1 and "checksum mismatch" in r.stderr
    idx.write_bytes(bytes(data[:100]))
    r = run([ZRANTOOL, "read", blob, idx], check=False, input="0 1\n")
    assert r.returncode == 1 and "not a strata access point index" in r.stderr


@pytest.mark.parametrize("name", ["gzip -6", "gzip -1",
                                  "gzip -9, two members"])
def test_pass_points_equal_the_tools_output(blobs, name, tmp_path):
    """The points the metadata pass records with its own decoder
    (gzdec.c: ISA-L, which stops at block boundaries only when its input
    runs out inside a block header, searched for by halving an input
    slice) at a span of 64 KiB: ranges read through them are what
    `gzip -dc` writes, and a point is found near each span, not a block
    or more later: about as many points as zlib's index (inflate() with
    Z_BLOCK stops at every block boundary) records at the same span."""
    blob, stream = blobs[name]
    n = len(stream)
    idx = tmp_path / "pass.zran"
    out = run([ZRANTOOL, "unpack", blob,
               "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest(),
               "sha256:" + hashlib.sha256(stream).hexdigest(), "gzip",
               SPAN, tmp_path / "dir", idx])
    points = json.loads(out.stdout)["points"]
    every = json.loads(run([ZRANTOOL, "index", blob, SPAN, "deflated",
                            tmp_path / "zlib.zran"]).stdout)["points"]
    assert every >= 10 and points >= every * 3 // 4, (points, every)
    rnd = random.Random(n + 1)
    ranges = [(0, n), (n - 1, 1)] + \
        [(o, rnd.randrange(0, min(70000, n - o)))
         for o in (rnd.randrange(n) for _ in range(40))]
    got = read(blob, idx, ranges)
    want = [hashlib.sha256(stream[o:o + k]).hexdigest() for o, k in ranges]
    assert got == want
