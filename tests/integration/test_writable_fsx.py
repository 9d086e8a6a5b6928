"""fsx-style random read/write/truncate/mmap on a file that starts in a
lower layer, its content checked against an in-memory model after every
step (issue 3).  Runs on the implementation under test ($STRATA_WR_IMPL,
lowerdir= form) and, as a control for the test itself, on the kernel
overlay.  Replay: STRATA_WR_FSX_SEED=N STRATA_WR_FSX_OPS=M."""
import mmap
import os
import random

import pytest

import overlaydiff as od

SEEDS = [int(x) for x in os.environ.get("STRATA_WR_FSX_SEED",
                                        "11,12,13").split(",")]
NOPS = int(os.environ.get("STRATA_WR_FSX_OPS", "1500"))
MAXLEN = 1 << 20
INITIAL = 300_007


def _mount(kind, tmp_path, ovl_mounts):
    low = tmp_path / "low"
    low.mkdir()
    (low / "f").write_bytes(od.pattern(INITIAL, "fsx"))
    for d in ("upper", "work", "mnt"):
        (tmp_path / d).mkdir()
    args = ([low], tmp_path / "upper", tmp_path / "work", tmp_path / "mnt")
    if kind == "kernel":
        return ovl_mounts.kernel(*args)
    return ovl_mounts.impl(*args)


def _check(fd, model, step, log):
    got = os.pread(fd, len(model) + 4096, 0)
    if got != bytes(model):
        n = next((i for i in range(min(len(got), len(model)))
                  if got[i] != model[i]), min(len(got), len(model)))
        raise AssertionError(
            f"content differs at byte {n} (file {len(got)} bytes, model "
            f"{len(model)}) after step {step}; last ops:\n  " +
            "\n  ".join(log[-15:]))
    assert os.fstat(fd).st_size == len(model), f"size after step {step}"


@pytest.mark.parametrize("kind", ["impl", "kernel"])
@pytest.mark.parametrize("seed", SEEDS)
def test_fsx(kind, seed, tmp_path, ovl_mounts):
    mnt = _mount(kind, tmp_path, ovl_mounts)
    path = mnt / "f"
    model = bytearray(od.pattern(INITIAL, "fsx"))
    rng = random.Random(seed)
    ino = os.stat(path).st_ino
    fd = os.open(path, os.O_RDWR)
    ck = os.open(path, os.O_RDONLY)    # a second, independent reader
    log = [f"seed {seed} on {kind} ({od.IMPL})"]
    try:
        for step in range(NOPS):
            op = rng.choices(["read", "write", "mapwrite", "mapread",
                              "truncate", "fallocate", "reopen"],
                             [4, 6, 3, 2, 2, 1, 1])[0]
            off = rng.randrange(MAXLEN)
            n = rng.choice((1, 7, 512, 4096, 5000, 65536, 100000))
            if op == "read":
                log.append(f"{step} read {off}+{n}")
                assert os.pread(fd, n, off) == bytes(model[off:off + n]), \
                    f"read {off}+{n} differs at step {step}"
            elif op == "write":
                data = od.pattern(n, f"{seed}:{step}")
                log.append(f"{step} write {off}+{n}")
                assert os.pwrite(fd, data, off) == n
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off:off + n] = data
            elif op in ("mapwrite", "mapread"):
                if not model:
                    continue
                off = rng.randrange(len(model))
                n = min(n, len(model) - off)
                log.append(f"{step} {op} {off}+{n} (size {len(model)})")
                m = mmap.mmap(fd, len(model), mmap.MAP_SHARED)
                try:
                    if op == "mapwrite":
                        data = od.pattern(n, f"m{seed}:{step}")
                        m[off:off + n] = data
                        model[off:off + n] = data
                        if rng.random() < 0.5:
                            m.flush()
                    else:
                        assert m[off:off + n] == bytes(model[off:off + n])
                finally:
                    m.close()
            elif op == "truncate":
                size = rng.choice((0, off, off // 64, len(model) + 1,
                                   max(0, len(model) - 1)))
                log.append(f"{step} truncate {size}")
                os.ftruncate(fd, size)
                del model[size:]
                model.extend(bytes(size - len(model)))
            elif op == "fallocate":
                log.append(f"{step} fallocate {off}+{n}")
                os.posix_fallocate(fd, off, n)
                if off + n > len(model):
                    model.extend(bytes(off + n - len(model)))
            elif op == "reopen":
                log.append(f"{step} reopen")
                os.close(fd)
                fd = os.open(path, os.O_RDWR)
            _check(ck, model, step, log)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.close(ck)
    assert os.stat(path).st_ino == ino, "st_ino changed across copy-up"
    with open(path, "rb") as f:
        assert f.read() == bytes(model)
    # the upper file holds it after unmount
    ovl_mounts.umount(mnt)
    assert (tmp_path / "upper/f").read_bytes() == bytes(model)
