package cli

import "github.com/spf13/cobra"

func newContainerCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "container", Short: "Run and manage single containers on this machine"}
}
