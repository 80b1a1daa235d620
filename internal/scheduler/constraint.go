package scheduler

import (
	"fmt"
	"slices"
	"strings"
)

// Op is a constraint operator.
type Op uint8

// Constraint operators.
const (
	OpEq    Op = iota + 1 // label equals Values[0]
	OpNe                  // label is absent or differs from Values[0]
	OpIn                  // label equals one of Values
	OpNotIn               // label is absent or equals none of Values
)

func (o Op) String() string {
	switch o {
	case OpEq:
		return "=="
	case OpNe:
		return "!="
	case OpIn:
		return "in"
	case OpNotIn:
		return "not in"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// NodeNameKey is the constraint key matching the node's name rather than a label.
const NodeNameKey = "node.name"

// Constraint restricts the nodes an instance may run on by a node label
// (or by NodeNameKey).
type Constraint struct {
	Key    string
	Op     Op
	Values []string
}

func (c Constraint) String() string {
	key := c.Key
	if key != NodeNameKey {
		key = "node.labels." + key
	}
	if c.Op == OpIn || c.Op == OpNotIn {
		return fmt.Sprintf("%s %s (%s)", key, c.Op, strings.Join(c.Values, ","))
	}
	v := ""
	if len(c.Values) > 0 {
		v = c.Values[0]
	}
	return fmt.Sprintf("%s %s %s", key, c.Op, v)
}

// Matches reports whether the node called name with labels satisfies c.
func (c Constraint) Matches(name string, labels map[string]string) bool {
	return c.matches(name, labels)
}

func (c Constraint) matches(name string, labels map[string]string) bool {
	var v string
	var ok bool
	if c.Key == NodeNameKey {
		v, ok = name, true
	} else {
		v, ok = labels[c.Key]
	}
	switch c.Op {
	case OpEq:
		return ok && len(c.Values) > 0 && v == c.Values[0]
	case OpNe:
		return !ok || len(c.Values) == 0 || v != c.Values[0]
	case OpIn:
		return ok && slices.Contains(c.Values, v)
	case OpNotIn:
		return !ok || !slices.Contains(c.Values, v)
	}
	return false
}

// ParseConstraint reads the forms users write:
//
//	node.labels.zone == eu-1
//	zone != eu-2
//	node.labels.disk in (ssd, nvme)
//	zone not in (a,b)
//	node.name == n7
func ParseConstraint(s string) (Constraint, error) {
	s = strings.TrimSpace(s)
	var c Constraint
	var key, rest string
	switch {
	case strings.Contains(s, "=="):
		key, rest, _ = strings.Cut(s, "==")
		c.Op = OpEq
	case strings.Contains(s, "!="):
		key, rest, _ = strings.Cut(s, "!=")
		c.Op = OpNe
	default:
		f := strings.Fields(s)
		switch {
		case len(f) >= 3 && f[1] == "in":
			key, rest, c.Op = f[0], strings.Join(f[2:], " "), OpIn
		case len(f) >= 4 && f[1] == "not" && f[2] == "in":
			key, rest, c.Op = f[0], strings.Join(f[3:], " "), OpNotIn
		default:
			return Constraint{}, fmt.Errorf("constraint %q: want ==, !=, in or not in: %w", s, ErrInvalid)
		}
	}
	key = strings.TrimSpace(key)
	if k, ok := strings.CutPrefix(key, "node.labels."); ok {
		key = k
	} else if k, ok := strings.CutPrefix(key, "node.label."); ok {
		key = k
	}
	if key == "" {
		return Constraint{}, fmt.Errorf("constraint %q: empty key: %w", s, ErrInvalid)
	}
	c.Key = key
	rest = strings.TrimSpace(rest)
	if c.Op == OpIn || c.Op == OpNotIn {
		rest = strings.TrimSuffix(strings.TrimPrefix(rest, "("), ")")
		for v := range strings.SplitSeq(rest, ",") {
			if v = strings.TrimSpace(v); v != "" {
				c.Values = append(c.Values, v)
			}
		}
	} else if rest != "" {
		c.Values = []string{rest}
	}
	if len(c.Values) == 0 {
		return Constraint{}, fmt.Errorf("constraint %q: no value: %w", s, ErrInvalid)
	}
	return c, nil
}

// classKey is a canonical text for a constraint set, so that instances with
// the same constraints share one cached list of eligible nodes.
func classKey(cs []Constraint) string {
	if len(cs) == 0 {
		return ""
	}
	parts := make([]string, len(cs))
	for i, c := range cs {
		vals := slices.Clone(c.Values)
		if c.Op == OpIn || c.Op == OpNotIn {
			slices.Sort(vals)
		}
		parts[i] = c.Key + "\x00" + c.Op.String() + "\x00" + strings.Join(vals, "\x01")
	}
	slices.Sort(parts)
	return strings.Join(parts, "\x02")
}
