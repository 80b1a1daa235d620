package cli

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

// The forms docker run takes, read once for both commands; bad ones are
// refused alike, naming the flag and the value.
func TestParsePortSpec(t *testing.T) {
	for _, tc := range []struct {
		spec string
		ctr  runtime.Port
		svc  api.Port
		// svcErr: the service refuses what only a container can have.
		err, svcErr string
	}{
		{spec: "8080:80", ctr: runtime.Port{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, svc: api.Port{Host: 8080, Container: 80, Protocol: "tcp"}},
		{spec: "8080:80/tcp", ctr: runtime.Port{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, svc: api.Port{Host: 8080, Container: 80, Protocol: "tcp"}},
		{spec: "5353:53/udp", ctr: runtime.Port{HostPort: 5353, ContainerPort: 53, Protocol: "udp"}, svc: api.Port{Host: 5353, Container: 53, Protocol: "udp"}},
		{spec: "0.0.0.0:8080:80", ctr: runtime.Port{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, svc: api.Port{Host: 8080, Container: 80, Protocol: "tcp"}},
		// A container's port alone: a host port of the kernel's pick for a container, exposed only for a service.
		{spec: "80", ctr: runtime.Port{ContainerPort: 80, Protocol: "tcp"}, svc: api.Port{Container: 80, Protocol: "tcp"}},
		{spec: "53/udp", ctr: runtime.Port{ContainerPort: 53, Protocol: "udp"}, svc: api.Port{Container: 53, Protocol: "udp"}},
		{spec: "127.0.0.1:8080:80", ctr: runtime.Port{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, svcErr: "every address"},
		{spec: "127.0.0.1::80/udp", ctr: runtime.Port{HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "udp"}, svcErr: "every address"},
		{spec: ":80", ctr: runtime.Port{ContainerPort: 80, Protocol: "tcp"}, svcErr: "not picked"},
		{spec: "0.0.0.0::80", ctr: runtime.Port{ContainerPort: 80, Protocol: "tcp"}, svcErr: "not picked"},
		{spec: "80:abc", err: "container port"},
		{spec: "0:80", err: "host port"},
		{spec: "80:0", err: "container port"},
		{spec: "70000:80", err: "host port"},
		{spec: "8000-8001:80", err: "ranges"},
		{spec: "8080:80/sctp", err: "sctp"},
		{spec: "8080:80/icmp", err: "protocol"},
		{spec: "localhost:8080:80", err: "IPv4"},
		{spec: "[::1]:8080:80", err: "IPv4"},
		{spec: "::1:80:80", err: "IPv4"},
		{spec: "", err: "container port"},
	} {
		named := func(err error, want string) bool {
			return err != nil && strings.Contains(err.Error(), want) && strings.Contains(err.Error(), `-p "`+tc.spec+`"`)
		}
		ctr, err := containerPort(tc.spec)
		switch {
		case tc.err != "":
			if !named(err, tc.err) {
				t.Errorf("container -p %q: error %v, want one naming the flag and %q", tc.spec, err, tc.err)
			}
		case err != nil || ctr != tc.ctr:
			t.Errorf("container -p %q: %+v, %v; want %+v", tc.spec, ctr, err, tc.ctr)
		}
		svc, err := servicePort(tc.spec)
		switch {
		case tc.err != "" || tc.svcErr != "":
			if !named(err, tc.err+tc.svcErr) {
				t.Errorf("service -p %q: error %v, want one naming the flag and %q", tc.spec, err, tc.err+tc.svcErr)
			}
		case err != nil || svc != tc.svc:
			t.Errorf("service -p %q: %+v, %v; want %+v", tc.spec, svc, err, tc.svc)
		}
	}
	if _, err := parsePublishes([]string{"8080:80", "127.0.0.1:8080:81"}); err == nil || !strings.Contains(err.Error(), "8080/tcp") {
		t.Errorf("the same host port twice: %v", err)
	}
	if ps, err := parsePublishes([]string{"8080:80", "8080:80/udp", "9090:80"}); err != nil || len(ps) != 3 {
		t.Errorf("tcp and udp on one port, one container port twice: %v %v", ps, err)
	}
}
