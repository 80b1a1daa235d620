package apiserver

import (
	"testing"
	"time"
)

// A port-forward is recorded once per session: the connections it makes
// while one is open, or within forwardIdle of the last, are counted, not
// recorded; a session that goes on is recorded again with its count every
// forwardRefresh; another caller, instance or port is another session.
func TestForwardSessions(t *testing.T) {
	var f forwardSessions
	t0 := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	web := forwardKey{who: "admin from 127.0.0.1", uid: "u1", port: "80"}
	conn := func(k forwardKey, at time.Time, wantRecord bool, wantN int) func(time.Time) {
		t.Helper()
		record, n, _, done := f.begin(k, at)
		if record != wantRecord || n != wantN {
			t.Fatalf("connection to %v at +%v: record %v with count %d, want %v with %d", k, at.Sub(t0), record, n, wantRecord, wantN)
		}
		return done
	}
	end := conn(web, t0, true, 0)
	// Concurrent and close behind: one session.
	conn(web, t0.Add(time.Second), false, 0)(t0.Add(2 * time.Second))
	end(t0.Add(3 * time.Second))
	for i := range 100 {
		conn(web, t0.Add(3*time.Second+time.Duration(i)*time.Millisecond), false, 0)(t0.Add(4 * time.Second))
	}
	// Another port, instance or caller: sessions of their own.
	other := web
	other.port = "443"
	conn(other, t0.Add(5*time.Second), true, 0)(t0.Add(5 * time.Second))
	other = web
	other.uid = "u2"
	conn(other, t0.Add(5*time.Second), true, 0)(t0.Add(5 * time.Second))
	other = web
	other.who = "admin from 10.0.0.9"
	conn(other, t0.Add(5*time.Second), true, 0)(t0.Add(5 * time.Second))
	// Idle for forwardIdle: the session ended; the next connection starts one.
	at := t0.Add(4*time.Second + forwardIdle)
	conn(web, at, true, 0)(at)
	// Busy for longer than forwardRefresh: recorded again, with the count.
	var i int
	for at2 := at.Add(time.Second); at2.Sub(at) < forwardRefresh; at2 = at2.Add(30 * time.Second) {
		conn(web, at2, false, 0)(at2)
		i++
	}
	_, n, last, done := f.begin(web, at.Add(forwardRefresh))
	if n != i+1 || !last.Equal(at) {
		t.Fatalf("a session busy for %v: recorded again with count %d since %v, want %d since %v", forwardRefresh, n, last, i+1, at)
	}
	done(at.Add(forwardRefresh))
	// Ended sessions are swept.
	conn(web, at.Add(forwardRefresh+2*forwardIdle), true, 0)
	if len(f.m) != 1 {
		t.Errorf("%d sessions kept, want the one open", len(f.m))
	}
}
