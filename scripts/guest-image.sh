#!/bin/sh
# Builds the guest that test/guest boots: Debian 12 with systemd as PID 1
# and pure cgroup v2, from Debian's archive, as a raw ext4 disk.
#
#   scripts/guest-image.sh OUTDIR
#
# Writes OUTDIR/disk.img, OUTDIR/vmlinuz and OUTDIR/initrd.img. The guest
# mounts a second disk (/dev/vdb) at /payload and runs /payload/run.sh from
# berth-guest.service with its output on the serial console; the guest
# powers off when the script ends, cleanly when it succeeds. runc and crun are there for the runtime's tests of
# its OCI executors. Needs root, debootstrap and e2fsprogs.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
out=$1
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# A dot directory: go test ./..., run meanwhile, does not walk the
# chroot (its /proc is mounted while debootstrap runs).
work=$out/.work
root=$work/root

rm -rf "$work"
mkdir -p "$work"
debootstrap --variant=minbase \
	--include=systemd,systemd-sysv,dbus,udev,kmod,linux-image-cloud-amd64,nftables,iproute2,busybox-static,procps,libseccomp2,ca-certificates,runc,crun \
	bookworm "$root" "$mirror"

echo guest >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tguest\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,noatime 0 1\n' >"$root/etc/fstab"
# The console is the test's output: no login prompt on it.
for u in serial-getty@ttyS0.service getty@tty1.service systemd-timesyncd.service apt-daily.timer \
	apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
	ln -sf /dev/null "$root/etc/systemd/system/$u"
done
cat >"$root/etc/systemd/system/berth-guest.service" <<'UNIT'
[Unit]
Description=berth guest test (runs /payload/run.sh from the second disk)
After=basic.target dbus.service
# A script that ends well leaves a clean power off to test (units stopped
# in order); one that fails, or hangs in it, is powered off by force. The
# script must not power off itself: stopping it would fail this oneshot.
SuccessAction=poweroff
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mkdir -p /payload && mount -o ro /dev/vdb /payload && exec /bin/sh /payload/run.sh'
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/berth-guest.service "$root/etc/systemd/system/multi-user.target.wants/berth-guest.service"
chroot "$root" apt-get clean
rm -rf "$root/var/lib/apt/lists"/*

cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
truncate -s 4G "$work/disk.img"
mkfs.ext4 -q -F -L berth-guest -d "$root" "$work/disk.img"
mv "$work/disk.img" "$work/vmlinuz" "$work/initrd.img" "$out/"
rm -rf "$work"
