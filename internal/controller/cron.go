package controller

import (
	"fmt"
	"sort"
	"time"

	"github.com/berth-dev/berth/api"
)

// Schedule gives the next activation after a time (robfig/cron's).
type Schedule interface {
	Next(time.Time) time.Time
}

// CronRun is one job a cron job made.
type CronRun struct {
	Name string
	// Done says the job ended; Succeeded how. Ended orders finished runs.
	Done, Succeeded bool
	Ended           time.Time
}

// CronState is what a cron job decision looks at; Now is passed in so
// that the decision is a pure function of it.
type CronState struct {
	Now      time.Time
	Schedule Schedule
	// Last is the latest scheduled time acted on, or the cron job's
	// creation when none was.
	Last             time.Time
	Concurrency      api.Concurrency
	StartingDeadline time.Duration
	SuccessfulLimit  int
	FailedLimit      int
	Suspend          bool
	Runs             []CronRun
}

// CronDecision is what to do now.
type CronDecision struct {
	// Run says a run for ScheduledFor starts now.
	Run          bool
	ScheduledFor time.Time
	// Acted, when not zero, is the new Last: a scheduled time run or
	// skipped for good.
	Acted time.Time
	// Delete names jobs to remove: active ones replaced, finished ones
	// beyond the history limits (oldest first).
	Delete []string
	// Skipped says why a due run did not start.
	Skipped string
	// Next is when the next scheduled time comes.
	Next time.Time
}

// maxMissed bounds the walk over missed times: a schedule every minute
// and a control plane down for a week is about 10,000.
const maxMissed = 100000

// DecideCron decides a cron job's next step. Of the scheduled times
// missed since Last, only the latest counts (as Kubernetes does): it
// runs if it is within the starting deadline, so a control plane that
// was down never returns to a burst of runs.
func DecideCron(s CronState) (d CronDecision) {
	var due time.Time
	t := s.Schedule.Next(s.Last)
	for i := 0; !t.IsZero() && !t.After(s.Now) && i < maxMissed; i++ {
		due = t
		t = s.Schedule.Next(t)
	}
	d.Next = t
	var active []string
	var succeeded, failed []CronRun
	for _, r := range s.Runs {
		switch {
		case !r.Done:
			active = append(active, r.Name)
		case r.Succeeded:
			succeeded = append(succeeded, r)
		default:
			failed = append(failed, r)
		}
	}
	d.Delete = append(d.Delete, beyond(succeeded, s.SuccessfulLimit)...)
	d.Delete = append(d.Delete, beyond(failed, s.FailedLimit)...)
	if due.IsZero() {
		return d
	}
	d.Acted = due
	switch {
	case s.Suspend:
		d.Skipped = fmt.Sprintf("run of %s skipped: suspended", due.UTC().Format(time.RFC3339))
	case s.StartingDeadline > 0 && s.Now.Sub(due) > s.StartingDeadline:
		d.Skipped = fmt.Sprintf("run of %s missed by %s, over the starting deadline of %s", due.UTC().Format(time.RFC3339),
			s.Now.Sub(due).Round(time.Second), s.StartingDeadline)
	case len(active) > 0 && s.Concurrency == api.ConcurrencyForbid:
		d.Skipped = fmt.Sprintf("run of %s skipped: %s still runs (concurrency: forbid)", due.UTC().Format(time.RFC3339), active[0])
	default:
		if len(active) > 0 && s.Concurrency == api.ConcurrencyReplace {
			d.Delete = append(d.Delete, active...)
		}
		d.Run, d.ScheduledFor = true, due
	}
	return d
}

// beyond names the oldest finished runs over limit.
func beyond(runs []CronRun, limit int) []string {
	if len(runs) <= limit {
		return nil
	}
	sort.Slice(runs, func(i, j int) bool {
		if !runs[i].Ended.Equal(runs[j].Ended) {
			return runs[i].Ended.Before(runs[j].Ended)
		}
		return runs[i].Name < runs[j].Name
	})
	var out []string
	for _, r := range runs[:len(runs)-limit] {
		out = append(out, r.Name)
	}
	return out
}
