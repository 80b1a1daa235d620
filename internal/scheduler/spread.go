package scheduler

// SpreadNode is the spread key meaning "each node is its own domain".
const SpreadNode = "node"

// tracker keeps, for one group, one spread key and one class of eligible
// nodes, how many replicas each domain holds and how many domains sit at
// each count. Its minimum tells Place when a sampled candidate is already
// as good as a full scan could find, so spread stays exact while most
// placements look at a handful of nodes.
type tracker struct {
	key     string
	cls     *class
	version uint64
	counts  map[string]int32 // label value → replicas; unused for SpreadNode
	hist    []int32          // hist[c] = domains holding c replicas
	min     int32
}

// trackerFor returns the tracker of g for key over cls, building it from
// the group's per-node counts (O(replicas + domains)) when missing or stale.
func (s *State) trackerFor(g *group, key string, cls *class) *tracker {
	for _, t := range g.trackers {
		if t.key == key && t.cls == cls && t.version == s.version {
			return t
		}
	}
	// Drop trackers of an older node version before adding a new one.
	live := g.trackers[:0]
	for _, t := range g.trackers {
		if t.version == s.version {
			live = append(live, t)
		}
	}
	g.trackers = live
	t := &tracker{key: key, cls: cls, version: s.version}
	if key == SpreadNode {
		t.bump(0, int32(len(cls.nodes)))
		for ni, c := range g.perNode {
			if cls.has(ni) {
				t.move(0, c)
			}
		}
	} else {
		t.counts = make(map[string]int32)
		domains := s.domainsOf(cls, key)
		t.bump(0, int32(len(domains)))
		for ni, c := range g.perNode {
			if !cls.has(ni) {
				continue
			}
			v := s.nodes[ni].labels[key]
			old := t.counts[v]
			t.counts[v] = old + c
			t.move(old, old+c)
		}
	}
	t.recomputeMin()
	g.trackers = append(g.trackers, t)
	return t
}

func (t *tracker) bump(c, by int32) {
	for int(c) >= len(t.hist) {
		t.hist = append(t.hist, 0)
	}
	t.hist[c] += by
}

func (t *tracker) move(from, to int32) {
	t.bump(from, -1)
	t.bump(to, +1)
}

func (t *tracker) recomputeMin() {
	t.min = 0
	for int(t.min) < len(t.hist) && t.hist[t.min] == 0 {
		t.min++
	}
}

// count is the number of replicas in node ni's domain.
func (s *State) count(t *tracker, g *group, ni int32) int32 {
	if t.key == SpreadNode {
		return g.perNode[ni]
	}
	return t.counts[s.nodes[ni].labels[t.key]]
}

// trackGroup updates g's trackers after one replica was added (+1) or
// removed (-1) on node ni; g.perNode is already updated.
func (s *State) trackGroup(g *group, ni int32, delta int32) {
	if g == nil {
		return
	}
	for _, t := range g.trackers {
		if t.version != s.version || !t.cls.has(ni) {
			continue
		}
		var now int32
		if t.key == SpreadNode {
			now = g.perNode[ni]
		} else {
			v := s.nodes[ni].labels[t.key]
			now = t.counts[v] + delta
			t.counts[v] = now
		}
		t.move(now-delta, now)
		if delta < 0 && now < t.min {
			t.min = now
		} else if delta > 0 && t.hist[t.min] == 0 {
			t.min++
		}
	}
}
