#!/usr/bin/env bash
# Runs every benchmark and prints its figures. Benchmarks print; they never assert times.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-bin/berth}"
mkdir -p build

echo "== runtime: start-to-exit latency of /bin/true (issue: runtime and images)"
go build -trimpath -o build/bench-runtime ./bench/runtime
./build/bench-runtime -n "${BENCH_RUNS:-50}"
echo

for b in bench/*/; do
	name=$(basename "$b")
	[ "$name" = runtime ] && continue
	[ -f "$b/main.go" ] || continue
	echo "== $name"
	go build -trimpath -o "build/bench-$name" "./$b"
	"./build/bench-$name"
	echo
done
