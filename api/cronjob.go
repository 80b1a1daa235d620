package api

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// CronJob runs a Job on a schedule.
type CronJob struct {
	Metadata Metadata      `json:"metadata"`
	Spec     CronJobSpec   `json:"spec"`
	Status   CronJobStatus `json:"status,omitzero"`
}

// CronJobSpec is what the user asks of a cron job.
type CronJobSpec struct {
	// Schedule is in cron syntax: five fields (minute hour day-of-month
	// month day-of-week) or a descriptor such as @hourly.
	Schedule string `json:"schedule"`
	// TimeZone is an IANA zone the schedule is read in; UTC when empty.
	TimeZone string `json:"timeZone,omitempty"`
	// Concurrency says what a run due while another is active does:
	// allow (the default) runs both, forbid skips the new one, replace
	// stops the active one.
	Concurrency Concurrency `json:"concurrency,omitempty"`
	// StartingDeadline is how late a run may start: a run missed by more
	// (the control plane was down) is skipped. Zero means no deadline.
	// Only the latest missed run ever starts, never a burst of them.
	StartingDeadline Duration `json:"startingDeadline,omitempty"`
	// SuccessfulHistory and FailedHistory are how many finished runs of
	// each kind are kept (3 and 1 when zero).
	SuccessfulHistory int  `json:"successfulHistory,omitempty"`
	FailedHistory     int  `json:"failedHistory,omitempty"`
	Suspend           bool `json:"suspend,omitempty"`
	// Job is each run's spec.
	Job JobSpec `json:"job"`
}

// Concurrency is a cron job's concurrency policy.
type Concurrency string

// Concurrency policies.
const (
	ConcurrencyAllow   Concurrency = "allow"
	ConcurrencyForbid  Concurrency = "forbid"
	ConcurrencyReplace Concurrency = "replace"
)

// CronJobStatus is written by the cron job controller.
type CronJobStatus struct {
	// LastSchedule is the latest scheduled time acted on (run or skipped).
	LastSchedule time.Time `json:"lastSchedule,omitzero"`
	LastRun      string    `json:"lastRun,omitempty"`
	Active       []string  `json:"active,omitempty"`
	Message      string    `json:"message,omitempty"`
}

// LabelCronJob marks the jobs a cron job made with its name.
const LabelCronJob = "berth.cronjob"

// MaxCronJobName leaves room for the run's suffix in its job's name.
const MaxCronJobName = MaxJobName - 10

// ParseSchedule reads a cron job's schedule in its time zone.
func ParseSchedule(schedule, zone string) (cron.Schedule, error) {
	loc := time.UTC
	if zone != "" {
		l, err := time.LoadLocation(zone)
		if err != nil {
			return nil, fmt.Errorf("time zone %q: %w", zone, err)
		}
		loc = l
	}
	if strings.HasPrefix(schedule, "TZ=") || strings.HasPrefix(schedule, "CRON_TZ=") {
		return nil, fmt.Errorf("schedule %q: give the zone in timeZone", schedule)
	}
	p := cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
	s, err := p.Parse(schedule)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %w", schedule, err)
	}
	if sp, ok := s.(*cron.SpecSchedule); ok {
		sp.Location = loc
	}
	return s, nil
}

// Validate checks a cron job.
func (c *CronJob) Validate() error {
	var e errs
	validateMetadata(&e, &c.Metadata, true)
	if n := len(c.Metadata.Name); n > MaxCronJobName && n <= 63 {
		e.add("name", "must be at most %d characters (its jobs' names add the run), got %d", MaxCronJobName, n)
	}
	if _, err := ParseSchedule(c.Spec.Schedule, ""); err != nil {
		e.add("schedule", "%v", err)
	}
	if c.Spec.TimeZone != "" {
		if _, err := time.LoadLocation(c.Spec.TimeZone); err != nil {
			e.add("timeZone", "unknown time zone %q", c.Spec.TimeZone)
		}
	}
	switch c.Spec.Concurrency {
	case "", ConcurrencyAllow, ConcurrencyForbid, ConcurrencyReplace:
	default:
		e.add("concurrency", "must be allow, forbid or replace, got %q", c.Spec.Concurrency)
	}
	if c.Spec.StartingDeadline < 0 {
		e.add("startingDeadline", "must not be negative, got %s", c.Spec.StartingDeadline)
	}
	if c.Spec.SuccessfulHistory < 0 || c.Spec.SuccessfulHistory > 100 {
		e.add("successfulHistory", "must be 0 to 100, got %d", c.Spec.SuccessfulHistory)
	}
	if c.Spec.FailedHistory < 0 || c.Spec.FailedHistory > 100 {
		e.add("failedHistory", "must be 0 to 100, got %d", c.Spec.FailedHistory)
	}
	j := Job{Metadata: Metadata{Name: "x", Namespace: c.Metadata.Namespace}, Spec: c.Spec.Job}
	for _, f := range FieldErrors(j.Validate()) {
		e.add("job."+f.Field, "%s", f.Reason)
	}
	return e.err()
}

// RunJob is the job of a cron job's run named by suffix.
func (c *CronJob) RunJob(suffix string) *Job {
	labels := map[string]string{LabelCronJob: c.Metadata.Name}
	for k, v := range c.Metadata.Labels {
		if _, ok := labels[k]; !ok {
			labels[k] = v
		}
	}
	j := &Job{Metadata: Metadata{Namespace: c.Metadata.Namespace, Name: c.Metadata.Name + "-" + suffix, Labels: labels}, Spec: c.Spec.Job}
	Default(j)
	return j
}
