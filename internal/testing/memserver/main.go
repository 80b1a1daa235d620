// Command memserver is a stateful server for migration tests and
// benchmarks: it holds -mb MiB of pseudo-random memory and a counter
// that grows every 10 ms, and answers HTTP on -addr:
//
//	GET /     "COUNT UNIXNANO\n": the counter, and the time of the answer
//	GET /sum  "SHA256\n" of the memory, computed now
//
// A restart shows as the counter starting over; lost memory as another sum.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

func main() {
	mb := flag.Int("mb", 100, "MiB of memory to hold")
	addr := flag.String("addr", ":80", "address to listen on")
	flag.Parse()
	mem := make([]byte, *mb<<20)
	// xorshift64: every page differs, so none is left out as zero or merged.
	x := uint64(88172645463325252)
	for i := 0; i+8 <= len(mem); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(mem[i:], x)
	}
	var count atomic.Int64
	go func() {
		for range time.Tick(10 * time.Millisecond) {
			count.Add(1)
		}
	}()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d %d\n", count.Load(), time.Now().UnixNano())
	})
	http.HandleFunc("/sum", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%x\n", sha256.Sum256(mem))
	})
	// Go listens with multipath TCP where the kernel has it, and CRIU
	// cannot dump MPTCP sockets ("Unsupported proto 262").
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.Serve(ln, nil))
}
