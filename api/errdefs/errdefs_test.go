package errdefs

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

// Every category survives the trip to the wire and back, by code and, for
// answers without a code, by status alone where the status is unambiguous.
func TestRoundTrip(t *testing.T) {
	for _, c := range categories {
		err := fmt.Errorf("service %q in namespace %q: %w", "web", "default", c.err)
		status, code := HTTPStatus(err), Code(err)
		if status == http.StatusInternalServerError {
			t.Errorf("%v maps to 500", c.err)
		}
		if back := FromCode(code, status); !errors.Is(back, c.err) {
			t.Errorf("%v: code %q status %d came back as %v", c.err, code, status, back)
		}
		if back := FromCode("", status); back == nil {
			t.Errorf("%v: status %d alone gives no category", c.err, status)
		}
	}
	if HTTPStatus(errors.New("boom")) != http.StatusInternalServerError || Code(errors.New("boom")) != "Internal" {
		t.Error("an uncategorised error is not internal")
	}
	if FromCode("Internal", http.StatusInternalServerError) != nil {
		t.Error("an internal error got a category")
	}
}

// A package's own sentinel keeps its message and is in its category,
// wrapped or not, on this side of the wire and after a round trip.
func TestNewSentinelIsInItsCategory(t *testing.T) {
	errGone := New("no such container", ErrNotFound)
	err := fmt.Errorf("container %s: %w", "c1", errGone)
	if !errors.Is(err, errGone) || !IsNotFound(err) || IsConflict(err) {
		t.Fatalf("%v: want both the sentinel and NotFound only", err)
	}
	if err.Error() != "container c1: no such container" {
		t.Errorf("message %q changed", err.Error())
	}
	if got := HTTPStatus(err); got != http.StatusNotFound {
		t.Errorf("status %d, want 404", got)
	}
	if !errors.Is(FromCode(Code(err), HTTPStatus(err)), ErrNotFound) {
		t.Errorf("code %q does not come back as NotFound", Code(err))
	}
}
