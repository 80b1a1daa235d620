// Package initgc holds the garbage collector back while the binary's
// package initialisers run, and for the short commands that follow.
//
// Every command of the one binary runs every package's initialiser
// before main: megabytes of allocations (protobuf descriptors, regular
// expressions, registries), which at Go's default pace set off a collection before `berth exec` or `berth ps`
// has done anything. That collection, and the memory it touches, was a
// fifth of such a command's CPU time. This package's initialiser runs
// before those of the libraries (initialisers go in import path order once
// their imports are done, see internal/promdefer) and sets a slower pace,
// under which a short command never collects. Commands that run servers
// call Restore first, so a long-lived heap is collected at Go's pace. A
// GOGC given in the environment is left alone.
package initgc

import (
	"os"
	"runtime/debug"
	"sync"
)

// startPercent is the pace until Restore: the collector first runs once
// the heap is five times what it holds live (about 20 MB at the start).
const startPercent = 400

var (
	held bool
	once sync.Once
)

func init() {
	if _, ok := os.LookupEnv("GOGC"); ok {
		return
	}
	debug.SetGCPercent(startPercent)
	held = true
}

// Restore sets Go's default pace (GOGC=100) back, unless GOGC was given;
// later calls do nothing. Commands that run servers call it first.
func Restore() {
	once.Do(func() {
		if held {
			debug.SetGCPercent(100)
		}
	})
}
