package apiserver

import (
	"net/http"
	"net/http/pprof"
)

const pprofPrefix = "/debug/pprof/"

// routeProfiling serves Go's profiles of this server process to admins:
// CPU, heap, goroutines and the rest, as `go tool pprof` reads them. It
// is how the control plane's cost at scale is found, so it is always on,
// and behind the admin token, as a profile shows the process's memory.
func (s *Server) routeProfiling() {
	m := http.NewServeMux()
	m.HandleFunc(pprofPrefix, pprof.Index)
	m.HandleFunc(pprofPrefix+"cmdline", pprof.Cmdline)
	m.HandleFunc(pprofPrefix+"profile", pprof.Profile)
	m.HandleFunc(pprofPrefix+"symbol", pprof.Symbol)
	m.HandleFunc(pprofPrefix+"trace", pprof.Trace)
	s.Mount(pprofPrefix, AdminOnly(m))
}
