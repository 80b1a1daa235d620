#!/usr/bin/env bash
# Starts a single-node berth cluster in the background with the demo service.
set -euo pipefail
bin="${1:-bin/berth}"
data="${2:-/var/lib/berth}"
berth() { "$bin" --data-dir "$data" "$@"; }

mkdir -p "$data"
if ! berth get nodes >/dev/null 2>&1; then
	# Its own session: closing this terminal does not stop it.
	setsid nohup "$bin" --data-dir "$data" up --verbose >"$data/berth.log" 2>&1 </dev/null &
	for _ in $(seq 1 100); do
		berth get nodes >/dev/null 2>&1 && break
		sleep 0.1
	done
	berth get nodes >/dev/null || { echo "berth did not come up; see $data/berth.log" >&2; exit 1; }
fi
berth apply -f examples/web.yaml
for _ in $(seq 1 100); do
	[ "$(berth get service web -o json | grep -o '"readyReplicas": *[0-9]*' | grep -o '[0-9]*$')" = 3 ] && break
	sleep 0.1
done
echo
berth ps
# One replica's own process, for the self-heal demonstration: its PID is
# in the instance's status (berth ps -o wide shows it too).
pid=$(berth get instances -o json | grep -o '"pid": *[0-9]*' | head -n 1 | grep -o '[0-9]*$' || true)
# Name the data dir in the hints only when it is not the default.
if [ "$data" != /var/lib/berth ]; then
	bin="$bin --data-dir $data"
fi
cat <<TXT

berth is up (log: $data/berth.log).
Stop it with: $bin down   (--purge: remove its containers, bridge and tables too)
Service "web" runs 3 replicas of busybox httpd. Try:

  $bin ps                                   # the instances
  $bin get service web -o wide
  $bin scale web=5                          # and back: $bin scale web=1
  $bin exec web wget -qO- http://127.0.0.1/ # ask one replica
  $bin exec web wget -qO- http://web.default.berth/  # ask the service, by name
  $bin logs web
  $bin ps -o wide                           # PID: each replica's own process
  kill -9 ${pid:-PID}                       # kill one replica's process;
  $bin ps                                   # ...it is back within milliseconds
  $bin describe web                         # instances, events, why not ready
  $bin apply -f examples/tests.yaml         # a job: 8 test shards, 4 at a time
  $bin get job tests
  $bin events
TXT
