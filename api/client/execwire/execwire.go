// Package execwire is the message format of an exec's WebSocket: each
// binary message's first byte is its channel and the rest its payload.
// It imports nothing but the standard library's encoding, so that
// internal/cli/preconnect, which reads the answer of an exec sent while
// the binary starts, can use it before net/http initialises;
// api/client gives the same names.
package execwire

// Exec channels: the first byte of each WebSocket message.
const (
	ChanStdin  byte = 0 // client → agent
	ChanStdout byte = 1 // agent → client; with a terminal, all output
	ChanStderr byte = 2 // agent → client
	// ChanExit carries one JSON ExitStatus, the agent's last message.
	ChanExit byte = 3
	// ChanResize carries a JSON TermSize, client → agent.
	ChanResize byte = 4
	// ChanStdinEOF says stdin ended, client → agent.
	ChanStdinEOF byte = 5
)

// ExitStatus is how a command or container ended.
type ExitStatus struct {
	Code int `json:"code"`
	// Error is why it could not run, when it could not.
	Error string `json:"error,omitempty"`
}

// MaxFrame bounds a frame's payload (a log frame's, an exec message's
// after its channel byte); a longer write is split.
const MaxFrame = 1 << 20
