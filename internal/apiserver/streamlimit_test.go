package apiserver_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// A node's certificate holds at most api.MaxNodeWatches watches open at
// once: the next is refused with a 429 naming the limit, one closed makes
// room again, and another node (or an admin) is not held by the first's.
func TestNodeWatchesHaveACeiling(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	open := func(hc *http.Client) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", c.url+"/v1/instances?watch=1", nil)
		return hc.Do(req)
	}
	nodeHTTP := func(name string) *http.Client {
		cfg, err := c.joinCreds(t, c.url, name).TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		t.Cleanup(hc.CloseIdleConnections)
		return hc
	}
	n1 := nodeHTTP("n1")
	var held []*http.Response
	t.Cleanup(func() {
		for _, r := range held {
			r.Body.Close()
		}
	})
	for i := range api.MaxNodeWatches {
		resp, err := open(n1)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("watch %d of n1: %d, want 200 up to the limit", i+1, resp.StatusCode)
		}
		held = append(held, resp)
	}
	resp, err := open(n1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(b), fmt.Sprint(api.MaxNodeWatches)) {
		t.Fatalf("watch %d of n1: %d %s, want 429 naming the limit %d", api.MaxNodeWatches+1, resp.StatusCode, b, api.MaxNodeWatches)
	}
	if err := errdefs.FromCode("TooManyRequests", resp.StatusCode); err == nil {
		t.Error("the client maps no category to a 429")
	}
	// Another node's watches are its own.
	resp, err = open(nodeHTTP("n2"))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("n2's watch while n1 is at its limit: %v %v", resp, err)
	}
	held = append(held, resp)
	// One of n1's closed makes room for one more, once the server sees it go.
	held[0].Body.Close()
	held = held[1:]
	eventually(t, 10*time.Second, func() bool { // n1's closed watch makes room

		resp, err := open(n1)
		if err != nil {
			return false
		}
		if resp.StatusCode == http.StatusOK {
			held = append(held, resp)
			return true
		}
		resp.Body.Close()
		return false
	})
}
