package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/errdefs"
)

func newRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove services or jobs (and so their instances and containers)",
		Long: `Remove services or jobs by name. A name may say its kind (service/web,
job/tests) and namespace (default/web); otherwise the service or job of
that name is removed.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			var errs []error
			for _, a := range args {
				kinds := []api.Kind{api.KindService, api.KindJob}
				ref := a
				if k, rest, ok := strings.Cut(a, "/"); ok {
					if kind, known := kindAliases[k]; known {
						kinds, ref = []api.Kind{kind}, rest
					}
				}
				ns, name := namespaced(ref)
				removed := false
				for _, k := range kinds {
					err := c.Delete(cmd.Context(), k, ns, name, 0)
					if errdefs.IsNotFound(err) {
						continue
					}
					if err != nil {
						errs = append(errs, err)
						removed = true
						break
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s/%s removed\n", strings.ToLower(string(k)), name)
					removed = true
					break
				}
				if !removed {
					errs = append(errs, fmt.Errorf("no service or job named %q in namespace %q", name, ns))
				}
			}
			return errors.Join(errs...)
		},
	}
}
