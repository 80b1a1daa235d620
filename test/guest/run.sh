#!/bin/sh
# Runs inside the guest that guest_test.go boots (Debian 12, systemd as
# PID 1, pure cgroup v2), from the payload disk mounted at /payload. It
# does what a user would and prints what it saw as "@@ key value" lines on
# the serial console, which the test checks; when it ends, the guest powers
# off with the containers running.
set -u
P=/payload
export BERTH_DATA_DIR=/var/lib/berth
say() { echo "@@ $*"; }
now() { date +%s%N; }
ms() { echo $((($(now) - $1) / 1000000)); }
# wait_for SECONDS CMD...: run CMD until it succeeds, or give up.
wait_for() {
	limit=$(($(date +%s) + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -ge "$limit" ] && return 1
		sleep 0.2
	done
}
# insts prints "NAME PID RESTARTS CONTAINER" of each running instance, sorted.
insts() {
	berth ps -o wide 2>/dev/null | awk 'NR==1{for(i=1;i<=NF;i++)h[$i]=i;next}
		$h["PHASE"]=="Running"{print $h["NAME"], $h["PID"], $h["RESTARTS"], $h["CONTAINER"]}' | sort
}
running() { [ "$(insts | wc -l)" -eq "$1" ]; }
ready() { berth get nodes 2>/dev/null | grep -qw Ready; }
cgfile() { cat "/sys/fs/cgroup/berth.slice/berth-$1.scope/$2" 2>/dev/null || echo missing; }

# diag WHAT: what berth and systemd saw, on the console, when a step failed.
diag() {
	say diag "$1"
	for f in /tmp/run.log /tmp/apply.log /tmp/enable.log; do
		[ -s $f ] && sed "s|^|$f: |" $f | while read -r line; do say diag_log "$line"; done
	done
	berth ps -o wide 2>&1 | while read -r line; do say diag_ps "$line"; done
	berth events 2>&1 | tail -40 | while read -r line; do say diag_event "$line"; done
	systemctl list-units --all --no-legend 'berth*' 'dbus*' | while read -r line; do say diag_unit "$line"; done
	journalctl -o short-monotonic --no-pager 2>/dev/null | grep -v 'berth-guest\|run.sh' | tail -120 |
		while read -r line; do say diag_journal "$line"; done
}

say start "$(cat /proc/uptime)"
say fs "$(stat -fc %T /sys/fs/cgroup)"
say pid1 "$(cat /proc/1/comm)"
say v1mounts "$(grep -c ' cgroup ' /proc/mounts)"

# The runtime's tests that need this host: each executor's shim in its
# scope before it forks (runc, crun too), and the cgroupfs driver on pure
# cgroup v2 (limits, adoption, a lost shim's processes reaped).
t=$(now)
(cd /tmp && $P/runtime.test -test.run '^TestGuest' -test.v -test.timeout 5m) >/tmp/rt.log 2>&1
rc=$?
say runtime_tests "$rc"
say runtime_tests_ms "$(ms "$t")"
if [ "$rc" = 0 ]; then
	grep -E '^\s*(--- |guest_test.go)' /tmp/rt.log
else
	tail -80 /tmp/rt.log
fi | while read -r line; do say rt "$line"; done

t=$(now)
dpkg -i $P/berth.deb >/tmp/dpkg.log 2>&1
say deb_install "$?"
say deb_ms "$(ms "$t")"
cd /tmp && BUSYBOX=/bin/busybox sh $P/demo-image.sh /usr/bin/berth $BERTH_DATA_DIR >/tmp/demo.log 2>&1
say demo_image "$?"

say dbus_before "$(systemctl is-active dbus.service)"
t=$(now)
systemctl enable --now berth-up >/tmp/enable.log 2>&1
say enable "$?"
wait_for 120 ready
say ready "$?"
say ready_ms "$(ms "$t")"

t=$(now)
berth run --name web --replicas 3 --cpus 0.2 --memory 64Mi --pids 64 --port 80 \
	demo/busybox:1 httpd -f -p 80 -h /www >/tmp/run.log 2>&1
say run "$?"
berth apply -f $P/pinned.yaml >/tmp/apply.log 2>&1
say apply "$?"
wait_for 120 running 4
rc=$?
say running "$rc"
say run_ms "$(ms "$t")"
[ "$rc" = 0 ] || diag "not 4 instances running"
before=$(insts)
echo "$before" | while read -r name pid restarts ctr; do
	say inst "$name $pid $restarts $ctr"
	say proc_cgroup "$ctr $(cat /proc/$pid/cgroup)"
	shim=$(ps -o ppid= -p "$pid" | tr -d ' ')
	say shim_cgroup "$ctr $(cat /proc/$shim/cgroup)"
	say cpu.max "$ctr $(cgfile "$ctr" cpu.max)"
	say memory.max "$ctr $(cgfile "$ctr" memory.max)"
	say pids.max "$ctr $(cgfile "$ctr" pids.max)"
	say cpuset.cpus "$ctr $(cgfile "$ctr" cpuset.cpus)"
	say unit "$ctr $(systemctl show -p Slice -p Delegate -p ActiveState --value "berth-$ctr.scope" | tr '\n' ' ')"
done
say service_procs "$(wc -l </sys/fs/cgroup/system.slice/berth-up.service/cgroup.procs)"
limits() { for f in /sys/fs/cgroup/berth.slice/berth-*.scope; do echo "$f $(cat $f/cpu.max $f/memory.max $f/pids.max $f/cpuset.cpus | tr '\n' ' ')"; done; }

# A restart of the service leaves the containers alone and adopts them.
# The times are systemd's (the unit's state changes); the systemctl
# command's own start-up under emulation is reported apart.
t=$(now)
systemctl restart berth-up
say restart_cmd_ms "$(ms "$t")"
usec() { systemctl show -p "$1" --value berth-up; }
stopping=$(usec ActiveExitTimestampMonotonic)
say stop_ms $((($(usec InactiveEnterTimestampMonotonic) - stopping) / 1000))
say restart_ms $((($(usec ActiveEnterTimestampMonotonic) - stopping) / 1000))
# What the stop spent its time on, should it be slow.
journalctl -u berth-up -o short-monotonic --no-pager 2>/dev/null | grep -E 'Stopp|Stopped|Started|Deactivated|Consumed' | tail -6 |
	while read -r line; do say journal "$line"; done
same() { [ "$(insts)" = "$before" ]; }
wait_for 60 same
say same_after_restart "$?"
say adopted_ms "$(ms "$t")"
after=$(insts)
say after_restart "$(echo "$after" | tr '\n' ';')"
[ "$after" = "$before" ] || diag "instances changed over a restart"

# A shim killed: no duplicate, and an event.
victim=$(echo "$after" | grep '^web-' | head -1)
vpid=$(echo "$victim" | cut -d' ' -f2)
vshim=$(ps -o ppid= -p "$vpid" | tr -d ' ')
say victim "$victim shim=$vshim"
kill -9 "$vshim"
replaced() { insts | grep -q "^$(echo "$victim" | cut -d' ' -f1) " && ! insts | grep -q " $vpid " && running 4; }
wait_for 60 replaced
say replaced "$?"
[ -e /proc/$vpid ] && [ "$(cut -d' ' -f3 /proc/$vpid/stat)" != Z ]
say old_alive "$?"
say httpd "$(pgrep -xc httpd)"
event() { berth events | grep ShimLostKilled; }
wait_for 20 event
say event "$(event | tr -s ' ' | head -1)"

# daemon-reload leaves every scope's limits as they were.
lim2=$(limits)
systemctl daemon-reload
lim3=$(limits)
[ "$lim2" = "$lim3" ]
say limits_same_after_reload "$?"
say limits "$(echo "$lim3" | tr '\n' ';')"

# A service with no ports: berth warns that its VIP and name will not answer.
berth run --name noports --replicas 0 demo/busybox:1 sleep 1 >/tmp/noports.log 2>&1
say noports_run "$?"
say noports_warning "$(grep -m1 '^warning:' /tmp/noports.log)"
berth rm noports >/dev/null 2>&1

say scopes "$(systemctl list-units --no-legend 'berth-*.scope' | wc -l)"
# The unit powers the guest off once this script has ended well
# (SuccessAction=poweroff), with the containers running.
say poweroff "$(cat /proc/uptime)"
exit 0
