package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
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

// cronState is what DecideCron looks at for cj, whose runs are runs, and
// the names of those runs still active.
func cronState(cj *api.CronJob, sched Schedule, runs []*api.Job, now time.Time) (CronState, []string) {
	st := CronState{Now: now, Schedule: sched, Last: cj.Status.LastSchedule, Concurrency: cj.Spec.Concurrency,
		StartingDeadline: time.Duration(cj.Spec.StartingDeadline), Suspend: cj.Spec.Suspend,
		SuccessfulLimit: cmp.Or(cj.Spec.SuccessfulHistory, 3), FailedLimit: cmp.Or(cj.Spec.FailedHistory, 1)}
	if st.Last.IsZero() {
		st.Last = cj.Metadata.CreatedAt
	}
	var active []string
	for _, j := range runs {
		done := j.Status.Phase == api.JobSucceeded || j.Status.Phase == api.JobFailed
		st.Runs = append(st.Runs, CronRun{Name: j.Metadata.Name, Done: done, Succeeded: j.Status.Phase == api.JobSucceeded, Ended: j.Status.EndedAt})
		if !done {
			active = append(active, j.Metadata.Name)
		}
	}
	return st, active
}

// cronPass starts the runs of the cron jobs that are due, skips those
// their rules skip, and trims their history.
func (m *Manager) cronPass(ctx context.Context, sn *snapshot) error {
	if len(sn.crons) == 0 {
		return nil
	}
	runs := map[string][]*api.Job{}
	for _, j := range sn.jobs {
		if c := j.Metadata.Labels[api.LabelCronJob]; c != "" {
			runs[j.Metadata.Namespace+"/"+c] = append(runs[j.Metadata.Namespace+"/"+c], j)
		}
	}
	now := m.opt.Clock()
	var errs []error
	for _, cj := range sn.crons {
		sched, err := api.ParseSchedule(cj.Spec.Schedule, cj.Spec.TimeZone)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", api.RefOf(cj), err))
			continue
		}
		st, active := cronState(cj, sched, runs[cj.Metadata.Namespace+"/"+cj.Metadata.Name], now)
		d := DecideCron(st)
		if !d.Next.IsZero() {
			m.dueAt(d.Next)
		}
		for _, name := range d.Delete {
			if err := m.s.Delete(ctx, api.KindJob, cj.Metadata.Namespace, name, 0); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
			active = slices.DeleteFunc(active, func(a string) bool { return a == name })
		}
		want := cj.Status
		want.Active = active
		if !d.Acted.IsZero() {
			want.LastSchedule, want.Message = d.Acted, d.Skipped
		}
		var job *api.Job
		if d.Run {
			job = cj.RunJob(strconv.FormatInt(d.ScheduledFor.Unix()/60, 36))
			// Admitted as a job written to the API is, the job stored is
			// the one admission returns (its images pinned).
			if m.opt.Admit != nil {
				if err := m.opt.Admit(ctx, job); err != nil {
					// Refused for good (a retry would be refused again): the
					// scheduled time counts as acted on, and the cron job says why.
					d.Run, d.Skipped = false, fmt.Sprintf("run for %s refused: %v", d.ScheduledFor.UTC().Format(time.RFC3339), err)
					want.LastSchedule, want.Message = d.ScheduledFor, d.Skipped
				}
			}
		}
		if d.Run {
			if err := m.s.Create(ctx, job); err != nil && !errdefs.IsAlreadyExists(err) {
				errs = append(errs, fmt.Errorf("%s: run of %s: %w", api.RefOf(cj), d.ScheduledFor, err))
				continue // not recorded: the next pass tries again
			}
			want.LastRun = job.Metadata.Name
			want.Active = append(want.Active, job.Metadata.Name)
			m.event(ctx, cj, api.EventNormal, "Run", fmt.Sprintf("job %s for %s", job.Metadata.Name, d.ScheduledFor.UTC().Format(time.RFC3339)))
		}
		if d.Skipped != "" {
			m.event(ctx, cj, api.EventWarning, "RunSkipped", d.Skipped)
		}
		if !slices.Equal(want.Active, cj.Status.Active) || !want.LastSchedule.Equal(cj.Status.LastSchedule) ||
			want.LastRun != cj.Status.LastRun || want.Message != cj.Status.Message {
			cj = own(cj) // the cache's own
			cj.Status = want
			if err := m.s.UpdateStatus(ctx, cj, 0); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
