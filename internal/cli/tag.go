package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newImageTagCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "tag SOURCE TARGET",
		Short:   "Give a local image another name (REPOSITORY[:TAG])",
		Example: `  berth image tag web:2 registry.example:5000/team/web:2`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := g.images()
			if err != nil {
				return err
			}
			img, err := store.Tag(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), imageLine(img))
			return nil
		},
	}
}
