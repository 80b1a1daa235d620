package controller

import (
	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/metrics"
)

// causes says what started a pass, one bit a cause: the changes the cache
// applied since the last pass, or the wake-up with none (see
// metrics.ControllerPasses). Counted, they tell why a settled cluster
// still passes.
type causes uint16

const (
	causeList causes = 1 << iota
	causeLease
	causeLapsed
	causeNode
	causeService
	causeJob
	causeInstance
	causeCronJob
	causeAgain
	causeTimer
)

var causeNames = []string{"list", "lease", "lapsed", "node", "service", "job", "instance", "cronjob", "again", "timer"}

// causeOf is the cause of a change to an object of kind k.
func causeOf(k api.Kind) causes {
	switch k {
	case api.KindNode:
		return causeNode
	case api.KindService:
		return causeService
	case api.KindJob:
		return causeJob
	case api.KindInstance:
		return causeInstance
	case api.KindCronJob:
		return causeCronJob
	}
	return 0
}

// count adds one pass to each of c's causes.
func (c causes) count() {
	for i, name := range causeNames {
		if c&(1<<i) != 0 {
			metrics.ControllerPasses.WithLabelValues(name).Inc()
		}
	}
}
