package client

import (
	"context"
	"net/http"
)

// DashboardSignIn is a one-time sign-in to the dashboard.
type DashboardSignIn struct {
	Code string `json:"code"`
	// Path is the sign-in link's path on the server, code included.
	Path string `json:"path"`
}

// DashboardCode asks the server for a one-time dashboard sign-in code
// (admins only): POST /ui/codes.
func (c *Client) DashboardCode(ctx context.Context) (DashboardSignIn, error) {
	var out DashboardSignIn
	err := c.do(ctx, http.MethodPost, "/ui/codes", nil, nil, &out)
	return out, err
}
