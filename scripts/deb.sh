#!/bin/sh
# Builds berth's Debian package with dpkg-deb: the binary, the systemd
# units (berth-up, berth-server, berth-agent and berth.slice), the default
# settings in /etc/berth/ and bash completion.
#
#   scripts/deb.sh BIN OUTDIR
#
# Prints the package's path.
set -eu

if [ $# -ne 2 ]; then
	echo "usage: $0 BIN OUTDIR" >&2
	exit 2
fi
bin=$1
out=$2
version=${BERTH_DEB_VERSION:-0~$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)}
root=$out/root

rm -rf "$root"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" "$root/etc/berth" \
	"$root/usr/share/bash-completion/completions" "$root/usr/share/doc/berth"
install -m 0755 "$bin" "$root/usr/bin/berth"
install -m 0644 packaging/systemd/berth.slice packaging/systemd/berth-up.service \
	packaging/systemd/berth-server.service packaging/systemd/berth-agent.service "$root/usr/lib/systemd/system/"
install -m 0644 packaging/etc/berth.env "$root/etc/berth/berth.env"
"$bin" completion bash >"$root/usr/share/bash-completion/completions/berth"
install -m 0644 README.md "$root/usr/share/doc/berth/README.md"
echo /etc/berth/berth.env >"$root/DEBIAN/conffiles"
size=$(du -sk "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: berth
Version: $version
Architecture: amd64
Maintainer: berth developers <berth@berth.dev>
Installed-Size: $size
Depends: libc6, libseccomp2, nftables, iproute2
Recommends: dbus
Section: admin
Priority: optional
Homepage: https://github.com/berth-dev/berth
Description: container orchestrator in one binary
 berth runs real Linux containers from OCI images, keeps services at their
 replica count and runs batch jobs, on one machine (berth up) or many
 (berth server and berth agent), with an embedded etcd.
CONTROL
cat >"$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
fi
POSTINST
cat >"$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
# Stop the services on removal; their containers keep running in
# berth.slice (systemctl stop berth.slice stops them).
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop berth-up.service berth-server.service berth-agent.service >/dev/null 2>&1 || true
fi
PRERM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"
deb=$out/berth_${version}_amd64.deb
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >/dev/null
rm -rf "$root"
echo "$deb"
