package store

import (
	"context"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

func TestHostPortConflictRefusedAtApply(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	web := service("web", 1)
	web.Spec.Template.Ports = []api.Port{{Container: 80, Host: 8080}}
	if _, err := s.Apply(ctx, web, 0); err != nil {
		t.Fatal(err)
	}
	// Applying the same service again keeps its own port.
	if _, err := s.Apply(ctx, service("web", 2), 0); err != nil {
		t.Fatal(err)
	}
	web.Spec.Template.Ports = []api.Port{{Container: 80, Host: 8080}}
	if _, err := s.Apply(ctx, web, 0); err != nil {
		t.Fatalf("re-apply of the port's own service: %v", err)
	}
	other := service("api", 1)
	other.Spec.Template.Ports = []api.Port{{Container: 81, Host: 9090, Protocol: "udp"}, {Container: 80, Host: 8080}}
	_, err := s.Apply(ctx, other, 0)
	if !errdefs.IsConflict(err) {
		t.Fatalf("second service on 8080/tcp: got %v, want a conflict", err)
	}
	fe := api.FieldErrors(err)
	if len(fe) != 1 || fe[0].Field != "template.ports[1].host" || !strings.Contains(fe[0].Reason, "default/web") {
		t.Errorf("error names %+v, want template.ports[1].host and service default/web", fe)
	}
	if _, err := Get[api.Service](ctx, s, api.DefaultNamespace, "api"); !errdefs.IsNotFound(err) {
		t.Errorf("refused service was stored: %v", err)
	}
	// The same number over udp is another port.
	other.Spec.Template.Ports = []api.Port{{Container: 80, Host: 8080, Protocol: "udp"}}
	if _, err := s.Apply(ctx, other, 0); err != nil {
		t.Errorf("8080/udp beside 8080/tcp: %v", err)
	}
}
