package reconcile

import (
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func kinds(as []Action) []string {
	var out []string
	for _, a := range as {
		s := a.Kind.String() + " " + a.Key
		if a.ContainerID != "" {
			s += " " + a.ContainerID
		}
		if a.Kind == Start {
			s += " #" + string(rune('0'+a.Attempt))
		}
		out = append(out, s)
	}
	return out
}

func TestCompute(t *testing.T) {
	web := Desired{Key: "default/web-1", UID: "u1", Restart: Always}
	job := Desired{Key: "default/job-0", UID: "u2", Restart: Never}
	flaky := Desired{Key: "default/flaky", UID: "u3", Restart: OnFailure}
	exited := func(uid, id string, attempt, code int, ran time.Duration, ago time.Duration) Container {
		fin := t0.Add(-ago)
		return Container{ID: id, UID: uid, Attempt: attempt, ExitCode: code, StartedAt: fin.Add(-ran), FinishedAt: fin}
	}
	tests := []struct {
		name     string
		desired  []Desired
		observed []Container
		want     []string
		retryAt  time.Time
	}{
		{"new instance starts", []Desired{web}, nil, []string{"start default/web-1 #0"}, time.Time{}},
		{"running is left alone", []Desired{web}, []Container{{ID: "c0", UID: "u1", Running: true}}, nil, time.Time{}},
		{"first crash restarts at once", []Desired{web}, []Container{exited("u1", "c0", 0, 137, time.Second, 0)},
			[]string{"start default/web-1 #1"}, time.Time{}},
		{"crash loop waits for the backoff", []Desired{web},
			[]Container{exited("u1", "c2", 2, 1, 10*time.Millisecond, 50*time.Millisecond), exited("u1", "c1", 1, 1, time.Millisecond, time.Second)},
			nil, t0.Add(-50 * time.Millisecond).Add(Backoff(2, 10*time.Millisecond))},
		{"backoff elapsed restarts and trims old attempts", []Desired{web},
			[]Container{exited("u1", "c0", 0, 1, 0, 3*time.Second), exited("u1", "c1", 1, 1, 0, 2*time.Second), exited("u1", "c2", 2, 1, 0, time.Second)},
			[]string{"remove default/web-1 c0", "start default/web-1 #3"}, time.Time{}},
		{"never: a failed job shard stays down", []Desired{job}, []Container{exited("u2", "j0", 0, 1, time.Second, 0)}, nil, time.Time{}},
		{"on-failure: success is final", []Desired{flaky}, []Container{exited("u3", "f0", 0, 0, time.Second, 0)}, nil, time.Time{}},
		{"on-failure: failure restarts", []Desired{flaky}, []Container{exited("u3", "f0", 0, 2, time.Second, 0)},
			[]string{"start default/flaky #1"}, time.Time{}},
		{"a changed template replaces a running container", []Desired{{Key: "default/web-1", UID: "u1", Restart: Never, Template: "t2"}},
			[]Container{{ID: "c0", UID: "u1", Running: true, Template: "t1"}},
			[]string{"stop default/web-1 c0"}, time.Time{}},
		{"then starts the new template whatever the policy", []Desired{{Key: "default/web-1", UID: "u1", Restart: Never, Template: "t2"}},
			[]Container{{ID: "c0", UID: "u1", Template: "t1", ExitCode: 137, FinishedAt: t0}},
			[]string{"start default/web-1 #1"}, time.Time{}},
		{"unhealthy is stopped", []Desired{web}, []Container{{ID: "c0", UID: "u1", Running: true, Unhealthy: true}},
			[]string{"stop default/web-1 c0"}, time.Time{}},
		{"orphans are stopped and removed", nil,
			[]Container{{ID: "old", Key: "default/gone", UID: "u9", Running: true}, exited("u8", "older", 0, 0, 0, 0)},
			[]string{"stop default/gone old", "remove default/gone old", "remove  older"}, time.Time{}},
		{"a same-named instance with a new uid replaces the old one's container", []Desired{{Key: "default/web-1", UID: "new", Restart: Always}},
			[]Container{{ID: "c0", Key: "default/web-1", UID: "u1", Running: true}},
			[]string{"stop default/web-1 c0", "remove default/web-1 c0", "start default/web-1 #0"}, time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.observed {
				if tc.observed[i].Key == "" && tc.observed[i].UID != "u9" && tc.observed[i].UID != "u8" {
					for _, d := range tc.desired {
						if d.UID == tc.observed[i].UID {
							tc.observed[i].Key = d.Key
						}
					}
				}
			}
			res := Compute(tc.desired, tc.observed, t0)
			if got := kinds(res.Actions); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("actions\n got %q\nwant %q", got, tc.want)
			}
			if !res.RetryAt.Equal(tc.retryAt) {
				t.Errorf("retryAt = %v, want %v", res.RetryAt, tc.retryAt)
			}
			// Pure: the same inputs give the same answer.
			if again := Compute(tc.desired, tc.observed, t0); !reflect.DeepEqual(again, res) {
				t.Errorf("second run differs: %+v vs %+v", again, res)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	if Backoff(1, 0) != 100*time.Millisecond || Backoff(2, 0) != 200*time.Millisecond {
		t.Errorf("backoff does not start at 100ms and double: %v %v", Backoff(1, 0), Backoff(2, 0))
	}
	if Backoff(50, 0) != 10*time.Second || Backoff(7, 9*time.Minute) != 6400*time.Millisecond {
		t.Errorf("backoff is not capped at 10s or resets before 10 minutes: %v %v", Backoff(50, 0), Backoff(7, 9*time.Minute))
	}
	if Backoff(7, 10*time.Minute) != 0 {
		t.Error("a container that ran ten minutes should restart at once")
	}
}
