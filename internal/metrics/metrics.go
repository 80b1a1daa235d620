// Package metrics holds berth's own Prometheus collectors, and serves
// them with the dependencies' (etcd's, Go's, the process's) at /metrics
// on servers (GET /metrics, admins only) and agents (GET
// /v1/nodes/{name}/metrics on a server, proxied over the node's tunnel).
// Every metric is listed, with its meaning, in METRICS.md beside this file.
//
// The collectors are package variables the code that measures updates;
// they are registered on first use of Registry, not at package init:
// registering costs a goroutine hand-off per collector, which CLI commands
// that never serve metrics should not pay (see internal/promdefer).
package metrics

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berth-dev/berth/internal/promdefer"
)

// Buckets for latencies from a millisecond to a minute.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Server metrics.
var (
	APIRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "berth_api_request_duration_seconds",
		Help:    "Time to answer API requests (streams count until they end), by method, route and status code.",
		Buckets: latencyBuckets,
	}, []string{"method", "route", "code"})
	APIWritePhaseDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "berth_api_write_phase_seconds",
		Help:    "Where API writes (PUT, POST, DELETE) spend their time, by caller (admin, node, other) and phase: read and write (etcd reads and write transactions), lane (waiting behind many-object transactions), server (the rest of the handler).",
		Buckets: latencyBuckets,
	}, []string{"caller", "phase"})
	APIWatches = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "berth_api_watches",
		Help: "Watch streams open now, by kind.",
	}, []string{"kind"})
	ControllerPassDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "berth_controller_pass_duration_seconds",
		Help:    "Time a controller pass (every controller over one snapshot) takes.",
		Buckets: latencyBuckets,
	})
	ControllerPasses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_controller_passes_total",
		Help: "Controller passes, by what started them (a pass started by several causes counts once under each).",
	}, []string{"cause"})
	SchedulerPlacements = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_scheduler_placements_total",
		Help: "Instances the scheduler placed (result=placed) or could not place (result=failed).",
	}, []string{"result"})
	SchedulerDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "berth_scheduler_duration_seconds",
		Help:    "Time the scheduler takes to place one batch of instances.",
		Buckets: latencyBuckets,
	})
	RemoteStreams = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_remote_operations_total",
		Help: "Instance subresource requests (logs, exec, attach, cp, portforward, stats) proxied to agents.",
	}, []string{"operation"})
)

// Agent metrics.
var (
	ContainerStartDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "berth_container_start_duration_seconds",
		Help:    "Time from an agent's decision to start a container to the container running (image, network and runtime).",
		Buckets: latencyBuckets,
	})
	ContainerStartFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_container_start_failures_total",
		Help: "Container starts that failed.",
	})
	ImagePulls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_image_pulls_total",
		Help: "Image pulls an agent made from the servers, by result (ok, failed).",
	}, []string{"result"})
	ImagePullBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_image_pull_bytes_total",
		Help: "Bytes of image layers and blobs pulled.",
	})
	ImagePullDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "berth_image_pull_duration_seconds",
		Help:    "Time an image pull takes, successful or not.",
		Buckets: latencyBuckets,
	})
)

var own = []prometheus.Collector{
	APIRequestDuration, APIWritePhaseDuration, APIWatches, ControllerPassDuration, ControllerPasses, SchedulerPlacements, SchedulerDuration, RemoteStreams,
	ContainerStartDuration, ContainerStartFailures, ImagePulls, ImagePullBytes, ImagePullDuration,
}

var (
	once sync.Once
	reg  = prometheus.NewRegistry()
)

// Registry is berth's own collectors' registry.
func Registry() *prometheus.Registry {
	once.Do(func() { reg.MustRegister(own...) })
	return reg
}

// Handler serves, in the Prometheus text format, berth's own metrics,
// those of extra (collectors of this process's role: the store's figures
// on a server, the containers' on an agent), and the dependencies'.
func Handler(extra ...prometheus.Collector) http.Handler {
	promdefer.Release()
	more := prometheus.NewRegistry()
	more.MustRegister(extra...)
	g := prometheus.Gatherers{Registry(), more, prometheus.DefaultGatherer}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
