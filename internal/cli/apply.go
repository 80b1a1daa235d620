package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newApplyCmd(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update services and jobs from YAML spec files",
		Long: `Create or update the services and jobs described in YAML spec files.

A file may hold several documents separated by "---". Every document is
checked before anything is stored: one invalid document stores nothing.

An image given by tag is stored pinned to the digest the server's image
store has for that tag (REPOSITORY:TAG@sha256:...), so every node runs the
same image. To roll a service out to a new image under the same tag, build
or push it to the server and apply the spec again; applying it again while
the tag is unchanged changes nothing. A tag the server does not have is
kept as given, for nodes that have the image themselves.`,
		Example: "  berth apply -f examples/web.yaml\n  cat specs.yaml | berth apply -f -",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("no spec file: give one with -f FILE (or -f - for standard input)")
			}
			var objs []api.Object
			for _, f := range files {
				var data []byte
				var err error
				if f == "-" {
					data, err = io.ReadAll(io.LimitReader(os.Stdin, 8<<20))
				} else {
					data, err = os.ReadFile(f)
				}
				if err != nil {
					return fmt.Errorf("read %s: %w", f, err)
				}
				parsed, err := api.ParseSpecs(f, data)
				if err != nil {
					return err
				}
				objs = append(objs, parsed...)
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			for _, o := range objs {
				_, created, err := c.Apply(cmd.Context(), o)
				if err != nil {
					return describeErr(err)
				}
				verb := "configured"
				if created {
					verb = "created"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", strings.ToLower(string(o.GetKind())), o.GetMetadata().Name, verb)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, "spec file (repeatable; - for standard input)")
	return cmd
}
