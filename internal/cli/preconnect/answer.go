package preconnect

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"strings"

	"github.com/berth-dev/berth/api/client/execwire"
)

// The answer of an exec sent ahead is read here while the binary starts,
// and when all of it is in (the WebSocket's acceptance, the command's
// output, its exit status) before main has taken the exec over, the
// process relays it and exits with the command's code at once: the
// initialisers still to run, some 10 ms, would only delay it. Anything
// else is left to main, which reads the same bytes the usual way
// (api/client over coder/websocket): an error answer, a status with an
// error, a control frame, an answer not whole before main takes it.
// The answer reader here takes only the few forms the agent's messages
// come in, and leaves the rest.

// maxEarly bounds the answer read ahead: a command with more output
// than this is relayed by main.
const maxEarly = 256 << 10

// early is what an answer read so far says.
type early int

const (
	earlyPartial early = iota // more is to come
	earlyDone                 // whole: outs, then the exit code
	earlyNot                  // not for the reader here: main reads it
)

// output is one message of the command's output.
type output struct {
	stderr bool
	p      []byte
}

// readEarly reads the answer in b to the upgrade request with
// Sec-WebSocket-Key key: a 101 that accepts the key with no extension
// or subprotocol, then unmasked, unfragmented binary messages of
// stdout, stderr and finally an exit status with no error.
func readEarly(b []byte, key string) (st early, outs []output, code int) {
	head, rest, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok {
		if len(b) > 16<<10 {
			return earlyNot, nil, 0
		}
		return earlyPartial, nil, 0
	}
	if !acceptsUpgrade(string(head), key) {
		return earlyNot, nil, 0
	}
	for len(rest) > 0 {
		if len(rest) < 2 {
			return earlyPartial, nil, 0
		}
		// FIN and the binary opcode, no reserved bits; no mask from a server.
		if rest[0] != 0x82 || rest[1]&0x80 != 0 {
			return earlyNot, nil, 0
		}
		n, hl := uint64(rest[1]&0x7f), 2
		switch n {
		case 126:
			if len(rest) < 4 {
				return earlyPartial, nil, 0
			}
			n, hl = uint64(binary.BigEndian.Uint16(rest[2:])), 4
		case 127:
			if len(rest) < 10 {
				return earlyPartial, nil, 0
			}
			n, hl = binary.BigEndian.Uint64(rest[2:]), 10
		}
		if n > execwire.MaxFrame+1 {
			return earlyNot, nil, 0
		}
		if uint64(len(rest)-hl) < n {
			return earlyPartial, nil, 0
		}
		msg := rest[hl : hl+int(n)]
		rest = rest[hl+int(n):]
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case execwire.ChanStdout, execwire.ChanStderr:
			outs = append(outs, output{stderr: msg[0] == execwire.ChanStderr, p: msg[1:]})
		case execwire.ChanExit:
			var es execwire.ExitStatus
			if json.Unmarshal(msg[1:], &es) != nil || es.Error != "" {
				return earlyNot, nil, 0
			}
			return earlyDone, outs, es.Code
		default:
			return earlyNot, nil, 0
		}
	}
	return earlyPartial, nil, 0
}

// acceptsUpgrade says whether head, an answer's status line and
// headers, switches to a WebSocket for key, with no extension or
// subprotocol, as RFC 6455 (4.1) has a client check.
func acceptsUpgrade(head, key string) bool {
	lines := strings.Split(head, "\r\n")
	if !strings.HasPrefix(lines[0], "HTTP/1.1 101 ") {
		return false
	}
	var upgrade, connection, acc bool
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			return false
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "upgrade":
			upgrade = strings.EqualFold(value, "websocket")
		case "connection":
			for _, t := range strings.Split(value, ",") {
				connection = connection || strings.EqualFold(strings.TrimSpace(t), "upgrade")
			}
		case "sec-websocket-accept":
			acc = value == AcceptKey(key)
		case "sec-websocket-extensions", "sec-websocket-protocol":
			return false
		}
	}
	return upgrade && connection && acc
}

// AcceptKey is RFC 6455's Sec-WebSocket-Accept of key.
func AcceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}
