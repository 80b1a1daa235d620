package api

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Limits on labels, as Kubernetes has them: a key is NAME or PREFIX/NAME
// with NAME a label-ish word of at most 63 characters and PREFIX a DNS
// subdomain of at most 253; a value at most 63 characters of the same
// alphabet, or empty.
const (
	MaxLabels           = 64
	MaxLabelNameLength  = 63
	MaxLabelValueLength = 63
	maxLabelPrefix      = 253
)

var (
	labelWord   = lazyRegexp(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelPrefix = lazyRegexp(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// ValidateLabelKey checks one label key.
func ValidateLabelKey(k string) error {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		if prefix == "" || len(prefix) > maxLabelPrefix || !labelPrefix().MatchString(prefix) {
			return fmt.Errorf("label key %q: prefix %q must be a DNS subdomain of at most %d characters", k, prefix, maxLabelPrefix)
		}
		name = rest
	}
	switch {
	case name == "":
		return fmt.Errorf("label key %q: name must not be empty", k)
	case len(name) > MaxLabelNameLength:
		return fmt.Errorf("label key %q: name is longer than %d characters", k, MaxLabelNameLength)
	case !labelWord().MatchString(name):
		return fmt.Errorf("label key %q: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit", k)
	}
	return nil
}

// ValidateLabelValue checks one label value.
func ValidateLabelValue(k, v string) error {
	switch {
	case v == "":
		return nil
	case len(v) > MaxLabelValueLength:
		return fmt.Errorf("label %s: value is longer than %d characters", k, MaxLabelValueLength)
	case !labelWord().MatchString(v):
		return fmt.Errorf("label %s: value %q: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit", k, v)
	}
	return nil
}

func validateLabels(e *errs, labels map[string]string) {
	if len(labels) > MaxLabels {
		e.add("labels", "%d labels: at most %d (MaxLabels)", len(labels), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if err := ValidateLabelKey(k); err != nil {
			e.add("labels", "%v", err)
			continue
		}
		if err := ValidateLabelValue(k, labels[k]); err != nil {
			e.add("labels", "%v", err)
		}
	}
}

// Requirement is one term of a label selector: key=value or key!=value.
type Requirement struct {
	Key   string
	Value string
	// Not makes it key!=value (which an object without the key meets).
	Not bool
}

// Selector is a label selector: every requirement must hold.
type Selector []Requirement

// ParseSelector reads "k=v,k2!=v2" ("==" is "="). The empty string
// selects everything.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for term := range strings.SplitSeq(s, ",") {
		term = strings.TrimSpace(term)
		var r Requirement
		var ok bool
		if r.Key, r.Value, ok = strings.Cut(term, "!="); ok {
			r.Not = true
		} else if r.Key, r.Value, ok = strings.Cut(term, "=="); !ok {
			r.Key, r.Value, ok = strings.Cut(term, "=")
		}
		if !ok {
			return nil, fmt.Errorf("selector %q: term %q: want KEY=VALUE or KEY!=VALUE", s, term)
		}
		r.Key, r.Value = strings.TrimSpace(r.Key), strings.TrimSpace(r.Value)
		if err := ValidateLabelKey(r.Key); err != nil {
			return nil, fmt.Errorf("selector %q: %w", s, err)
		}
		if err := ValidateLabelValue(r.Key, r.Value); err != nil {
			return nil, fmt.Errorf("selector %q: %w", s, err)
		}
		sel = append(sel, r)
	}
	return sel, nil
}

// Matches reports whether labels meet every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s {
		v, has := labels[r.Key]
		if r.Not == (has && v == r.Value) {
			return false
		}
	}
	return true
}
