package api

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Quantity is an amount of bytes. On the wire it is a string such as
// "64Mi" (binary suffixes Ki, Mi, Gi, Ti; decimal K, M, G, T) or a plain
// number of bytes.
type Quantity int64

var quantitySuffixes = []struct {
	suffix string
	mult   int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
}

// ParseQuantity parses "64Mi", "1.5Gi", "500M" or "1048576".
func ParseQuantity(s string) (Quantity, error) {
	bad := fmt.Errorf("invalid quantity %q: use a number with Ki, Mi, Gi (or K, M, G)", s)
	num, mult := s, int64(1)
	for _, q := range quantitySuffixes {
		if strings.HasSuffix(s, q.suffix) {
			num, mult = strings.TrimSuffix(s, q.suffix), q.mult
			break
		}
	}
	if num == "" || strings.ContainsAny(num, "+-eE_ ") {
		return 0, bad
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n > math.MaxInt64/mult {
			return 0, bad
		}
		return Quantity(n * mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, bad
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 || v != math.Trunc(v) {
		return 0, fmt.Errorf("invalid quantity %q: not a whole number of bytes", s)
	}
	return Quantity(v), nil
}

// String renders q with the largest binary suffix that divides it exactly.
func (q Quantity) String() string {
	for _, s := range []struct {
		suffix string
		mult   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if q != 0 && int64(q)%s.mult == 0 {
			return strconv.FormatInt(int64(q)/s.mult, 10) + s.suffix
		}
	}
	return strconv.FormatInt(int64(q), 10)
}

// MarshalJSON writes q as a string such as "64Mi".
func (q Quantity) MarshalJSON() ([]byte, error) { return json.Marshal(q.String()) }

// UnmarshalJSON reads a quantity string or a number of bytes.
func (q *Quantity) UnmarshalJSON(b []byte) error {
	v, err := quantityFromJSON(b)
	if err != nil {
		return err
	}
	*q = v
	return nil
}

func quantityFromJSON(b []byte) (Quantity, error) {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		return ParseQuantity(s)
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return 0, fmt.Errorf("invalid quantity %s: use a number with Ki, Mi, Gi (or K, M, G)", b)
	}
	return Quantity(n), nil
}

// Duration is a time.Duration written as "1s", "500ms".
type Duration time.Duration

// D is d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	v, err := durationFromJSON(b)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

func durationFromJSON(b []byte) (Duration, error) {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return 0, fmt.Errorf("invalid duration %s: use a string like \"1s\" or \"500ms\"", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: use a string like \"1s\" or \"500ms\"", s)
	}
	return Duration(v), nil
}
