package apiserver

import (
	"fmt"
	"net/http"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
)

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	Description string `json:"description,omitempty"`
	// TTL is how long the token works, as a Go duration ("1h");
	// store.DefaultJoinTokenTTL when empty, for ever when "0".
	TTL string `json:"ttl,omitempty"`
	// Uses is how many joins the token allows; any number when 0.
	Uses int `json:"uses,omitempty"`
}

// TokenCreated answers POST /v1/tokens: the only answer that carries a
// token's secret.
type TokenCreated struct {
	store.JoinToken
	Token string `json:"token"`
}

// TokenList answers GET /v1/tokens: no secrets, no hashes.
type TokenList struct {
	Items []store.JoinToken `json:"items"`
}

// requireAdmin refuses callers other than admins, whatever the Authorize
// hook says: tokens let machines into the cluster.
func requireAdmin(r *http.Request, what string) error {
	return requireAdminTo(r, what, "join tokens are for admins")
}

func requireAdminTo(r *http.Request, what, why string) error {
	id, _ := IdentityFrom(r.Context())
	if id.Admin {
		return nil
	}
	return fmt.Errorf("%s may not %s: %w: %s", id.Name, what, errdefs.ErrForbidden, why)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	if err := requireAdmin(r, "create join tokens"); err != nil {
		writeError(w, err)
		return
	}
	var req TokenRequest
	if _, err := s.actionRequest(w, r, "create join token", &req); err != nil {
		writeError(w, err)
		return
	}
	opts := store.JoinTokenOptions{Description: req.Description, Uses: req.Uses, Expires: time.Now().Add(store.DefaultJoinTokenTTL)}
	if req.Uses < 0 {
		writeError(w, fmt.Errorf("create join token: %w", &api.ValidationError{Fields: []api.FieldError{{Field: "uses", Reason: fmt.Sprintf("%d: want 0 (any number) or more", req.Uses)}}}))
		return
	}
	if req.TTL != "" {
		ttl, err := time.ParseDuration(req.TTL)
		if err != nil || ttl < 0 {
			writeError(w, fmt.Errorf("create join token: %w", &api.ValidationError{Fields: []api.FieldError{{Field: "ttl", Reason: fmt.Sprintf("%q is not a duration of 0 or more, like 24h", req.TTL)}}}))
			return
		}
		opts.Expires = time.Time{}
		if ttl > 0 {
			opts.Expires = time.Now().Add(ttl)
		}
	}
	if len(req.Description) > 256 {
		writeError(w, fmt.Errorf("create join token: %w", &api.ValidationError{Fields: []api.FieldError{{Field: "description", Reason: "longer than 256 characters"}}}))
		return
	}
	tok, info, err := s.store.CreateJoinToken(r.Context(), opts)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, TokenCreated{JoinToken: info, Token: tok})
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	if err := requireAdmin(r, "list join tokens"); err != nil {
		writeError(w, err)
		return
	}
	list, err := s.store.ListJoinTokens(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, TokenList{Items: list})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := requireAdmin(r, fmt.Sprintf("revoke join token %q", id)); err != nil {
		writeError(w, err)
		return
	}
	if err := s.store.RevokeJoinToken(r.Context(), id); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
