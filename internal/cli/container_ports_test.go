package cli

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/runtime"
)

func TestParsePublish(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want runtime.Port
		err  string
	}{
		{spec: "8080:80", want: runtime.Port{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}},
		{spec: "8080:80/tcp", want: runtime.Port{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}},
		{spec: "5353:53/udp", want: runtime.Port{HostPort: 5353, ContainerPort: 53, Protocol: "udp"}},
		{spec: "127.0.0.1:8080:80", want: runtime.Port{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}},
		{spec: "0.0.0.0:8080:80", want: runtime.Port{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}},
		{spec: "127.0.0.1::80/udp", want: runtime.Port{HostIP: "127.0.0.1", ContainerPort: 80, Protocol: "udp"}},
		{spec: "80", want: runtime.Port{ContainerPort: 80, Protocol: "tcp"}},
		{spec: "80:abc", err: "container port"},
		{spec: "0:80", err: "host port"},
		{spec: "70000:80", err: "host port"},
		{spec: "8000-8001:80", err: "ranges"},
		{spec: "8080:80/sctp", err: "sctp"},
		{spec: "8080:80/icmp", err: "protocol"},
		{spec: "localhost:8080:80", err: "IPv4"},
		{spec: "[::1]:8080:80", err: "IPv4"},
		{spec: "", err: "container port"},
	} {
		got, err := parsePublish(tc.spec)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), `-p "`+tc.spec+`"`) {
				t.Errorf("-p %q: error %v, want one naming the flag and %q", tc.spec, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("-p %q: %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	if _, err := parsePublishes([]string{"8080:80", "127.0.0.1:8080:81"}); err == nil || !strings.Contains(err.Error(), "8080/tcp") {
		t.Errorf("the same host port twice: %v", err)
	}
	if ps, err := parsePublishes([]string{"8080:80", "8080:80/udp", "9090:80"}); err != nil || len(ps) != 3 {
		t.Errorf("tcp and udp on one port, one container port twice: %v %v", ps, err)
	}
}
