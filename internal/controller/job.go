package controller

import (
	"sort"

	"github.com/berth-dev/berth/api"
)

// JobPhase is where a job is as a whole.
type JobPhase string

const (
	JobRunning   JobPhase = "Running"
	JobSucceeded JobPhase = "Succeeded"
	JobFailed    JobPhase = "Failed"
)

// JobState is one job and its instances.
type JobState struct {
	Completions  int
	Parallelism  int
	BackoffLimit int
	Instances    []Instance
}

// NewShard is an instance the job controller asks for.
type NewShard struct {
	Index   int
	Attempt int
}

// IndexResult is the outcome of one index.
type IndexResult struct {
	Index     int
	Succeeded bool
	// Failures counts failed attempts of this index.
	Failures int
	Active   bool
}

// JobResult is what the job controller writes.
type JobResult struct {
	Phase   JobPhase
	Create  []NewShard
	Delete  []string
	Indexes []IndexResult
	// Failures counts failed attempts job-wide, compared with BackoffLimit.
	Failures int
	Active   int
}

// ComputeJob runs indices 0..Completions-1, at most Parallelism at once,
// retrying failed ones until the job has failed more than BackoffLimit
// times in all; then it is Failed and its running instances are removed.
func ComputeJob(j JobState) JobResult {
	res := JobResult{Phase: JobRunning}
	idx := make([]IndexResult, j.Completions)
	attempts := make([]int, j.Completions)
	for i := range idx {
		idx[i].Index = i
	}
	var active []Instance
	for _, in := range j.Instances {
		if in.Index < 0 || in.Index >= j.Completions {
			if !in.Deleting {
				res.Delete = append(res.Delete, in.Name) // from a job with more completions than now
			}
			continue
		}
		attempts[in.Index] = max(attempts[in.Index], in.Attempt+1)
		switch {
		case in.Phase == api.PhaseSucceeded:
			idx[in.Index].Succeeded = true
		case in.Phase == api.PhaseFailed || in.Phase == api.PhaseLost:
			idx[in.Index].Failures++
			res.Failures++
		case !in.Deleting:
			idx[in.Index].Active = true
			active = append(active, in)
		}
	}
	res.Indexes = idx
	res.Active = len(active)
	done := 0
	for _, r := range idx {
		if r.Succeeded {
			done++
		}
	}
	if done == j.Completions {
		res.Phase = JobSucceeded
		for _, in := range active {
			res.Delete = append(res.Delete, in.Name)
		}
		sort.Strings(res.Delete)
		return res
	}
	if res.Failures > j.BackoffLimit {
		res.Phase = JobFailed
		for _, in := range active {
			res.Delete = append(res.Delete, in.Name)
		}
		sort.Strings(res.Delete)
		return res
	}
	par := j.Parallelism
	if par <= 0 {
		par = j.Completions // unset: every index at once
	}
	for i := 0; i < j.Completions && res.Active+len(res.Create) < par; i++ {
		if idx[i].Succeeded || idx[i].Active {
			continue
		}
		res.Create = append(res.Create, NewShard{Index: i, Attempt: attempts[i]})
	}
	sort.Strings(res.Delete)
	return res
}
