package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api/client"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage join tokens, with which machines join the cluster as nodes",
		Long: `Manage join tokens. A machine joins the cluster as a node with a join token:
its agent trades the token for a node certificate, and then uses the
certificate alone. The server keeps only a hash of each token: a token is
shown once, when it is made.`,
	}
	cmd.AddCommand(newTokenCreateCmd(g), newTokenLsCmd(g), newTokenRevokeCmd(g))
	cmd.RunE = unknownSubcommand
	return cmd
}

func newTokenCreateCmd(g *globals) *cobra.Command {
	var ttl time.Duration
	var uses int
	var description string
	cmd := &cobra.Command{
		Use:     "create",
		Short:   "Make a join token and print it (the only time it is shown)",
		Example: "  berth token create\n  berth token create --ttl 1h --uses 3 --description \"rack 4\"\n  berth token create --ttl 0   # never expires",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < 0 {
				return fmt.Errorf("--ttl %v: want a duration of 0 (never expires) or more", ttl)
			}
			if uses < 0 {
				return fmt.Errorf("--uses %d: want 0 (any number of joins) or more", uses)
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			tok, err := c.Tokens().CreateWith(cmd.Context(), client.TokenOptions{Description: description, TTL: ttl, NoExpiry: ttl == 0, Uses: uses})
			if err != nil {
				return describeErr(err)
			}
			return printOut(cmd.OutOrStdout(), g.output, tok, func(w io.Writer) {
				fmt.Fprintln(w, tok.Token)
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token works; 0 for ever")
	cmd.Flags().IntVar(&uses, "uses", 0, "how many joins the token allows; 0 for any number")
	cmd.Flags().StringVar(&description, "description", "", "what the token is for, shown by `berth token ls`")
	return cmd
}

func newTokenLsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List join tokens (never their secrets)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			list, err := c.Tokens().List(cmd.Context())
			if err != nil {
				return describeErr(err)
			}
			if list == nil {
				list = []client.JoinToken{}
			}
			now := time.Now()
			return printOut(cmd.OutOrStdout(), g.output, list, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
				fmt.Fprintln(tw, "ID\tSTATUS\tEXPIRES\tUSES\tAGE\tDESCRIPTION")
				for _, t := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, tokenStatus(t, now), expiresIn(t.Expires, now), usesOf(t), age(t.Created), dash(t.Description))
				}
				tw.Flush()
			})
		},
	}
}

func tokenStatus(t client.JoinToken, now time.Time) string {
	switch {
	case t.Revoked:
		return "revoked"
	case t.Expired(now):
		return "expired"
	case t.UsedUp():
		return "used up"
	}
	return "valid"
}

// usesOf says how many joins a token made, of how many.
func usesOf(t client.JoinToken) string {
	if t.Uses == 0 {
		return fmt.Sprintf("%d", t.Used)
	}
	return fmt.Sprintf("%d/%d", t.Used, t.Uses)
}

// expiresIn says when a token expires: "in 23h", "never", or "3h ago".
func expiresIn(at, now time.Time) string {
	if at.IsZero() {
		return "never"
	}
	d := at.Sub(now)
	if d < 0 {
		return roundDuration(-d) + " ago"
	}
	return "in " + roundDuration(d)
}

func roundDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func newTokenRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "revoke ID...",
		Short:   "Stop join tokens from working (by id, or the whole token)",
		Example: "  berth token revoke 4fk2mzq7",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			for _, a := range args {
				id := tokenID(a)
				if err := c.Tokens().Revoke(cmd.Context(), id); err != nil {
					return describeErr(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "token/%s revoked\n", id)
			}
			return nil
		},
	}
}

// tokenID is the id of a token given whole (berth_<id>.<secret>) or by id.
func tokenID(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "berth_")
	id, _, _ := strings.Cut(s, ".")
	return id
}
