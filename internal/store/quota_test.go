package store

import "testing"

// The embedded member takes writes up to an 8 GiB database, not etcd's
// default 2 GiB, which an hour of history of a large cluster's scale down
// and up passes (then etcd takes no writes at all).
func TestEmbeddedQuotaIs8GiB(t *testing.T) {
	s := openStore(t)
	st, err := s.client.Status(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if st.DbSizeQuota != 8<<30 {
		t.Fatalf("etcd reports a quota of %d bytes, want 8 GiB", st.DbSizeQuota)
	}
}
