package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/berth-dev/berth/api"
)

// JoinToken is what the server shows of a join token. Token, the whole
// token with its secret, is set only in the answer to Create.
type JoinToken struct {
	api.JoinToken
	Token string `json:"token,omitempty"`
}

// TokenOptions describe a new join token.
type TokenOptions struct {
	Description string
	// TTL is how long the token works: the server's default (24h) when
	// 0, unless NoExpiry.
	TTL      time.Duration
	NoExpiry bool
	// Uses is how many joins the token allows; any number when 0.
	Uses int
}

// TokenClient manages join tokens (admins only).
type TokenClient struct{ c *Client }

// Tokens manages join tokens.
func (c *Client) Tokens() TokenClient { return TokenClient{c} }

// Create makes a join token that works for ttl (for ever when 0). The
// answer is the only place its secret appears.
func (t TokenClient) Create(ctx context.Context, description string, ttl time.Duration) (JoinToken, error) {
	return t.CreateWith(ctx, TokenOptions{Description: description, TTL: ttl, NoExpiry: ttl == 0})
}

// CreateWith makes a join token as opts say. The answer is the only
// place its secret appears.
func (t TokenClient) CreateWith(ctx context.Context, opts TokenOptions) (JoinToken, error) {
	req := struct {
		Description string `json:"description,omitempty"`
		TTL         string `json:"ttl,omitempty"`
		Uses        int    `json:"uses,omitempty"`
	}{Description: opts.Description, Uses: opts.Uses}
	switch {
	case opts.NoExpiry:
		req.TTL = "0"
	case opts.TTL != 0:
		req.TTL = opts.TTL.String()
	}
	var out JoinToken
	err := t.c.do(ctx, http.MethodPost, "/v1/tokens", nil, req, &out)
	return out, err
}

// List returns every join token, oldest first, without secrets.
func (t TokenClient) List(ctx context.Context) ([]JoinToken, error) {
	var out struct {
		Items []JoinToken `json:"items"`
	}
	err := t.c.do(ctx, http.MethodGet, "/v1/tokens", nil, nil, &out)
	return out.Items, err
}

// Revoke stops the join token with id from working.
func (t TokenClient) Revoke(ctx context.Context, id string) error {
	return t.c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil, nil)
}
