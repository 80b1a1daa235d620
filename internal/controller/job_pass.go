package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// jobsPass removes job instances and returns those to make and the
// status writes still to do.
func (m *Manager) jobsPass(ctx context.Context, sn *snapshot) ([]newInstances, []func() error, error) {
	owned := sn.byOwner()
	var made []newInstances
	var later []func() error
	var errs []error
	live := map[ownerID]bool{}
	now := m.opt.Clock().UTC()
	for _, job := range sn.jobs {
		key := ownerID{api.KindJob, job.Metadata.Namespace, job.Metadata.Name, job.Metadata.UID}
		live[key] = true
		if job.Status.Phase == api.JobSucceeded || job.Status.Phase == api.JobFailed {
			continue // finished: its instances stay for their logs until the job is removed
		}
		st := JobState{Completions: job.Spec.Completions, Parallelism: job.Spec.Parallelism, BackoffLimit: job.Spec.BackoffLimit}
		insts := owned[key]
		for _, in := range insts {
			st.Instances = append(st.Instances, view(in))
		}
		res := ComputeJob(st)
		t := job.Spec.Template
		// The job controller retries a failed index itself, as a new instance.
		t.Restart = api.InstanceRestart(api.KindJob, t)
		var fresh []*api.Instance
		for _, c := range res.Create {
			env := map[string]string{
				"BERTH_JOB_INDEX":       strconv.Itoa(c.Index),
				"BERTH_JOB_COMPLETIONS": strconv.Itoa(job.Spec.Completions),
				"BERTH_JOB_NAME":        job.Metadata.Name,
			}
			fresh = append(fresh, m.newInstance(job.Metadata, api.KindJob, nil, t, job.Spec.Placement, job.Spec.Priority, "", c.Index, c.Attempt, env))
		}
		if len(fresh) > 0 {
			made = append(made, newInstances{owner: job, insts: fresh, taken: true})
		}
		deleteFailed := false
		for _, name := range res.Delete {
			if err := m.s.Delete(ctx, api.KindInstance, job.Metadata.Namespace, name, 0); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
				deleteFailed = true
			}
		}
		want := jobStatus(job, res, insts, now)
		if deleteFailed && want.Phase != api.JobRunning {
			continue // a finished job is not looked at again: finish its deletes first
		}
		if !jobStatusEqual(want, job.Status) {
			job := own(job)
			job.Status = want
			later = append(later, func() error {
				if err := m.s.UpdateStatus(ctx, job, 0); err != nil {
					if errdefs.IsNotFound(err) {
						return nil
					}
					return err
				}
				if want.Phase == api.JobSucceeded || want.Phase == api.JobFailed {
					m.event(ctx, job, api.EventNormal, "Job"+string(want.Phase), want.Message)
				}
				return nil
			})
		}
	}
	errs = append(errs, m.deleteOrphans(ctx, api.KindJob, owned, live))
	return made, later, errors.Join(errs...)
}

func jobStatus(job *api.Job, res JobResult, insts []*api.Instance, now time.Time) api.JobStatus {
	st := api.JobStatus{Phase: api.JobPhase(res.Phase), Active: res.Active + len(res.Create), Failed: res.Failures,
		StartedAt: job.Status.StartedAt, EndedAt: job.Status.EndedAt}
	if st.StartedAt.IsZero() {
		st.StartedAt = now
	}
	latest := map[int]*api.Instance{}
	for _, in := range insts {
		if cur, ok := latest[in.Spec.Index]; !ok || in.Spec.Attempt > cur.Spec.Attempt {
			latest[in.Spec.Index] = in
		}
	}
	for _, r := range res.Indexes {
		ir := api.IndexResult{Index: r.Index, Succeeded: r.Succeeded, Attempts: r.Failures}
		if in := latest[r.Index]; in != nil {
			ir.Instance = in.Metadata.Name
			ir.ExitCode = in.Status.ExitCode
			ir.Attempts = in.Spec.Attempt + 1
			ir.Failed = !r.Succeeded && phaseOf(in) == api.PhaseFailed
		}
		if r.Succeeded {
			st.Succeeded++
		}
		st.Indexes = append(st.Indexes, ir)
	}
	sort.Slice(st.Indexes, func(i, j int) bool { return st.Indexes[i].Index < st.Indexes[j].Index })
	switch res.Phase {
	case JobSucceeded:
		st.Message = fmt.Sprintf("all %d indices succeeded", job.Spec.Completions)
	case JobFailed:
		st.Message = fmt.Sprintf("%d failed attempts, over the backoff limit of %d", res.Failures, job.Spec.BackoffLimit)
	}
	if res.Phase != JobRunning && st.EndedAt.IsZero() {
		st.EndedAt = now
	}
	return st
}

func jobStatusEqual(a, b api.JobStatus) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}
