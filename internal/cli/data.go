package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newSecretCmd(g *globals) *cobra.Command { return newDataCmd(g, api.KindSecret) }
func newConfigCmd(g *globals) *cobra.Command { return newDataCmd(g, api.KindConfig) }

// newDataCmd is "berth secret" or "berth config": the two differ only in
// that a secret's values are sealed and never shown.
func newDataCmd(g *globals, kind api.Kind) *cobra.Command {
	word := strings.ToLower(string(kind))
	long := `Manage configs: named data (up to 1 MiB) that instances mount as files
(template.files: [{config: app, key: app.conf, path: /etc/app.conf}]) or
read as variables (template.envFrom: [{config: app}]). A service with
rollOnChange: true rolls when a config it uses changes.`
	if kind == api.KindSecret {
		long = `Manage secrets: named data (up to 1 MiB) sealed at rest with the servers'
seal key. Instances mount them as files (template.files: [{secret: db,
path: /run/secrets/db, mode: 0400}]) or read them as variables
(template.envFrom: [{secret: db}]); a node receives a secret only while
it runs an instance that uses it, and keeps it on a tmpfs. "berth get
secret" shows keys and sizes, never values.`
	}
	cmd := &cobra.Command{
		Use:   word,
		Short: fmt.Sprintf("Create and remove %ss", word),
		Long:  long,
		Example: fmt.Sprintf(`  berth %[1]s create db --from-literal password=s3cret
  berth %[1]s create app --from-file app.conf --from-file key=./local/path
  berth get %[1]ss
  berth %[1]s rm db`, word),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newDataCreateCmd(g, kind, word), newDataRmCmd(g, kind, word))
	return cmd
}

// dataFromFlags reads --from-literal key=value and --from-file [key=]path.
func dataFromFlags(literals, files []string) (map[string][]byte, error) {
	data := map[string][]byte{}
	var errs []error
	for _, l := range literals {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			errs = append(errs, fmt.Errorf("--from-literal %q: want key=value", l))
			continue
		}
		data[k] = []byte(v)
	}
	for _, f := range files {
		k, p, ok := strings.Cut(f, "=")
		if !ok {
			k, p = filepath.Base(f), f
		}
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("--from-file %s: %w", f, err))
			continue
		}
		data[k] = b
	}
	if len(errs) == 0 && len(data) == 0 {
		errs = append(errs, errors.New("no data: give --from-literal key=value or --from-file [key=]path"))
	}
	return data, errors.Join(errs...)
}

func newDataCreateCmd(g *globals, kind api.Kind, word string) *cobra.Command {
	var literals, files []string
	var typ string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: fmt.Sprintf("Create or replace a %s from literals and files", word),
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := dataFromFlags(literals, files)
			if err != nil {
				return err
			}
			ns, name, err := g.refOf(args[0], kind)
			if err != nil {
				return err
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			meta := api.Metadata{Namespace: ns, Name: name}
			var obj api.Object = &api.Config{Metadata: meta, Data: data}
			if kind == api.KindSecret {
				obj = &api.Secret{Metadata: meta, Data: data, Type: typ}
			}
			_, created, err := c.Apply(cmd.Context(), obj)
			if err != nil {
				return err
			}
			verb := "configured"
			if created {
				verb = "created"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", word, name, verb)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&literals, "from-literal", nil, "a key and its value, key=value (repeatable)")
	cmd.Flags().StringArrayVar(&files, "from-file", nil, "a file's content under its base name, or key=path (repeatable)")
	if kind == api.KindSecret {
		cmd.Flags().StringVar(&typ, "type", "", `"registry-auth" for registry credentials templates name in imagePullSecrets (one key, `+
			api.RegistryAuthKey+`: a docker config.json, e.g. --from-file `+api.RegistryAuthKey+`=$HOME/.docker/config.json)`)
	}
	return cmd
}

func newDataRmCmd(g *globals, kind api.Kind, word string) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME...",
		Short: fmt.Sprintf("Remove %ss", word),
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			var errs []error
			for _, a := range args {
				ns, name, err := g.refOf(a, kind)
				if err == nil {
					err = c.Delete(cmd.Context(), kind, ns, name, 0)
				}
				if err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%s removed\n", word, name)
			}
			return errors.Join(errs...)
		},
	}
}

// dataKeys prints data keys and sizes: "password(6)".
func dataKeys(keys map[string]int) string {
	if len(keys) == 0 {
		return "-"
	}
	out := make([]string, 0, len(keys))
	for k, n := range keys {
		out = append(out, fmt.Sprintf("%s(%d)", k, n))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
