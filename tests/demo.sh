#!/bin/sh
# The main job on a built-in demo image, no network needed: build a
# two-layer busybox image with umoci (the second layer deletes files and a
# directory), mount it with stratafs, look inside, inspect it, unmount.
#   tests/demo.sh [BUILD_DIR]
set -eu
build=${1:-build}
strata="$build/tools/strata"
stratafs="$build/fs/stratafs"
work=$(mktemp -d /tmp/strata-demo.XXXXXX)
mnt="$work/mnt"
cleanup() {
	if grep -q " $mnt " /proc/self/mounts 2>/dev/null; then
		fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"
	fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

export STRATA_ROOT="$work/store"
echo "== building demo image (busybox-static, 2 layers) with umoci"
umoci init --layout "$work/layout"
umoci new --image "$work/layout:demo"
umoci unpack --rootless --image "$work/layout:demo" "$work/bundle" >/dev/null
root="$work/bundle/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/usr/share/doc/demo" "$root/tmp"
cp /usr/bin/busybox "$root/bin/busybox"
for a in sh ls cat echo; do ln -s busybox "$root/bin/$a"; done
echo "strata demo image" > "$root/etc/motd"
echo "this file is deleted by layer 2" > "$root/etc/obsolete"
echo "docs" > "$root/usr/share/doc/demo/README"
umoci repack --image "$work/layout:demo" "$work/bundle" >/dev/null
# umoci appends a layer per unpack/repack cycle: unpack again for layer 2
rm -rf "$work/bundle"
umoci unpack --rootless --image "$work/layout:demo" "$work/bundle" >/dev/null
rm "$root/etc/obsolete"
rm -r "$root/usr/share/doc"
echo "NAME=strata-demo" > "$root/etc/os-release"
umoci repack --image "$work/layout:demo" "$work/bundle" >/dev/null
umoci config --image "$work/layout:demo" --config.cmd /bin/sh \
	--config.env DEMO=1 --config.label org.example.demo=yes >/dev/null

echo "== strata import oci:$work/layout:demo demo:1.0"
"$strata" import "oci:$work/layout:demo" demo:1.0
echo "== strata images"
"$strata" images
mkdir -p "$mnt"
echo "== stratafs demo:1.0 $mnt"
"$stratafs" demo:1.0 "$mnt"
echo "== ls -la $mnt $mnt/etc"
ls -la "$mnt" "$mnt/etc"
echo "== cat $mnt/etc/motd"
cat "$mnt/etc/motd"
test ! -e "$mnt/etc/obsolete"
test ! -e "$mnt/usr/share/doc"
echo "== strata inspect demo:1.0"
"$strata" inspect demo:1.0
fusermount3 -u "$mnt"
echo "== demo done: deleted files stay deleted, the mount is gone"
