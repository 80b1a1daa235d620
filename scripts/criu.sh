#!/usr/bin/env bash
# Builds CRIU 4.1.1 into /usr/local/sbin when no working criu is on PATH.
# Debian 12's criu 3.17 fails `criu check` on newer kernels (rt vDSO bounds, fixed in 4.1) and
# trixie's binary needs a newer libc, so the source comes from Debian's archive (trixie deb-src,
# through a private apt config so the system's lists stay untouched) and is built with bookworm's
# build dependencies. Idempotent: with a working criu it does nothing.
set -euo pipefail

if command -v criu >/dev/null 2>&1 && criu check >/dev/null 2>&1; then
	exit 0
fi

version=4.1.1
sum=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
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
echo "deb-src http://deb.debian.org/debian trixie main" >"$work/sources.list"
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
