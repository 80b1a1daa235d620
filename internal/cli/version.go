package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/version"
)

// versions is what `berth version` reports: this binary's build and, when
// it answers, the server's.
type versions struct {
	Client api.Version  `json:"client"`
	Server *api.Version `json:"server,omitempty"`
	// ServerError says why the server's build is not known.
	ServerError string `json:"serverError,omitempty"`
}

func newVersionCmd(g *globals) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the build of this binary and of the server it talks to",
		Example: `  berth version
  berth version --client
  berth version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versions{Client: version.Get()}
			if !clientOnly {
				ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
				defer cancel()
				if c, err := g.client(ctx); err != nil {
					v.ServerError = err.Error()
				} else if sv, err := c.Version(ctx); err != nil {
					v.ServerError = describeErr(err).Error()
				} else {
					v.Server = &sv
				}
			}
			return printOut(cmd.OutOrStdout(), g.output, v, func(w io.Writer) {
				fmt.Fprintf(w, "Client: %s (%s, %s)\n", v.Client.Short(), v.Client.Go, v.Client.Platform)
				switch {
				case v.Server != nil:
					fmt.Fprintf(w, "Server: %s (%s, %s) at %s\n", v.Server.Short(), v.Server.Go, v.Server.Platform, g.endpoint())
				case !clientOnly:
					fmt.Fprintf(w, "Server: not reached: %s\n", v.ServerError)
				}
			})
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only this binary's build, without asking the server")
	return cmd
}
