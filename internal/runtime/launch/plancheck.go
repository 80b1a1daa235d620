package launch

// #include <stdlib.h>
// #include "plan.h"
import "C"

import (
	"errors"
	"unsafe"
)

// decodeInC reads raw with the reader the C stages use and returns the
// plan as they see it (plan_dump's text), so tests can hold both sides of
// the format to one another.
func decodeInC(raw []byte) (string, error) {
	buf := C.malloc(C.size_t(len(raw) + 1))
	defer C.free(buf)
	copy(unsafe.Slice((*byte)(buf), len(raw)), raw)
	p := (*C.struct_plan)(C.calloc(1, C.sizeof_struct_plan))
	defer C.free(unsafe.Pointer(p))
	var msg [1024]C.char
	if C.plan_read((*C.char)(buf), C.size_t(len(raw)), p, &msg[0], C.size_t(len(msg))) < 0 {
		return "", errors.New(C.GoString(&msg[0]))
	}
	const size = 8 << 20
	out := (*C.char)(C.malloc(size))
	defer C.free(unsafe.Pointer(out))
	n := C.plan_dump(p, out, size)
	if n < 0 {
		return "", errors.New("plan_dump: output too large")
	}
	return C.GoStringN(out, n), nil
}
