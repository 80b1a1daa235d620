package apiserver

import (
	"fmt"
	"net/http"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/errdefs"
)

// JoinRequest is the body of POST /v1/join: a join token, the name the
// machine joins as, and a certificate request for its key (PEM).
type JoinRequest struct {
	Token string `json:"token"`
	Node  string `json:"node"`
	CSR   string `json:"csr"`
}

// JoinResponse is the answer to a join: the node's client certificate
// and the cluster CA to trust the server by, both PEM.
type JoinResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// join signs a joining node's certificate request once its token checks
// out. It is the one route a caller without credentials may use.
func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	if s.ca == nil {
		writeError(w, fmt.Errorf("join: %w: this server has no cluster CA", errdefs.ErrFailedPrecondition))
		return
	}
	var req JoinRequest
	if _, err := s.actionRequest(w, r, "join", &req); err != nil {
		writeError(w, err)
		return
	}
	var fe []api.FieldError
	if err := api.ValidateName(req.Node); err != nil {
		fe = append(fe, api.FieldError{Field: "node", Reason: err.Error()})
	}
	if req.CSR == "" {
		fe = append(fe, api.FieldError{Field: "csr", Reason: "must not be empty"})
	}
	if fe != nil {
		writeError(w, fmt.Errorf("join as node %q: %w", req.Node, &api.ValidationError{Fields: fe}))
		return
	}
	tok, err := s.store.VerifyJoinToken(r.Context(), req.Token, time.Now())
	if err != nil {
		s.log.Warn("join refused", "node", req.Node, "remote", r.RemoteAddr, "err", err)
		writeError(w, fmt.Errorf("join as node %q: %w", req.Node, err))
		return
	}
	// A live node's name is taken: a second machine joining under it
	// would get its rights and fight over its instances.
	live, err := s.store.LiveNodes(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	if live[req.Node] {
		writeError(w, fmt.Errorf("join as node %q: %w: a live node has that name; pick another, or stop that node and wait for its heartbeat to lapse", req.Node, errdefs.ErrAlreadyExists))
		return
	}
	cert, err := s.ca.SignNode([]byte(req.CSR), req.Node, 0)
	if err != nil {
		if errdefs.IsInvalidArgument(err) {
			err = &api.ValidationError{Fields: []api.FieldError{{Field: "csr", Reason: err.Error()}}}
		}
		writeError(w, fmt.Errorf("join as node %q: %w", req.Node, err))
		return
	}
	s.log.Info("node joined", "node", req.Node, "token", tok.ID, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, JoinResponse{Certificate: string(cert), CA: string(s.ca.CertPEM)})
}
