package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// JoinToken is what the server shows of a join token. Token, the whole
// token with its secret, is set only in the answer to Create.
type JoinToken struct {
	ID          string    `json:"id"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	// Expires is zero for a token that never expires.
	Expires time.Time `json:"expires,omitzero"`
	Revoked bool      `json:"revoked,omitempty"`
	Token   string    `json:"token,omitempty"`
}

// Expired reports whether the token has expired at now.
func (t JoinToken) Expired(now time.Time) bool {
	return !t.Expires.IsZero() && !now.Before(t.Expires)
}

// TokenClient manages join tokens (admins only).
type TokenClient struct{ c *Client }

// Tokens manages join tokens.
func (c *Client) Tokens() TokenClient { return TokenClient{c} }

// Create makes a join token that works for ttl (for ever when 0). The
// answer is the only place its secret appears.
func (t TokenClient) Create(ctx context.Context, description string, ttl time.Duration) (JoinToken, error) {
	req := struct {
		Description string `json:"description,omitempty"`
		TTL         string `json:"ttl,omitempty"`
	}{Description: description}
	if ttl != 0 {
		req.TTL = ttl.String()
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
