#!/bin/sh
# Build the demo image demo/busybox:1 offline: a rootfs from Debian's
# busybox-static (/bin/busybox), turned into an OCI image by berth itself.
#
#   scripts/demo-image.sh BIN DATA_DIR
#
# Idempotent: the rootfs is rebuilt from scratch each time and the build is
# reproducible, so a second run yields the same digest and changes nothing.
set -eu

if [ $# -ne 2 ]; then
	echo "usage: $0 BIN DATA_DIR" >&2
	exit 2
fi
bin=$1
data=$2
busybox=${BUSYBOX:-/bin/busybox}
rootfs=build/demo-rootfs

if [ ! -x "$busybox" ]; then
	echo "$0: $busybox not found: install busybox-static" >&2
	exit 1
fi

rm -rf "$rootfs"
mkdir -p "$rootfs"
for d in bin etc tmp www proc sys dev root; do
	mkdir -m 0755 "$rootfs/$d"
done
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
chmod 0755 "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
	case $applet in
	busybox | */*) continue ;;
	esac
	ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
printf 'hello from berth\n' >"$rootfs/www/index.html"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/www/index.html"

"$bin" --data-dir "$data" image build "$rootfs" --tag demo/busybox:1 --cmd sh
