package api

import "time"

// JoinToken is what may be shown about a join token, which lets a machine
// join the cluster as a node: never its secret.
type JoinToken struct {
	ID          string    `json:"id"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	// Expires is when the token stops working; zero for never.
	Expires time.Time `json:"expires,omitzero"`
	Revoked bool      `json:"revoked,omitempty"`
	// Uses is how many joins the token allows; 0 for any number. Used
	// counts the joins made with it.
	Uses int `json:"uses,omitempty"`
	Used int `json:"used,omitempty"`
}

// UsedUp reports whether the token has no join left.
func (t JoinToken) UsedUp() bool { return t.Uses > 0 && t.Used >= t.Uses }

// Expired reports whether the token has expired at now.
func (t JoinToken) Expired(now time.Time) bool {
	return !t.Expires.IsZero() && !now.Before(t.Expires)
}
