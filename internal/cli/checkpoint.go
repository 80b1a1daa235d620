package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

// checkpointDir is where a container's latest checkpoint images are kept.
func (g *globals) checkpointDir(id string) string {
	return filepath.Join(g.dataDir, "checkpoints", id)
}

func newContainerCheckpointCmd(g *globals) *cobra.Command {
	var leaveRunning bool
	var export string
	cmd := &cobra.Command{
		Use:   "checkpoint [--leave-running] [--export FILE] NAME",
		Short: "Dump a running container's processes with CRIU (it stops unless --leave-running)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			id, dir := args[0], g.checkpointDir(args[0])
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("container %s: old checkpoint: %w", id, err)
			}
			if err := rt.Checkpoint(cmd.Context(), id, runtime.CheckpointOptions{ImageDir: dir, LeaveRunning: leaveRunning}); err != nil {
				return err
			}
			if export != "" {
				f, err := os.Create(export)
				if err != nil {
					return fmt.Errorf("--export: %w", err)
				}
				err = runtime.ExportCheckpoint(dir, f)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return fmt.Errorf("--export %s: %w", export, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: checkpointed to %s\n", id, export)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: checkpointed\n", id)
			return nil
		},
	}
	cmd.Flags().BoolVar(&leaveRunning, "leave-running", false, "keep the container running after the dump")
	cmd.Flags().StringVar(&export, "export", "", "also write the checkpoint to FILE (a .tar.gz) for restore --import")
	return cmd
}

func newContainerRestoreCmd(g *globals) *cobra.Command {
	var imp string
	cmd := &cobra.Command{
		Use:   "restore [--import FILE] NAME",
		Short: "Bring a checkpointed container back where its processes were",
		Long: `Bring a checkpointed container back where its processes were.

A container that published ports (-p) holds the same host ports again and
is reached through them; the restore is refused, naming the port, while
something else holds one.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			id, dir := args[0], g.checkpointDir(args[0])
			if imp != "" {
				f, err := os.Open(imp)
				if err != nil {
					return fmt.Errorf("--import: %w", err)
				}
				defer f.Close()
				if err := os.RemoveAll(dir); err != nil {
					return fmt.Errorf("container %s: old checkpoint: %w", id, err)
				}
				got, ref, err := runtime.ImportCheckpoint(f, dir)
				if err != nil {
					return fmt.Errorf("--import %s: %w", imp, err)
				}
				if got != id {
					return fmt.Errorf("--import %s: holds container %q, not %q", imp, got, id)
				}
				if ref != "" {
					// The restored container uses its image's layers: record it, as run does.
					store, err := g.images()
					if err != nil {
						return err
					}
					if _, err := store.Prepare(cmd.Context(), ref, id); err != nil {
						return fmt.Errorf("--import %s: image %s: %w", imp, ref, err)
					}
				}
			} else if _, err := os.Stat(dir); err != nil {
				return fmt.Errorf("container %s: no checkpoint to restore (run berth container checkpoint %s first, or give --import FILE)", id, id)
			}
			st, err := restoreContainer(cmd.Context(), g, rt, id, dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: restored (pid %d)\n", id, st.Pid)
			return nil
		},
	}
	cmd.Flags().StringVar(&imp, "import", "", "restore from FILE written by checkpoint --export")
	return cmd
}

func newCheckpointCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "checkpoint INSTANCE --output FILE",
		Short: "Dump a running instance's processes with CRIU, on any node, leaving it running",
		Long: `Dump a running instance's processes with CRIU on its node, leaving it running,
and write the images to FILE (a .tar.gz that "berth container restore --import" reads).
The instance's service must use an executor with CRIU support (runtime: runc).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "" {
				return errors.New("checkpoint: --output FILE is required")
			}
			ctx := cmd.Context()
			c, ns, name, err := g.clientFor(ctx, args[0], api.KindInstance)
			if err != nil {
				return err
			}
			rc, err := c.Checkpoint(ctx, ns, name)
			if err != nil {
				return err
			}
			defer rc.Close()
			f, err := os.Create(output)
			if err != nil {
				return fmt.Errorf("--output: %w", err)
			}
			_, err = io.Copy(f, rc)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				_ = os.Remove(output)
				return fmt.Errorf("checkpoint %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: checkpointed to %s\n", args[0], output)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the checkpoint to FILE")
	return cmd
}

func newRestoreCmd(g *globals) *cobra.Command {
	var input string
	cmd := &cobra.Command{
		Use:   "restore INSTANCE --input FILE",
		Short: "Put a running instance back to a checkpoint of it, on its node",
		Long: `Put a running instance's processes back to the state "berth checkpoint
INSTANCE --output FILE" saved: on its node, its container is stopped and
restored from FILE with CRIU, keeping its name, address and container.
The checkpoint must be of the container the instance runs now (not of one
before a restart). To move an instance to another node, use berth migrate.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if input == "" {
				return errors.New("restore: --input FILE is required")
			}
			ctx := cmd.Context()
			c, ns, name, err := g.clientFor(ctx, args[0], api.KindInstance)
			if err != nil {
				return err
			}
			f, err := os.Open(input)
			if err != nil {
				return fmt.Errorf("--input: %w", err)
			}
			defer f.Close()
			res, err := c.Restore(ctx, ns, name, f)
			if err != nil {
				return fmt.Errorf("restore %s from %s: %w", args[0], input, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: restored from %s (pid %d)\n", args[0], input, res.Pid)
			return nil
		},
	}
	cmd.Flags().StringVarP(&input, "input", "i", "", "the checkpoint FILE (from berth checkpoint --output)")
	return cmd
}

// restoreContainer brings container id back from the images in dir; one
// that published ports holds them again and has them published once it
// runs, as when it was started.
func restoreContainer(ctx context.Context, g *globals, rt *runtime.Runtime, id, dir string) (runtime.Status, error) {
	c, err := runtime.CheckpointConfig(dir)
	if err != nil {
		return runtime.Status{}, fmt.Errorf("container %q: restore: %w", id, err)
	}
	if len(c.Ports) == 0 || c.ID != id {
		return rt.Restore(ctx, id, dir) // which names a mismatch
	}
	pub, err := republishPorts(ctx, g, &c)
	if err != nil {
		return runtime.Status{}, fmt.Errorf("container %q: restore: %w", id, err)
	}
	st, err := rt.RestoreAs(ctx, c, dir)
	// Whether or not it came back: a failed restore's address is released.
	if perr := pub.finish(context.WithoutCancel(ctx), rt); perr != nil && err == nil {
		_ = rt.Delete(context.WithoutCancel(ctx), id, true)
		err = perr
	}
	return st, err
}
