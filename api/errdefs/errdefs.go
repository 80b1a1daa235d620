// Package errdefs holds berth's error categories. Code wraps a category
// with the identity of the object it concerns:
//
//	fmt.Errorf("service %q in namespace %q: %w", name, ns, errdefs.ErrNotFound)
//
// and callers test with errors.Is. The API server maps categories to HTTP
// status codes once (HTTPStatus), and the API client maps them back
// (FromHTTPStatus), so errors.Is works on both sides of the wire.
package errdefs

import (
	"errors"
	"net/http"
)

// The categories. Their messages are lowercase fragments meant to follow
// the object's identity.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrConflict           = errors.New("conflict")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnauthorized       = errors.New("unauthorized")
	ErrForbidden          = errors.New("forbidden")
	ErrTooLarge           = errors.New("request too large")
	ErrUnavailable        = errors.New("unavailable")
	// ErrTooManyRequests: the caller holds as many of something (streams)
	// as it may at once.
	ErrTooManyRequests = errors.New("too many requests")
)

// IsNotFound reports whether err is in the NotFound category.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsAlreadyExists reports whether err is in the AlreadyExists category.
func IsAlreadyExists(err error) bool { return errors.Is(err, ErrAlreadyExists) }

// IsInvalidArgument reports whether err is in the InvalidArgument category.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }

// IsConflict reports whether err is in the Conflict category.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsFailedPrecondition reports whether err is in the FailedPrecondition category.
func IsFailedPrecondition(err error) bool { return errors.Is(err, ErrFailedPrecondition) }

// IsUnauthorized reports whether err is in the Unauthorized category.
func IsUnauthorized(err error) bool { return errors.Is(err, ErrUnauthorized) }

// IsForbidden reports whether err is in the Forbidden category.
func IsForbidden(err error) bool { return errors.Is(err, ErrForbidden) }

// IsUnavailable reports whether err is in the Unavailable category.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// HTTPStatus is the status code the API answers err with. Errors outside
// every category are internal errors (500).
func HTTPStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrAlreadyExists), errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrInvalidArgument):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrFailedPrecondition):
		return http.StatusPreconditionFailed
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrTooManyRequests):
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// Code names a category on the wire, next to the status code, so that the
// two kinds of 409 (already exists, conflict) stay apart.
func Code(err error) string {
	for _, c := range categories {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "Internal"
}

// FromCode returns the category a wire code or, failing that, an HTTP
// status names; nil when neither names one.
func FromCode(code string, status int) error {
	for _, c := range categories {
		if c.code == code {
			return c.err
		}
	}
	switch status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrConflict
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return ErrInvalidArgument
	case http.StatusPreconditionFailed:
		return ErrFailedPrecondition
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusRequestEntityTooLarge:
		return ErrTooLarge
	case http.StatusServiceUnavailable:
		return ErrUnavailable
	case http.StatusTooManyRequests:
		return ErrTooManyRequests
	}
	return nil
}

var categories = []struct {
	code string
	err  error
}{
	{"NotFound", ErrNotFound},
	{"AlreadyExists", ErrAlreadyExists},
	{"InvalidArgument", ErrInvalidArgument},
	{"Conflict", ErrConflict},
	{"FailedPrecondition", ErrFailedPrecondition},
	{"Unauthorized", ErrUnauthorized},
	{"Forbidden", ErrForbidden},
	{"TooLarge", ErrTooLarge},
	{"Unavailable", ErrUnavailable},
	{"TooManyRequests", ErrTooManyRequests},
}

// New makes a package's own sentinel error, with its own message, in a
// category: errors.Is holds for both the sentinel and the category, so
// that the API maps it to a status code with no mapping of its own.
//
//	var ErrNotRunning = errdefs.New("container is not running", errdefs.ErrFailedPrecondition)
func New(msg string, category error) error { return &sentinel{msg, category} }

type sentinel struct {
	msg      string
	category error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.category }
