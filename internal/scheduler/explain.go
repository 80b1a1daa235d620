package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/api"
)

type reasonKey struct {
	code  reasonCode
	param uint32
}

// explain says why no node fits r, one reason per node (the first check it
// fails), counted: "0/10,000 nodes: 9,120 insufficient memory, 880 port
// 8080 in use". It scans every node, so it only runs on failure.
//
// Long because it is one loop over every node, counting each node's first
// failed check in arrays, then one line per count.
func (s *State) explain(r *req) string {
	// Count in arrays, not a map keyed per node: this loop runs over every
	// node. Only ports need a map.
	var plain [rWholeCores + 1]int
	cons := make([]int, len(r.inst.Constraints))
	// Of the nodes a constraint leaves out, those whose own report
	// (under api.NodeReportedLabelPrefix; a constraint on a label without
	// it matches only labels an admin set) would have matched it.
	reported := make([]int, len(r.inst.Constraints))
	ports := make(map[uint32]int)
	for i := range s.nodes {
		n := &s.nodes[i]
		if n.gone {
			continue
		}
		var key reasonKey
		switch {
		case !n.ready && n.cordoned:
			key.code = rCordoned
		case !n.ready:
			key.code = rNotReady
		case !r.cls.has(int32(i)):
			// Ready but outside the class: a constraint failed. With one
			// constraint there is no need to find out which.
			c := 0
			if len(r.inst.Constraints) > 1 {
				c = failedConstraint(r.inst.Constraints, n)
			}
			key = reasonKey{rConstraint, uint32(c)}
		default:
			code, param, _ := s.check(int32(i), r)
			key = reasonKey{code, param}
		}
		switch key.code {
		case rConstraint:
			cons[key.param]++
			if ReportedMatch(r.inst.Constraints[key.param], n.name, n.labels) {
				reported[key.param]++
			}
		case rPort:
			ports[key.param]++
		default:
			plain[key.code]++
		}
	}
	counts := make(map[reasonKey]int)
	for code, c := range plain {
		if c > 0 {
			counts[reasonKey{code: reasonCode(code)}] = c
		}
	}
	for i, c := range cons {
		if c > 0 {
			counts[reasonKey{rConstraint, uint32(i)}] = c
		}
	}
	for p, c := range ports {
		counts[reasonKey{rPort, p}] = c
	}
	type part struct {
		text  string
		count int
	}
	parts := make([]part, 0, len(counts))
	for k, c := range counts {
		if k.code == fitOK {
			continue
		}
		text := reasonText(k, r)
		if k.code == rConstraint && reported[k.param] > 0 {
			text += " (" + ReportedLabelHint(reported[k.param], r.inst.Constraints[k.param].Key) + ")"
		}
		parts = append(parts, part{text, c})
	}
	slices.SortFunc(parts, func(a, b part) int {
		return cmp.Or(cmp.Compare(b.count, a.count), strings.Compare(a.text, b.text))
	})
	var b strings.Builder
	fmt.Fprintf(&b, "0/%s nodes", thousands(s.live))
	for i, p := range parts {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(thousands(p.count))
		b.WriteByte(' ')
		b.WriteString(p.text)
	}
	return b.String()
}

// ReportedMatch says whether the node called name with labels, which c
// leaves out, would match c had c named the node's own report of its
// label: a user who wrote zone == a for nodes started with --label zone=a.
func ReportedMatch(c Constraint, name string, labels map[string]string) bool {
	if c.Key == NodeNameKey || strings.HasPrefix(c.Key, api.NodeReportedLabelPrefix) || (c.Op != OpEq && c.Op != OpIn) {
		return false
	}
	c.Key = api.NodeReportedLabelPrefix + c.Key
	return c.matches(name, labels)
}

// ReportedLabelHint is what explains a constraint on key that leaves out
// count nodes whose own report of the label matches it.
func ReportedLabelHint(count int, key string) string {
	return fmt.Sprintf("%s of them report %s%s themselves: a constraint trusts a node's own label only under that name",
		thousands(count), api.NodeReportedLabelPrefix, key)
}

func reasonText(k reasonKey, r *req) string {
	switch k.code {
	case rNotReady:
		return "node not ready"
	case rCordoned:
		return "node cordoned (SchedulingDisabled)"
	case rConstraint:
		return "not matching " + r.inst.Constraints[k.param].String()
	case rCPU:
		return "insufficient cpu"
	case rMemory:
		return "insufficient memory"
	case rPids:
		return "insufficient pids"
	case rPort:
		return "port " + portText(k.param) + " in use"
	case rAntiAffinity:
		return "already running a replica of " + r.inst.Group
	case rNoTopology:
		return "no cpu topology"
	case rWholeCores:
		return fmt.Sprintf("too few whole free cores for %d cpus", r.excl)
	}
	return "fits"
}

// thousands formats n with commas: 10000 → "10,000".
func thousands(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
