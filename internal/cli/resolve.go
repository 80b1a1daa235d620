package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
)

// objRef names one object: its kind (empty while the name alone is
// known), namespace and name.
type objRef struct {
	kind      api.Kind
	namespace string
	name      string
}

// String is the kind/name form users type: service/web.
func (r objRef) String() string {
	if r.kind == "" {
		return r.name
	}
	return strings.ToLower(string(r.kind)) + "/" + r.name
}

// addListFlags gives a list command --all-namespaces/-A.
func addListFlags(cmd *cobra.Command, g *globals) {
	cmd.Flags().BoolVarP(&g.allNamespaces, "all-namespaces", "A", false, "list objects of every namespace")
}

// namespace is the namespace commands act in: -n, or "default".
func (g *globals) ns() (string, error) {
	if g.namespace == "" {
		return api.DefaultNamespace, nil
	}
	if err := api.ValidateName(g.namespace); err != nil {
		return "", fmt.Errorf("--namespace: %w", err)
	}
	return g.namespace, nil
}

// listNamespace is the namespace a list reads: "" (all of them) with -A.
func (g *globals) listNamespace() (string, error) {
	if g.allNamespaces {
		if g.namespace != "" {
			return "", fmt.Errorf("--all-namespaces and --namespace %s: give one", g.namespace)
		}
		return "", nil
	}
	return g.ns()
}

// parseRef reads [KIND/][NAMESPACE/]NAME. KIND is any alias `berth get`
// knows (service, svc, job, instance, node...); the namespace, when the
// argument does not give one, is -n's.
func (g *globals) parseRef(arg string) (objRef, error) {
	var r objRef
	parts := strings.Split(arg, "/")
	if len(parts) > 1 {
		if k, ok := kindAliases[strings.ToLower(parts[0])]; ok {
			r.kind = k
			parts = parts[1:]
		}
	}
	switch len(parts) {
	case 1:
		r.name = parts[0]
	case 2:
		r.namespace, r.name = parts[0], parts[1]
	default:
		return r, fmt.Errorf("%q: want [KIND/][NAMESPACE/]NAME, e.g. service/web", arg)
	}
	if r.name == "" {
		return r, fmt.Errorf("%q: no name", arg)
	}
	ns, err := g.ns()
	if err != nil {
		return r, err
	}
	switch {
	case r.namespace == "":
		r.namespace = ns
	case g.namespace != "" && g.namespace != r.namespace:
		return r, fmt.Errorf("%q is in namespace %q, but --namespace says %q: give one", arg, r.namespace, g.namespace)
	}
	if r.kind == api.KindNode {
		r.namespace = ""
	}
	return r, nil
}

