package cli

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newVolumeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "volume",
		Aliases: []string{"volumes", "vol"},
		Short:   "List, inspect and remove named volumes",
		Long: `Manage named volumes: node-local data that outlives the instances using it.

A template's volumes: [{name: data, path: /var/lib/redis}] makes the
volume on the instance's node the first time it is used (under
<data-dir>/volumes/<namespace>/<name>), and keeps it across restarts and
rollouts. "berth volume rm" removes it, and the node deletes its data; it
is refused while an instance uses the volume.`,
		Example: `  berth volume ls
  berth volume inspect data
  berth volume rm data`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newVolumeLsCmd(g), newVolumeInspectCmd(g), newVolumeRmCmd(g))
	return cmd
}

func newVolumeLsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List named volumes, with their node and the instances using them",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			ns, err := g.listNamespace()
			if err != nil {
				return err
			}
			vols, _, err := c.Volumes().List(cmd.Context(), ns)
			if err != nil {
				return err
			}
			sort.Slice(vols, func(i, j int) bool {
				a, b := vols[i].Metadata, vols[j].Metadata
				return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
			})
			if g.output == "json" || g.output == "yaml" {
				return printOut(cmd.OutOrStdout(), g.output, vols, nil)
			}
			insts, _, err := c.Instances().List(cmd.Context(), ns)
			if err != nil {
				return err
			}
			return printOut(cmd.OutOrStdout(), g.output, vols, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				defer tw.Flush()
				fmt.Fprintln(tw, "NAMESPACE\tNAME\tNODE\tUSED BY\tAGE")
				for _, v := range vols {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Metadata.Namespace, v.Metadata.Name, v.Spec.Node,
						dash(strings.Join(volumeUsers(insts, v), ",")), age(v.Metadata.CreatedAt))
				}
			})
		},
	}
	addListFlags(cmd, g)
	return cmd
}

// volumeUsers names the unfinished instances that mount v.
func volumeUsers(insts []*api.Instance, v *api.Volume) []string {
	var out []string
	for _, in := range insts {
		if in.Status.Phase.Terminal() {
			continue
		}
		if in.Metadata.Namespace == v.Metadata.Namespace && in.Spec.Template.Uses(v.Metadata.Name) {
			out = append(out, in.Metadata.Name)
		}
	}
	sort.Strings(out)
	return out
}

func newVolumeInspectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a named volume (JSON; -o yaml for YAML)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			ns, name, err := g.refOf(args[0], api.KindVolume)
			if err != nil {
				return err
			}
			v, err := c.Volumes().Get(cmd.Context(), ns, name)
			if err != nil {
				return err
			}
			format := g.output
			if format != "yaml" {
				format = "json"
			}
			return printOut(cmd.OutOrStdout(), format, v, nil)
		},
	}
}

func newVolumeRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove named volumes and their data (refused while an instance uses one)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			var errs []error
			for _, a := range args {
				ns, name, err := g.refOf(a, api.KindVolume)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if err := c.Delete(cmd.Context(), api.KindVolume, ns, name, 0); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "volume/%s removed\n", name)
			}
			return errors.Join(errs...)
		},
	}
}
