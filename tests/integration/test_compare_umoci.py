"""A mount shows exactly the rootfs `umoci unpack` produces."""
import os
import shutil

from conftest import assert_same_tree, umoci_rootfs


def busybox_layers(root):
    (root / "bin").mkdir()
    shutil.copy("/usr/bin/busybox", root / "bin/busybox")
    for a in ("sh", "ls", "cat"):
        os.symlink("busybox", root / "bin" / a)
    (root / "etc").mkdir()
    (root / "etc/motd").write_text("hello\n")
    (root / "etc/old").write_text("old\n")
    (root / "usr/share/doc/x").mkdir(parents=True)
    (root / "usr/share/doc/x/README").write_text("doc\n")
    os.link(root / "etc/motd", root / "etc/motd.link")


def delete_some(root):
    (root / "etc/old").unlink()
    shutil.rmtree(root / "usr/share/doc")
    (root / "etc/new").write_text("new\n")
    os.chmod(root / "etc/new", 0o640)
    os.chown(root / "etc/new", 12, 34)


def test_two_layers_match_umoci(umoci_image, mount, tmp_path):
    layout, tag = umoci_image([busybox_layers, delete_some])
    mnt = mount(f"oci:{layout}:{tag}")
    ref = umoci_rootfs(layout, tag, tmp_path / "unpacked")
    assert_same_tree(mnt, ref)
    assert not (mnt / "etc/old").exists()
    assert (mnt / "etc/motd").read_text() == "hello\n"
