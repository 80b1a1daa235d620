package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newRegistryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "The cluster's registry settings: mirrors, CAs, insecure registries, direct pulls",
		Long: `Settings for the world's registries, kept by the cluster and followed live by
every server (no restart): mirrors tried before a registry (docker.io's,
say), a CA to trust for a registry, plain HTTP or unverified TLS for one
registry, and whether agents pull images from their registries
themselves rather than through the servers.

A server's registry config file (BERTH_REGISTRY_CONFIG, else
~/.config/berth/config.json) still gives credentials, and the settings
of the registries the cluster's settings do not name. Credentials for a
namespace are secrets of type registry-auth that templates name in
imagePullSecrets.`,
		Example: `  berth registry set docker.io --mirror https://mirror.example:5000
  berth registry set registry.example:5000 --ca ca.pem
  berth registry set localhost:5001 --insecure
  berth registry pull-direct on
  berth registry ls
  berth registry rm docker.io`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newRegistryLsCmd(g), newRegistrySetCmd(g), newRegistryRmCmd(g), newRegistryPullDirectCmd(g))
	return cmd
}

// editRegistrySettings reads the settings, changes them with edit and
// writes them back, naming the revision read: a concurrent change makes
// it fail rather than be lost.
func editRegistrySettings(ctx context.Context, g *globals, edit func(rs *api.RegistrySettings) error) (*api.RegistrySettings, error) {
	c, err := g.client(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := c.RegistrySettings(ctx)
	if err != nil {
		return nil, err
	}
	if err := edit(rs); err != nil {
		return nil, err
	}
	return c.SetRegistrySettings(ctx, rs)
}

func newRegistryLsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "Show the cluster's registry settings",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			rs, err := c.RegistrySettings(cmd.Context())
			if err != nil {
				return err
			}
			return printOut(cmd.OutOrStdout(), g.output, rs, func(w io.Writer) {
				hosts := make([]string, 0, len(rs.Registries))
				for h := range rs.Registries {
					hosts = append(hosts, h)
				}
				sort.Strings(hosts)
				tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
				fmt.Fprintln(tw, "REGISTRY\tMIRRORS\tCA\tINSECURE")
				for _, h := range hosts {
					r := rs.Registries[h]
					mirrors, ca := strings.Join(r.Mirrors, ","), "-"
					if mirrors == "" {
						mirrors = "-"
					}
					if r.CA != "" {
						ca = fmt.Sprintf("%d certificate(s)", strings.Count(r.CA, "BEGIN CERTIFICATE"))
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%t\n", h, mirrors, ca, r.Insecure)
				}
				tw.Flush()
				how := "through the servers"
				if rs.AgentsPullDirect {
					how = "directly from their registries"
				}
				fmt.Fprintf(w, "agents pull %s\n", how)
			})
		},
	}
}

func newRegistrySetCmd(g *globals) *cobra.Command {
	var mirrors []string
	var caFile string
	var insecure bool
	cmd := &cobra.Command{
		Use:   "set HOST [--mirror URL]... [--ca FILE] [--insecure]",
		Short: "Set how the cluster reaches one registry (replacing what was set for it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			host := args[0]
			if err := api.ValidateRegistryHost(host); err != nil {
				return fmt.Errorf("registry set: %w", err)
			}
			h := api.RegistryHost{Mirrors: mirrors, Insecure: insecure}
			if caFile != "" {
				b, err := os.ReadFile(caFile)
				if err != nil {
					return fmt.Errorf("--ca: %w", err)
				}
				h.CA = string(b)
			}
			_, err := editRegistrySettings(cmd.Context(), g, func(rs *api.RegistrySettings) error {
				if rs.Registries == nil {
					rs.Registries = map[string]api.RegistryHost{}
				}
				rs.Registries[host] = h
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registry %s set\n", host)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&mirrors, "mirror", nil, "a mirror to try first, http(s)://host[:port] (repeatable, in order)")
	cmd.Flags().StringVar(&caFile, "ca", "", "PEM file of certificates to trust for this registry")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "allow plain HTTP and unverified TLS for this registry")
	return cmd
}

func newRegistryRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm HOST...",
		Short: "Forget the cluster's settings for registries",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := editRegistrySettings(cmd.Context(), g, func(rs *api.RegistrySettings) error {
				for _, h := range args {
					if _, ok := rs.Registries[h]; !ok {
						return fmt.Errorf("registry %q: not set (berth registry ls)", h)
					}
					delete(rs.Registries, h)
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, h := range args {
				fmt.Fprintf(cmd.OutOrStdout(), "registry %s removed\n", h)
			}
			return nil
		},
	}
}

func newRegistryPullDirectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:       "pull-direct on|off",
		Short:     "Let agents pull images from their registries themselves (on) or only through the servers (off, the default)",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var on bool
			switch args[0] {
			case "on":
				on = true
			case "off":
			default:
				return fmt.Errorf("pull-direct %q: want on or off", args[0])
			}
			if _, err := editRegistrySettings(cmd.Context(), g, func(rs *api.RegistrySettings) error {
				rs.AgentsPullDirect = on
				return nil
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "agents pull directly: %s\n", args[0])
			return nil
		},
	}
}
