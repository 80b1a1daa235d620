#!/usr/bin/env bash
# Installs what berth's build, tests and benchmarks need on Debian, only when missing.
# Idempotent: a second run installs nothing.
set -euo pipefail

# qemu-system-x86, debootstrap and e2fsprogs build and boot the guest of test/guest. redis-tools
# holds Redis's server binary (redis-check-rdb) and redis-cli, which the migration test and benchmark
# put in an image: not redis-server, whose package would start a server on the host.
want_pkgs=(gcc libc6-dev make pkg-config libseccomp-dev busybox-static runc crun iproute2 nftables procps docker-registry apache2-utils chromium
	qemu-system-x86 debootstrap debian-archive-keyring gpgv e2fsprogs redis-tools)
if [ "${1:-}" = "bench" ]; then
	want_pkgs+=(podman podman-compose skopeo docker.io)
fi

missing=()
for p in "${want_pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
	echo "deps: Go is not on PATH (expected /usr/local/go/bin)" >&2
	exit 1
fi

gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/staticcheck" ]; then
	echo "deps: installing staticcheck"
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

# Checkpoint, restore and migration need a criu that passes `criu check` on this kernel and dumps
# sockets on it: criu.sh builds one unless it is there already.
bash "$(dirname "$0")/criu.sh"
