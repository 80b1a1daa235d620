package apiserver

import (
	"errors"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
)

// A target's offer to take a migration's images directly is followed only
// to the target's own node address: an agent cannot make the source dial
// some other host or service in its name.
func TestMigrationOfferOnlyOnTheTargetsAddress(t *testing.T) {
	ctx := t.Context()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Create(ctx, &api.Node{Metadata: api.Metadata{Name: "n2"}, Spec: api.NodeSpec{Address: "10.1.0.2"}}); err != nil {
		t.Fatal(err)
	}
	s := New(Config{Store: st})
	if err := s.checkOffer(ctx, "n2", "10.1.0.2:41234"); err != nil {
		t.Errorf("the target's own address refused: %v", err)
	}
	for _, addr := range []string{"10.1.0.3:41234", "127.0.0.1:2379", "[::1]:443", "10.1.0.2", ":41234", "n2:41234"} {
		if err := s.checkOffer(ctx, "n2", addr); err == nil {
			t.Errorf("offer %q accepted for node n2 at 10.1.0.2", addr)
		} else if !errors.Is(err, errdefs.ErrForbidden) && addr != "10.1.0.2" {
			t.Errorf("offer %q: %v, want forbidden", addr, err)
		}
	}
	if err := s.checkOffer(ctx, "gone", "10.1.0.2:41234"); !errdefs.IsNotFound(err) {
		t.Errorf("offer of an unknown node: %v, want not found", err)
	}
}
