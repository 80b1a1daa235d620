package vip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testing/netnstest"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// newProgrammer programs table in namespace ns until the test ends.
func newProgrammer(t *testing.T, ns, table string) *Programmer {
	t.Helper()
	p, err := New(context.Background(), Config{Table: table, NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// elements reads every map back through netlink, sorted, as one string.
func elements(t *testing.T, p *Programmer) string {
	t.Helper()
	var b strings.Builder
	for _, name := range setOrder {
		es, err := p.conn.GetSetElements(p.sets[name])
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, e := range es {
			lines = append(lines, fmt.Sprintf("%s %x=%x", name, e.Key, e.Val))
		}
		slices.Sort(lines)
		b.WriteString(strings.Join(lines, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

func testServices() []Service {
	return []Service{
		{Name: "default/web", VIP: addr("10.96.0.10"),
			Ports:     []Port{{Name: "http", Protocol: TCP, Port: 80, TargetPort: 8080, HostPort: 30080}, {Name: "dns", Protocol: UDP, Port: 53}},
			Endpoints: eps("10.244.0.2", "10.244.0.3", "10.244.0.4")},
		{Name: "default/db", VIP: addr("10.96.0.11"),
			Ports: []Port{{Protocol: TCP, Port: 5432}}, Endpoints: eps("10.244.0.9")},
		{Name: "default/empty", VIP: addr("10.96.0.12"), Ports: []Port{{Protocol: TCP, Port: 80}}},
	}
}

func TestProgrammerRestartLeavesRulesetIdentical(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	ctx := context.Background()
	ns := netnstest.Host(t, "ns")
	table := "berth-vip-restart"
	p := newProgrammer(t, ns, table)
	if err := p.Sync(ctx, testServices()); err != nil {
		t.Fatal(err)
	}
	before, beforeElems := netnstest.NftTable(t, ns, table), elements(t, p)
	if !strings.Contains(before, "lb_3") || !strings.Contains(before, "numgen random mod 3") {
		t.Fatalf("ruleset lacks lb_3:\n%s", before)
	}

	// A new programmer over the same kernel state: Sync must change nothing.
	p2 := newProgrammer(t, ns, table)
	if err := p2.Sync(ctx, testServices()); err != nil {
		t.Fatal(err)
	}
	if p2.lastOps != 0 {
		t.Fatalf("resync after restart sent %d operations, want 0", p2.lastOps)
	}
	if after := netnstest.NftTable(t, ns, table); after != before {
		t.Fatalf("ruleset changed across restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if after := elements(t, p2); after != beforeElems {
		t.Fatalf("elements changed across restart:\nbefore:\n%s\nafter:\n%s", beforeElems, after)
	}

	// Stale state goes: a restarted agent whose store lost "db".
	svcs := testServices()
	svcs = slices.DeleteFunc(svcs, func(s Service) bool { return s.Name == "default/db" })
	if err := p2.Sync(ctx, svcs); err != nil {
		t.Fatal(err)
	}
	if out := netnstest.NftTable(t, ns, table); strings.Contains(out, "10.96.0.11") {
		t.Fatalf("removed service still programmed:\n%s", out)
	}

	if err := p2.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("nsenter", "--net="+ns, "nft", "list", "tables").CombinedOutput()
	if bytes.Contains(out, []byte(table)) {
		t.Fatalf("table left after Delete: %s", out)
	}
}

func TestProgrammerIncrementalMatchesSync(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	ctx := context.Background()
	ns := netnstest.Host(t, "ns")
	inc := newProgrammer(t, ns, "berth-vip-inc")
	full := newProgrammer(t, ns, "berth-vip-full")

	svcs := testServices()
	for _, s := range svcs {
		if err := inc.UpsertService(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	svcs[0].Endpoints = append(svcs[0].Endpoints, eps("10.244.0.7")...)
	if err := inc.SetEndpoints(ctx, svcs[0].Name, svcs[0].Endpoints); err != nil {
		t.Fatal(err)
	}
	if inc.lastOps > 3*len(groupsOf(svcs[0])) {
		t.Fatalf("one endpoint added: %d operations", inc.lastOps)
	}
	if err := inc.RemoveService(ctx, "default/db"); err != nil {
		t.Fatal(err)
	}
	if err := inc.SetEndpoints(ctx, "default/db", nil); err == nil {
		t.Fatal("SetEndpoints on a removed service succeeded")
	}
	if err := full.Sync(ctx, []Service{svcs[0], svcs[2]}); err != nil {
		t.Fatal(err)
	}
	// Same slots in the same places? Not necessarily: compare what each
	// frontend serves.
	if a, b := served(t, inc), served(t, full); a != b {
		t.Fatalf("incremental and full programming differ:\n%s\nvs\n%s", a, b)
	}
}

// served summarises the kernel state as group → sorted backends.
func served(t *testing.T, p *Programmer) string {
	t.Helper()
	m, err := p.readModel()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for g, s := range m.groups {
		var bs []string
		for _, b := range s {
			bs = append(bs, b.String())
		}
		slices.Sort(bs)
		lines = append(lines, fmt.Sprintf("%v → %v", g, bs))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func TestProgrammerRebuildsAForeignTable(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	ctx := context.Background()
	ns := netnstest.Host(t, "ns")
	table := "berth-vip-foreign"
	out, err := exec.Command("nsenter", "--net="+ns, "nft", "add table ip "+table+"; add chain ip "+table+" stray").CombinedOutput()
	if err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	p := newProgrammer(t, ns, table)
	if err := p.Sync(ctx, testServices()); err != nil {
		t.Fatal(err)
	}
	got := netnstest.NftTable(t, ns, table)
	if strings.Contains(got, "stray") || !strings.Contains(got, chainLayout) {
		t.Fatalf("foreign table not rebuilt:\n%s", got)
	}
}

func TestSyncProgramsAllButTheBadService(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	ctx := context.Background()
	ns := netnstest.Host(t, "ns")
	p := newProgrammer(t, ns, "berth-vip-bad")
	svcs := testServices()
	thief := Service{Name: "default/thief", VIP: svcs[0].VIP, Ports: []Port{{Protocol: TCP, Port: 80}}}
	err := p.Sync(ctx, append(svcs, thief))
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "default/thief") {
		t.Fatalf("Sync: %v, want a conflict naming default/thief", err)
	}
	if got := served(t, p); !strings.Contains(got, "10.96.0.11:5432/tcp") || !strings.Contains(got, "10.96.0.10:80/tcp → [10.244.0.2:8080") {
		t.Fatalf("the good services were not programmed:\n%s", got)
	}
	if _, ok := p.Services()["default/thief"]; ok {
		t.Fatal("rejected service recorded as programmed")
	}
}
