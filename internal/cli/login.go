package cli

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/registry"
)

func newLoginCmd(g *globals) *cobra.Command {
	var user, password string
	var passwordStdin bool
	var pf pullFlags
	cmd := &cobra.Command{
		Use:   "login REGISTRY",
		Short: "Store credentials for a registry, after checking them with it",
		Long: `Check USER and PASSWORD with REGISTRY (docker.io for Docker Hub) and store
them in berth's registry config (` + "`$BERTH_REGISTRY_CONFIG`" + `, else
~/.config/berth/config.json), readable by its owner only. The file has
docker's config.json format, so docker's own file works the same way.`,
		Example: `  berth login registry.example:5000 -u alice --password-stdin < pw.txt
  berth login docker.io -u alice -p "$TOKEN"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			host := registryHost(args[0])
			if user == "" {
				return fmt.Errorf("login %s: --username is required", host)
			}
			if passwordStdin {
				if password != "" {
					return fmt.Errorf("login %s: --password and --password-stdin are exclusive", host)
				}
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && err != io.EOF {
					return fmt.Errorf("login %s: read password: %w", host, err)
				}
				password = strings.TrimRight(line, "\r\n")
			}
			if password == "" {
				return fmt.Errorf("login %s: a password is required (--password or --password-stdin)", host)
			}
			opts, err := pf.options()
			if err != nil {
				return err
			}
			if err := registry.CheckLogin(cmd.Context(), host, user, password, opts); err != nil {
				return err
			}
			opts.Config.SetAuth(host, user, password)
			if err := opts.Config.Save(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Login succeeded: %s (stored in %s)\n", host, opts.Config.Path())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&user, "username", "u", "", "user name")
	fl.StringVarP(&password, "password", "p", "", "password or token (visible to other users in the process list: prefer --password-stdin)")
	fl.BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	fl.BoolVar(&pf.insecure, "insecure", false, "allow plain HTTP or an unverified certificate for this registry")
	fl.StringVar(&pf.caFile, "registry-ca", "", "PEM file of CA certificates to trust for this registry")
	return cmd
}

func newLogoutCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "logout REGISTRY",
		Short: "Forget the credentials stored for a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			host := registryHost(args[0])
			cfg, err := registry.LoadConfig(registry.DefaultConfigPath())
			if err != nil {
				return err
			}
			if !cfg.RemoveAuth(host) {
				return fmt.Errorf("logout %s: not logged in (%s)", host, cfg.Path())
			}
			if err := cfg.Save(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed credentials for %s\n", host)
			return nil
		},
	}
}

// registryHost takes a registry as users write it (a URL or a host).
func registryHost(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	return s
}
