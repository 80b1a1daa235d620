package client

import (
	"bytes"
	"io"
	"net/url"
	"strings"
	"testing"
)

// Frames written from two streams, one write larger than a frame, come
// back apart and whole; a body cut mid-frame is an error.
func TestFramesRoundTrip(t *testing.T) {
	var wire bytes.Buffer
	fw := NewFrameWriter(&wire, nil)
	big := strings.Repeat("x", MaxFrame+10)
	_, _ = io.WriteString(fw.Stream(StreamStdout), "out 1\n")
	_, _ = io.WriteString(fw.Stream(StreamStderr), "err 1\n")
	_, _ = io.WriteString(fw.Stream(StreamStdout), big)
	if err := fw.WriteFrame(StreamStatus, []byte(`{"code":3}`)); err != nil {
		t.Fatal(err)
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	raw := wire.Bytes()
	var out, errOut bytes.Buffer
	var status string
	if err := ReadFrames(bytes.NewReader(raw), &out, &errOut, func(b []byte) { status = string(b) }); err != nil {
		t.Fatal(err)
	}
	if out.String() != "out 1\n"+big || errOut.String() != "err 1\n" || status != `{"code":3}` {
		t.Fatalf("stdout %d bytes, stderr %q, status %q", out.Len(), errOut.String(), status)
	}
	if err := ReadFrames(bytes.NewReader(raw[:len(raw)-3]), io.Discard, io.Discard, nil); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut body: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestParseLogOptionsNamesBadParameters(t *testing.T) {
	for q, field := range map[string]string{"tail=-1": "tail", "tail=x": "tail", "since=yesterday": "since"} {
		vals, _ := url.ParseQuery(q)
		if _, err := ParseLogOptions(vals); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v, want an error naming %s", q, err, field)
		}
	}
}
