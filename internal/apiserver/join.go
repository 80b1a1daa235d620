package apiserver

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/store"
)

// JoinRequest is the body of POST /v1/join: a join token, the name the
// machine joins as, and a certificate request for its key (PEM).
type JoinRequest struct {
	Token string `json:"token"`
	Node  string `json:"node"`
	CSR   string `json:"csr"`
}

// JoinResponse is the answer to a join or a renewal: the node's client
// certificate and the cluster CA to trust the server by, both PEM.
type JoinResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// RenewRequest is the body of POST /v1/nodes/{name}/certificate: a
// certificate request for the node's new key (PEM).
type RenewRequest struct {
	CSR string `json:"csr"`
}

// join signs a joining node's certificate request once its token checks
// out and the name is free. It is the one route a caller without
// credentials may use.
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
	// Refuse a bad token before signing anything; JoinNode checks it
	// again, in the transaction that uses it.
	if _, err := s.store.VerifyJoinToken(r.Context(), req.Token, time.Now()); err != nil {
		if s.rejoin(w, r, req, "") {
			return
		}
		s.log.Warn("join refused", "node", req.Node, "remote", r.RemoteAddr, "err", err)
		writeError(w, fmt.Errorf("join as node %q: %w", req.Node, err))
		return
	}
	j, err := s.signNode(req.CSR, req.Node)
	if err != nil {
		writeError(w, fmt.Errorf("join as node %q: %w", req.Node, err))
		return
	}
	// The certificate works only once the store lists it, in the same
	// transaction that takes the name and uses the token: a name held by
	// a node, even one long NotReady, stays its own.
	tok, err := s.store.JoinNode(r.Context(), req.Token, req.Node, j, time.Now())
	if err != nil {
		if errdefs.IsAlreadyExists(err) && s.rejoin(w, r, req, j.Key) {
			return
		}
		s.log.Warn("join refused", "node", req.Node, "remote", r.RemoteAddr, "err", err)
		writeError(w, fmt.Errorf("join as node %q: %w", req.Node, err))
		return
	}
	s.log.Info("node joined", "node", req.Node, "token", tok.ID, "remote", r.RemoteAddr, "expires", j.Cert.NotAfter)
	writeJSON(w, http.StatusOK, JoinResponse{Certificate: j.PEM, CA: string(s.ca.CertPEM)})
}

// rejoin answers, and reports true for, a join asked again by the
// machine that made it (the same key, the same token) whose first answer
// was lost, say to a timeout after its transaction committed: it gets
// the certificate it was given then. Anyone else, even with the token,
// is refused as before. key is the request's key fingerprint, or ""
// to read it from its certificate request.
func (s *Server) rejoin(w http.ResponseWriter, r *http.Request, req JoinRequest, key string) bool {
	if key == "" {
		csr, err := pki.ParseNodeRequest([]byte(req.CSR), req.Node)
		if err != nil {
			return false
		}
		key = store.KeyFingerprint(csr.RawSubjectPublicKeyInfo)
	}
	certPEM, ok, err := s.store.RejoinNode(r.Context(), req.Token, req.Node, key)
	if err != nil {
		writeError(w, fmt.Errorf("join as node %q: %w", req.Node, err))
		return true
	}
	if !ok {
		return false
	}
	s.log.Info("node join answered again", "node", req.Node, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, JoinResponse{Certificate: certPEM, CA: string(s.ca.CertPEM)})
	return true
}

// signNode signs a node's certificate request for the server's node
// certificate lifetime; a bad request is a 422 naming the csr field.
func (s *Server) signNode(csr, node string) (store.NodeJoin, error) {
	certPEM, err := s.ca.SignNode([]byte(csr), node, s.nodeCertTTL)
	if err != nil {
		if errdefs.IsInvalidArgument(err) {
			err = &api.ValidationError{Fields: []api.FieldError{{Field: "csr", Reason: err.Error()}}}
		}
		return store.NodeJoin{}, err
	}
	leaf, err := nodecert.ParseCertificate(certPEM)
	if err != nil {
		return store.NodeJoin{}, err
	}
	return store.NodeJoin{Cert: store.NodeCert{Serial: serialOf(leaf), NotAfter: leaf.NotAfter}, PEM: string(certPEM),
		Key: store.KeyFingerprint(leaf.RawSubjectPublicKeyInfo)}, nil
}

