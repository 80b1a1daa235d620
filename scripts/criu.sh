#!/usr/bin/env bash
# Builds CRIU 4.2.1 into /usr/local/sbin when no working criu of at least that version is on PATH.
# Debian 12's criu 3.17 fails `criu check` on newer kernels (rt vDSO bounds, fixed in 4.1), and
# CRIU before 4.2 cannot dump a process with an inet socket on Linux 6.16+ ("Can't get 1:16 opt":
# the kernel restricted SO_PASSCRED/SO_PASSSEC to unix and netlink sockets). No Debian release
# ships 4.2 as a binary for bookworm's libc, so the source comes from Debian's archive (unstable's
# deb-src, through a private apt config so the system's lists stay untouched), checked against the
# sum its Sources index gives, and is built with bookworm's build dependencies. Idempotent: with a
# working criu of that version it does nothing.
set -euo pipefail

version=4.2.1
# criu --version prints "Version: X.Y[.Z]"; sort -V finds the older of the two.
have="$(criu --version 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$version" "$have" | sort -V | head -1)" = "$version" ] &&
	criu check >/dev/null 2>&1; then
	exit 0
fi

sum=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
build_deps=(libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler libnl-3-dev
	libnet1-dev libcap-dev libbsd-dev libgnutls28-dev libnftables-dev pkgconf uuid-dev
	python3-protobuf xz-utils gcc make)

missing=()
for p in "${build_deps[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "criu: installing build dependencies ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work="$(mktemp -d /tmp/berth-criu.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# apt fetches as _apt, which must reach the private lists.
chmod 0755 "$work"
mkdir -p "$work/lists/partial" "$work/src"
echo "deb-src http://deb.debian.org/debian unstable main" >"$work/sources.list"
apt_opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
	-o "Dir::State::Lists=$work/lists" -o "APT::Get::List-Cleanup=0")

echo "criu: fetching CRIU $version source"
apt-get "${apt_opts[@]}" update -qq
tarball="criu_${version}.orig.tar.xz"
(cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only "criu=${version}-*" >/dev/null 2>&1 ||
	apt-get "${apt_opts[@]}" source --download-only criu >/dev/null 2>&1 || true)
if [ ! -f "$work/src/$tarball" ]; then
	echo "criu: $tarball was not fetched from Debian's archive" >&2
	exit 1
fi
if ! echo "$sum  $work/src/$tarball" | sha256sum -c --quiet -; then
	echo "criu: $tarball does not match sha256 $sum" >&2
	exit 1
fi

tar -C "$work/src" -xJf "$work/src/$tarball"
echo "criu: building CRIU $version"
make -C "$work/src/criu-$version" -j"$(nproc)" criu >"$work/build.log" 2>&1 || {
	tail -40 "$work/build.log" >&2
	exit 1
}
install -D -m 0755 "$work/src/criu-$version/criu/criu" /usr/local/sbin/criu
if ! /usr/local/sbin/criu check; then
	echo "criu: the built CRIU $version fails 'criu check' on this kernel" >&2
	exit 1
fi
echo "criu: installed CRIU $version to /usr/local/sbin/criu"
