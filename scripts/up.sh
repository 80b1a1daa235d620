#!/usr/bin/env bash
# Starts the demo on this machine: a busybox web server in a container.
set -euo pipefail
bin="${1:-bin/berth}"
data="${2:-/var/lib/berth}"
berth() { "$bin" --data-dir "$data" "$@"; }

berth container rm --force demo-web >/dev/null 2>&1 || true
berth container run -d --name demo-web --memory 64Mi --pids 64 demo/busybox:1 httpd -f -p 8080 -h /www >/dev/null
# The server runs in the container's own network namespace: ask from inside it.
for _ in $(seq 1 50); do
	if reply=$(berth container exec demo-web wget -qO- http://127.0.0.1:8080/ 2>/dev/null); then
		break
	fi
	sleep 0.1
done
echo "berth is running the demo container demo-web (busybox httpd on port 8080)."
echo "It answered: ${reply:-<no answer yet>}"
cat <<TXT

Try:
  $bin container ps                                  # what runs
  $bin container exec demo-web wget -qO- http://127.0.0.1:8080/
  $bin container exec -it demo-web sh                # a shell inside
  $bin container logs -f demo-web                    # its output
  $bin container run --rm demo/busybox:1 sh -c 'echo hello from \$HOSTNAME'
  $bin container run --rm --memory 16Mi demo/busybox:1 tail /dev/zero   # OOM-killed
  $bin image ls
  $bin container rm --force demo-web                 # clean up
TXT
