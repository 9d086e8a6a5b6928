"""strata commit MOUNTPOINT DEST and --continue on a live writable mount:
the results checked with umoci unpack, not with strata itself."""
import os
import shutil

from conftest import assert_same_tree, run, umoci_rootfs


def base(root):
    (root / "etc").mkdir()
    (root / "etc/motd").write_text("hello\n")
    (root / "etc/old").write_text("old\n")
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "usr/share/doc/README").write_text("doc\n")


def test_commit_live_mount_matches_umoci(umoci_image, mount, strata,
                                         tmp_path):
    layout, tag = umoci_image([base])
    mnt = mount(f"oci:{layout}:{tag}", opts=f"upper={tmp_path}/up")
    (mnt / "etc/new").write_text("new\n")
    (mnt / "etc/old").unlink()
    shutil.rmtree(mnt / "usr/share/doc")
    os.chmod(mnt / "etc/motd", 0o600)
    strata("commit", "-m", "live", str(mnt), ":live")
    ref = umoci_rootfs(layout, "live", tmp_path / "u1")
    assert_same_tree(mnt, ref, ignore=("/",))
    assert not (ref / "etc/old").exists()
    assert (ref / "etc/new").read_text() == "new\n"


def test_commit_continue_twice(umoci_image, mount, strata, tmp_path):
    layout, tag = umoci_image([base])
    up = tmp_path / "up"
    mnt = mount(f"oci:{layout}:{tag}", opts=f"upper={up}")
    (mnt / "etc/one").write_text("one\n")
    log = open(mnt / "etc/log", "a")
    log.write("line1\n")
    log.flush()
    # held open: the inode number stays for as long as the kernel keeps
    # the inode (drop_caches elsewhere, e.g. test_store_lifecycle on the
    # other xdist worker, would make a file nobody holds be looked up
    # afresh, as a file of the committed layer with that layer's number)
    held = open(mnt / "etc/one")
    ino = os.stat(mnt / "etc/one").st_ino
    strata("commit", "--continue", str(mnt), ":c1")
    # the upper directory is empty, the view is unchanged
    assert os.listdir(up) == []
    assert (mnt / "etc/one").read_text() == "one\n"
    assert os.stat(mnt / "etc/one").st_ino == ino
    assert os.fstat(held.fileno()).st_ino == ino
    held.close()
    # an open file goes on being written, a deletion is a new change
    log.write("line2\n")
    log.flush()
    (mnt / "etc/one").unlink()
    (mnt / "two").write_text("two\n")
    strata("commit", "--continue", str(mnt), ":c2")
    log.close()
    assert os.listdir(up) == []
    c1 = umoci_rootfs(layout, "c1", tmp_path / "c1")
    assert (c1 / "etc/one").read_text() == "one\n"
    assert (c1 / "etc/log").read_text() == "line1\n"
    c2 = umoci_rootfs(layout, "c2", tmp_path / "c2")
    assert not (c2 / "etc/one").exists()
    assert (c2 / "etc/log").read_text() == "line1\nline2\n"
    assert (c2 / "two").read_text() == "two\n"
    assert_same_tree(mnt, c2, ignore=("/",))
    # history: base layer + two commits
    out = run(["skopeo", "inspect", "--config", f"oci:{layout}:c2"]).stdout
    assert out.count('"created_by"') >= 3


def test_commit_needs_a_stratafs_mount(strata, tmp_path):
    r = strata("commit", str(tmp_path), ":x", check=False)
    assert r.returncode != 0
    assert "not a writable stratafs mount" in r.stderr


def test_continue_needs_a_mountpoint(strata, tmp_path):
    r = strata("commit", "--continue", "--upper", str(tmp_path), "--from",
               "x:1", ":y", check=False)
    assert r.returncode == 2
    assert "--continue needs a mountpoint" in r.stderr
