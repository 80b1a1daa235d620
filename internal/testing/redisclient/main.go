// Command redisclient GETs one key from a Redis server in a loop, for
// migration tests and benchmarks: every -every it sends GET over one
// connection, connecting again when the connection fails, and appends a
// line per request to -out:
//
//	OK UNIXNANO          the value, the same as the first answer's
//	BAD UNIXNANO         another value, or none: data was lost
//	ERR UNIXNANO REASON  no answer (the connection is dropped and made again)
//
// It stops when the file -stop exists. It speaks just enough RESP for GET.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6379", "the server")
	key := flag.String("key", "key:1", "the key to GET")
	out := flag.String("out", "/tmp/poll", "where the lines go")
	stop := flag.String("stop", "/tmp/stop", "stop once this file exists")
	every := flag.Duration("every", time.Millisecond, "time between requests")
	flag.Parse()
	f, err := os.OpenFile(*out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	req := fmt.Sprintf("*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(*key), *key)
	var (
		conn net.Conn
		rd   *bufio.Reader
		want []byte
	)
	for {
		if _, err := os.Stat(*stop); err == nil {
			return
		}
		if conn == nil {
			if conn, err = net.DialTimeout("tcp", *addr, time.Second); err != nil {
				fmt.Fprintf(f, "ERR %d dial: %v\n", time.Now().UnixNano(), err)
				conn = nil
				time.Sleep(*every)
				continue
			}
			rd = bufio.NewReader(conn)
		}
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		v, err := get(conn, rd, req)
		now := time.Now().UnixNano()
		switch {
		case err != nil:
			fmt.Fprintf(f, "ERR %d %v\n", now, err)
			conn.Close()
			conn = nil
		case v == nil || (want != nil && !bytes.Equal(v, want)):
			fmt.Fprintf(f, "BAD %d\n", now)
		default:
			want = v
			fmt.Fprintf(f, "OK %d\n", now)
		}
		time.Sleep(*every)
	}
}

// get sends req and reads a bulk string reply: nil for a missing key.
func get(conn net.Conn, rd *bufio.Reader, req string) ([]byte, error) {
	if _, err := io.WriteString(conn, req); err != nil {
		return nil, err
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[0] != '$' {
		return nil, fmt.Errorf("reply %q", line)
	}
	n, err := strconv.Atoi(line[1 : len(line)-2])
	if err != nil {
		return nil, fmt.Errorf("reply %q", line)
	}
	if n < 0 {
		return nil, nil
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(rd, b); err != nil {
		return nil, err
	}
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		return nil, errors.New("bulk reply without its CRLF")
	}
	return b[:n], nil
}
