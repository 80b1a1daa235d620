// Package promdefer holds back the Prometheus registrations that
// dependencies (etcd above all) make in their package initialisers until
// a long-running command asks for them.
//
// The default registry describes each collector on a goroutine of its
// own, and package initialisers run locked to the main thread, so every
// registration costs two thread hand-offs: a few hundred of them made up
// a quarter of a CLI command's start (berth run, berth ps), which never
// serves metrics. This package's initialiser runs after Prometheus's and
// before etcd's (initialisers go in import path order once their imports
// are done), and puts a recorder in place of the default registerer.
package promdefer

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// recorder keeps collectors until Release.
type recorder struct {
	mu      sync.Mutex
	pending []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = append(r.pending, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = append(r.pending, cs...)
}

func (r *recorder) Unregister(c prometheus.Collector) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range r.pending {
		if p == c {
			r.pending = append(r.pending[:i], r.pending[i+1:]...)
			return true
		}
	}
	return false
}

var (
	real = prometheus.DefaultRegisterer
	held = &recorder{}
	once sync.Once
)

func init() { prometheus.DefaultRegisterer = held }

// Release registers what was held with the default registry and puts the
// registry back in place; later calls do nothing. Commands that run
// servers call it first.
func Release() {
	once.Do(func() {
		held.mu.Lock()
		defer held.mu.Unlock()
		prometheus.DefaultRegisterer = real
		for _, c := range held.pending {
			// Registering one collector twice was tolerated by whoever
			// checked the error, and the recorder returned none to check.
			var dup prometheus.AlreadyRegisteredError
			if err := real.Register(c); err != nil && !errors.As(err, &dup) {
				panic(err) // what MustRegister in their initialiser would have done
			}
		}
		held.pending = nil
	})
}