// kindList reads "service, job or instance".
func kindList(kinds []api.Kind) string {
	var s []string
	for _, k := range kinds {
		s = append(s, strings.ToLower(string(k)))
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// resolve finds the one object arg names among kinds, the kinds a command
// acts on. A name that says its kind must be one of them; a bare name
// must match exactly one object of those kinds: two (a service and a job
// both named web) is an error naming both, so that no command picks one
// silently.
func (g *globals) resolve(ctx context.Context, c *client.Client, arg string, kinds ...api.Kind) (objRef, error) {
	r, _, err := g.resolveRead(ctx, c, arg, kinds...)
	return r, err
}

// resolveRead is resolve that also returns the object it read to find
// the kind (nil when the argument said its kind): a caller that needs the
// object saves a second read.
func (g *globals) resolveRead(ctx context.Context, c *client.Client, arg string, kinds ...api.Kind) (objRef, api.Object, error) {
	r, err := g.parseRef(arg)
	if err != nil {
		return r, nil, err
	}
	if r.kind != "" {
		for _, k := range kinds {
			if k == r.kind {
				return r, nil, nil
			}
		}
		return r, nil, fmt.Errorf("%s: this command takes a %s", arg, kindList(kinds))
	}
	var found []objRef
	var objs []api.Object
	for _, k := range kinds {
		ns := r.namespace
		if !k.Namespaced() {
			// A node name with a namespace in front names no node.
			if strings.Contains(arg, "/") {
				continue
			}
			ns = ""
		}
		obj, err := getObject(ctx, c, k, ns, r.name)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return r, nil, describeErr(err)
		}
		found = append(found, objRef{kind: k, namespace: ns, name: r.name})
		objs = append(objs, obj)
	}
	switch len(found) {
	case 0:
		return r, nil, fmt.Errorf("no %s named %q in namespace %q: %w", kindList(kinds), r.name, r.namespace, errdefs.ErrNotFound)
	case 1:
		return found[0], objs[0], nil
	}
	var names []string
	for _, f := range found {
		names = append(names, f.String())
	}
	sort.Strings(names)
	return r, nil, fmt.Errorf("%q is ambiguous in namespace %q: it names %s; say which: %s",
		r.name, r.namespace, strings.Join(names, " and "), strings.Join(names, " or "))
}

// getObject reads one object of any kind.
func getObject(ctx context.Context, c *client.Client, kind api.Kind, ns, name string) (api.Object, error) {
	var obj api.Object
	var err error
	switch kind {
	case api.KindService:
		obj, err = c.Services().Get(ctx, ns, name)
	case api.KindJob:
		obj, err = c.Jobs().Get(ctx, ns, name)
	case api.KindInstance:
		obj, err = c.Instances().Get(ctx, ns, name)
	case api.KindNode:
		obj, err = c.Nodes().Get(ctx, "", name)
	case api.KindEvent:
		obj, err = c.Events().Get(ctx, ns, name)
	case api.KindVolume:
		obj, err = c.Volumes().Get(ctx, ns, name)
	case api.KindConfig:
		obj, err = c.Configs().Get(ctx, ns, name)
	case api.KindSecret:
		obj, err = c.Secrets().Get(ctx, ns, name)
	case api.KindCronJob:
		obj, err = c.CronJobs().Get(ctx, ns, name)
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return obj, nil
}

// resolveInstances finds an instance by name, or a service's or job's
// instances, sorted by name.
func (g *globals) resolveInstances(ctx context.Context, c *client.Client, arg string) ([]*api.Instance, error) {
	insts, _, _, err := g.resolveInstancesAt(ctx, c, arg)
	return insts, err
}

// resolveInstancesAt is resolveInstances with the revision of the listing
// (0 for one instance named) and the object arg resolved to.
func (g *globals) resolveInstancesAt(ctx context.Context, c *client.Client, arg string) ([]*api.Instance, int64, objRef, error) {
	r, obj, err := g.resolveRead(ctx, c, arg, api.KindInstance, api.KindService, api.KindJob)
	if err != nil {
		return nil, 0, r, err
	}
	if r.kind == api.KindInstance {
		if in, ok := obj.(*api.Instance); ok {
			return []*api.Instance{in}, 0, r, nil
		}
		in, err := c.Instances().Get(ctx, r.namespace, r.name)
		if err != nil {
			return nil, 0, r, err
		}
		return []*api.Instance{in}, 0, r, nil
	}
	list, rev, err := c.Instances().List(ctx, r.namespace)
	if err != nil {
		return nil, 0, r, err
	}
	out := api.OwnedBy(list, r.kind, r.name)
	if len(out) == 0 {
		return nil, rev, r, fmt.Errorf("%s in namespace %q has %w", r, r.namespace, errNoInstances)
	}
	return out, rev, r, nil
}

// errNoInstances says a service or job has no instances (yet).
var errNoInstances = errors.New("no instances")

// clientFor is the cluster's client and refOf(arg, kind).
func (g *globals) clientFor(ctx context.Context, arg string, kind api.Kind) (c *client.Client, ns, name string, err error) {
	if c, err = g.client(ctx); err != nil {
		return nil, "", "", err
	}
	if ns, name, err = g.refOf(arg, kind); err != nil {
		return nil, "", "", err
	}
	return c, ns, name, nil
}

// refOf reads an argument that names one object of kind: NAME,
// NAMESPACE/NAME or KIND/NAME, in -n's namespace.
func (g *globals) refOf(arg string, kind api.Kind) (ns, name string, err error) {
	r, err := g.parseRef(arg)
	if err != nil {
		return "", "", err
	}
	if r.kind != "" && r.kind != kind {
		return "", "", fmt.Errorf("%s: this command takes a %s", arg, strings.ToLower(string(kind)))
	}
	return r.namespace, r.name, nil
}
