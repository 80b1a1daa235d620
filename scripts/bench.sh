#!/usr/bin/env bash
# Runs every benchmark and prints its figures. Benchmarks print; they never assert times.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${1:-bin/berth}")"
mkdir -p build

run() {
	local name=$1
	shift
	echo "== $name"
	go build -trimpath -o "build/bench-$name" "./bench/$name"
	"./build/bench-$name" "$@"
	echo
}

run runtime -n "${BENCH_RUNS:-50}"     # container start-to-exit beside runc and crun
run cluster -berth "$bin"              # berth run / self-heal / RSS beside podman
run scheduler                          # placements at 10,000 and 15,000 nodes
run network                            # nftables data plane at 250,000 endpoints
run multinode -berth "$bin"             # 3 servers + 3 agents on network namespaces: scale to 30, node loss
run remote -berth "$bin" -n "${BENCH_EXEC_RUNS:-100}" # exec local/remote beside podman exec; logs -f throughput
run idle -berth "$bin"                  # idle CPU of berth up with 200 instances beside Docker Swarm's daemons
run pull -berth "$bin"                  # image pull from a loopback registry beside podman and skopeo
run scale -berth "$bin" $([ -n "${BENCH_SCALE_FULL:-}" ] && echo -full) # hollow nodes: apply to Running, 1% node loss, rollout, scale 0 -> N -> 0 (BENCH_SCALE_FULL=1: 15,000 nodes, 300,000 instances)
run compose -berth "$bin"               # berth compose up -d of 5 services to healthy beside podman-compose up -d
run checkpoint -berth "$bin"            # checkpoint --export + restore --import downtime beside podman
run migrate -berth "$bin"               # live migration between 2 agents: busybox counter, 100 MB Redis GET through its VIP; podman export/import beside
run migrate -berth "$bin" -only redis -post-copy # the same Redis moved with berth migrate --post-copy (its memory follows the restore)
run dashboard                          # the web dashboard in Chromium at 1,000 instances: change-to-DOM, page weight, first paint
