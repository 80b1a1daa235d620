package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

type reasonKey struct {
	code  reasonCode
	param uint32
}

// explain says why no node fits r, one reason per node (the first check it
// fails), counted: "0/10,000 nodes: 9,120 insufficient memory, 880 port
// 8080 in use". It scans every node, so it only runs on failure.
func (s *State) explain(r *req) string {
	// Count in arrays, not a map keyed per node: this loop runs over every
	// node. Only ports need a map.
	var plain [rWholeCores + 1]int
	cons := make([]int, len(r.inst.Constraints))
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
		parts = append(parts, part{reasonText(k, r), c})
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
