package agent

import (
	"strings"
	"testing"
)

// The ids of an instance's containers and of its network stay valid
// runtime ids, distinct from each other, however long the names are.
func TestMemberIDs(t *testing.T) {
	long := strings.Repeat("n", 63)
	for _, inst := range []*Instance{
		{Namespace: "default", Name: "web-1", UID: "0123456789abcdef"},
		{Namespace: long, Name: long, UID: "0123456789abcdef"},
	} {
		seen := map[string]bool{}
		for _, id := range []string{memberID(inst, "", 0), memberID(inst, "", 1), memberID(inst, "setup", 0),
			memberID(inst, "setup", 1), memberID(inst, long, 0), podNetID(inst)} {
			if len(id) > 64 || seen[id] {
				t.Errorf("%s/%s: id %q (%d characters) too long or not distinct", inst.Namespace, inst.Name, id, len(id))
			}
			seen[id] = true
		}
	}
}
