package agent

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/internal/runtime"
)

// Per-instance figures under the names cAdvisor gives them, so the
// dashboards and alerts written for those work on berth's nodes.
var (
	instLabels     = []string{"namespace", "instance", "service", "node", "container"}
	cpuDesc        = prometheus.NewDesc("container_cpu_usage_seconds_total", "CPU time the instance's container used.", instLabels, nil)
	memUsageDesc   = prometheus.NewDesc("container_memory_usage_bytes", "Memory the container's cgroup charges, page cache included.", instLabels, nil)
	memWorkingDesc = prometheus.NewDesc("container_memory_working_set_bytes", "Memory in use less the inactive page cache.", instLabels, nil)
	memLimitDesc   = prometheus.NewDesc("container_spec_memory_limit_bytes", "The container's memory limit (0: none).", instLabels, nil)
	threadsDesc    = prometheus.NewDesc("container_threads", "Tasks (processes and threads) in the container's cgroup.", instLabels, nil)
	rxBytesDesc    = prometheus.NewDesc("container_network_receive_bytes_total", "Bytes received on the container's interfaces (loopback aside).", instLabels, nil)
	txBytesDesc    = prometheus.NewDesc("container_network_transmit_bytes_total", "Bytes sent on the container's interfaces (loopback aside).", instLabels, nil)
	rxPktsDesc     = prometheus.NewDesc("container_network_receive_packets_total", "Packets received on the container's interfaces (loopback aside).", instLabels, nil)
	txPktsDesc     = prometheus.NewDesc("container_network_transmit_packets_total", "Packets sent on the container's interfaces (loopback aside).", instLabels, nil)
)

// instanceCollector reads the running instances' figures at each scrape.
type instanceCollector struct{ a *Agent }

// InstanceCollector collects the figures of the instances running on
// this node, from their cgroups and network namespaces.
func (a *Agent) InstanceCollector() prometheus.Collector { return instanceCollector{a} }

func (c instanceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cpuDesc, memUsageDesc, memWorkingDesc, memLimitDesc, threadsDesc, rxBytesDesc, txBytesDesc, rxPktsDesc, txPktsDesc} {
		ch <- d
	}
}

func (c instanceCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	all, err := c.a.cfg.Runtime.List(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(cpuDesc, err)
		return
	}
	for _, ct := range all {
		uid := ct.Labels[labelUID]
		if uid == "" || ct.State != runtime.Running {
			continue
		}
		st, err := c.a.cfg.Runtime.Stats(ctx, ct.ID)
		if err != nil {
			continue // it stopped in between
		}
		ns, name, _ := strings.Cut(ct.Labels[labelInstance], "/")
		c.a.mu.Lock()
		var owner string
		if in := c.a.desired[uid]; in != nil {
			owner = in.Owner
		}
		c.a.mu.Unlock()
		lv := []string{ns, name, owner, c.a.cfg.Node.Name, ct.ID}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
		}
		counter := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
		}
		counter(cpuDesc, float64(st.CPUNanos)/1e9)
		gauge(memUsageDesc, float64(st.MemoryUsage))
		gauge(memWorkingDesc, float64(st.MemoryBytes))
		gauge(memLimitDesc, float64(st.MemoryLimit))
		gauge(threadsDesc, float64(st.Pids))
		counter(rxBytesDesc, float64(st.RxBytes))
		counter(txBytesDesc, float64(st.TxBytes))
		counter(rxPktsDesc, float64(st.RxPackets))
		counter(txPktsDesc, float64(st.TxPackets))
	}
}