func serialOf(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

// renewCertificate gives a node a new certificate, on the strength of the
// one it presents, which must still work: its agent renews before it
// expires. The old one works on until it expires, for requests under way.
func (s *Server) renewCertificate(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("name")
	id, _ := IdentityFrom(r.Context())
	if s.ca == nil {
		writeError(w, fmt.Errorf("renew the certificate of node %q: %w: this server has no cluster CA", node, errdefs.ErrFailedPrecondition))
		return
	}
	if id.Node != node {
		writeError(w, fmt.Errorf("%s may not renew the certificate of node %q: %w: a node renews its own, with it", id.Name, node, errdefs.ErrForbidden))
		return
	}
	var req RenewRequest
	if _, err := s.actionRequest(w, r, "renew the certificate of node "+node, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.CSR == "" {
		writeError(w, fmt.Errorf("renew the certificate of node %q: %w", node, &api.ValidationError{Fields: []api.FieldError{{Field: "csr", Reason: "must not be empty"}}}))
		return
	}
	j, err := s.signNode(req.CSR, node)
	if err != nil {
		writeError(w, fmt.Errorf("renew the certificate of node %q: %w", node, err))
		return
	}
	old := serialOf(r.TLS.VerifiedChains[0][0])
	if err := s.store.RenewNodeCert(r.Context(), node, old, j.Cert, time.Now()); err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("node certificate renewed", "node", node, "expires", j.Cert.NotAfter)
	writeJSON(w, http.StatusOK, JoinResponse{Certificate: j.PEM, CA: string(s.ca.CertPEM)})
}

// revokeNode stops every certificate of a node from working on every
// server; the node object stays (its name stays taken) until an admin
// deletes it.
func (s *Server) revokeNode(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("name")
	if err := requireAdminTo(r, fmt.Sprintf("revoke node %q", node), "revoking a node is for admins"); err != nil {
		writeError(w, err)
		return
	}
	if err := api.ValidateName(node); err != nil {
		writeError(w, &api.ValidationError{Fields: []api.FieldError{{Field: "metadata.name", Reason: err.Error()}}})
		return
	}
	if err := s.revoke(r.Context(), node); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// revoke removes node's certificates and waits, briefly, until this
// server's cache refuses them; the others' follow through their watches.
func (s *Server) revoke(ctx context.Context, node string) error {
	rev, err := s.store.RevokeNode(ctx, node)
	if err != nil || rev == 0 || s.creds == nil {
		return err
	}
	s.log.Info("node certificates revoked", "node", node)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.creds.WaitFor(wctx, rev)
}

// checkNodeCert refuses a node certificate the store no longer lists:
// revoked, replaced long enough ago, or of a node removed.
func (s *Server) checkNodeCert(r *http.Request, id Identity) error {
	if s.creds == nil || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return fmt.Errorf("node %q: %w: no verified certificate", id.Node, errdefs.ErrUnauthorized)
	}
	leaf := r.TLS.VerifiedChains[0][0]
	ok, err := s.creds.Allows(r.Context(), id.Node, serialOf(leaf), time.Now())
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("certificate %s of node %q: %w: revoked, or its node was removed; join again with a join token", serialOf(leaf), id.Node, errdefs.ErrUnauthorized)
	}
	return nil
}

// credsRunner starts the node credential cache once, for as long as the
// first listener that needs it.
type credsRunner struct{ once sync.Once }

func (s *Server) runCreds(ctx context.Context) {
	if s.creds == nil {
		return
	}
	s.credsRun.once.Do(func() { go s.creds.Run(ctx) })
}
