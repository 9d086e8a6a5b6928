"""What a root daemon decides about an upper directory other users can
reach (stratafs(1), TRUST): it says so at mount time, copies no device node
into it, and never copies an image's security.selinux label to the host.

The attacks themselves, as uid 65534, are in test_hostile_users.py."""
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from ocibuild import Layer, blockdev, build, chardev, dir_, reg

WARNING = "can be reached by other users"


@pytest.fixture
def shared_dir():
    """A directory every user can search down to (the run's TMPDIR is
    0755 under /tmp), unlike pytest's tmp_path (under a 0700 directory)."""
    base = tempfile.mkdtemp(prefix="shared-", dir=os.environ.get("TMPDIR"))
    os.chmod(base, 0o755)
    p = Path(base)
    for d in [p, *p.parents]:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            pytest.skip(f"{d} is not searchable by others")
    yield p
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def image(tmp_path):
    return build(tmp_path / "lay", [Layer([
        dir_("dev"),
        chardev("dev/zero", 1, 5, mode=0o666),
        blockdev("dev/disk", 7, 0, mode=0o660),
        dir_("etc"),
        reg("etc/labelled", b"x\n",
            xattrs={"security.selinux": "system_u:object_r:etc_t:s0"}),
    ])])


def test_warns_when_upper_reachable(image, mount, shared_dir, tmp_path):
    r = mount(image.ref, f"upper={shared_dir}/up", check=False)
    assert r.returncode == 0, r.stderr
    assert WARNING in r.stderr and f"{shared_dir}/up" in r.stderr
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    r = mount(image.ref, f"upper={private}/up", check=False)
    assert r.returncode == 0, r.stderr
    assert WARNING not in r.stderr


def test_no_device_copied_up_where_others_reach(image, mount, shared_dir,
                                                tmp_path):
    """chmod of an image's device node copies it up: a root daemon does
    not make a device node that other users could open in the upper
    directory (EPERM), but does where only root reaches it."""
    m = mount(image.ref, f"upper={shared_dir}/up")
    for dev in ("dev/zero", "dev/disk"):
        with pytest.raises(PermissionError):
            os.chmod(m / dev, 0o600)
        assert not os.path.lexists(shared_dir / "up" / dev)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    m = mount(image.ref, f"upper={private}/up")
    os.chmod(m / "dev/zero", 0o600)
    st = os.lstat(private / "up/dev/zero")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 5)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_selinux_label_not_copied_up(image, mount, tmp_path):
    """The host labels a new upper file itself (as it does for the kernel
    overlay); the image's label stays in the image."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    m = mount(image.ref, f"upper={private}/up")
    assert os.getxattr(m / "etc/labelled", "security.selinux").rstrip(
        b"\0") == b"system_u:object_r:etc_t:s0"
    os.chmod(m / "etc/labelled", 0o600)
    up = private / "up/etc/labelled"
    assert stat.S_IMODE(os.lstat(up).st_mode) == 0o600
    with pytest.raises(OSError):
        os.getxattr(up, "security.selinux", follow_symlinks=False)
