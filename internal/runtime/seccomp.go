package runtime

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sync"
	"weak"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
)

// DefaultSeccomp returns Docker's default seccomp profile for a spec; the
// syscalls it allows depend on the process's capabilities.
func DefaultSeccomp(s *specs.Spec) (*specs.LinuxSeccomp, error) {
	p, err := seccomp.GetDefaultProfile(s)
	if err != nil {
		return nil, fmt.Errorf("default seccomp profile: %w", err)
	}
	return p, nil
}

// bpfCache holds compiled filters by profile hash: compiling Docker's
// profile takes milliseconds, and most containers share one profile.
var bpfCache sync.Map

// bpfByProfile holds them by the profile itself as well. A container's
// spec is parsed once (Runtime.spec), so every exec in it passes the same
// profile, which needs no rendering and hashing again (rendering Docker's
// profile to hash it was the most of an exec's preparation). An entry
// goes with its profile.
var bpfByProfile sync.Map // weak.Pointer[specs.LinuxSeccomp] → []byte

// compileSeccomp turns an OCI seccomp profile into a classic BPF program
// for the native architecture, in the layout the kernel's sock_fprog
// expects. The profile must not change once compiled.
func compileSeccomp(p *specs.LinuxSeccomp) ([]byte, error) {
	if p == nil {
		return nil, nil
	}
	wp := weak.Make(p)
	if v, ok := bpfByProfile.Load(wp); ok {
		return v.([]byte), nil
	}
	prog, err := compileSeccompByHash(p)
	if err != nil {
		return nil, err
	}
	if _, loaded := bpfByProfile.LoadOrStore(wp, prog); !loaded {
		runtime.AddCleanup(p, func(wp weak.Pointer[specs.LinuxSeccomp]) { bpfByProfile.Delete(wp) }, wp)
	}
	return prog, nil
}

func compileSeccompByHash(p *specs.LinuxSeccomp) ([]byte, error) {
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	key := sha256.Sum256(raw)
	if v, ok := bpfCache.Load(key); ok {
		return v.([]byte), nil
	}
	prog, err := buildFilter(p)
	if err != nil {
		return nil, err
	}
	bpfCache.Store(key, prog)
	return prog, nil
}

func seccompAction(a specs.LinuxSeccompAction, errno *uint) (libseccomp.ScmpAction, error) {
	ret := int16(1) // EPERM, as Docker
	if errno != nil {
		ret = int16(*errno)
	}
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return libseccomp.ActKillThread, nil
	case specs.ActKillProcess:
		return libseccomp.ActKillProcess, nil
	case specs.ActTrap:
		return libseccomp.ActTrap, nil
	case specs.ActErrno:
		return libseccomp.ActErrno.SetReturnCode(ret), nil
	case specs.ActTrace:
		return libseccomp.ActTrace.SetReturnCode(ret), nil
	case specs.ActAllow:
		return libseccomp.ActAllow, nil
	case specs.ActLog:
		return libseccomp.ActLog, nil
	}
	return libseccomp.ActInvalid, fmt.Errorf("seccomp: unsupported action %q", a)
}

var seccompOps = map[specs.LinuxSeccompOperator]libseccomp.ScmpCompareOp{
	specs.OpNotEqual:     libseccomp.CompareNotEqual,
	specs.OpLessThan:     libseccomp.CompareLess,
	specs.OpLessEqual:    libseccomp.CompareLessOrEqual,
	specs.OpEqualTo:      libseccomp.CompareEqual,
	specs.OpGreaterEqual: libseccomp.CompareGreaterEqual,
	specs.OpGreaterThan:  libseccomp.CompareGreater,
	specs.OpMaskedEqual:  libseccomp.CompareMaskedEqual,
}

func buildFilter(p *specs.LinuxSeccomp) ([]byte, error) {
	def, err := seccompAction(p.DefaultAction, p.DefaultErrnoRet)
	if err != nil {
		return nil, err
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("seccomp: new filter: %w", err)
	}
	defer f.Release()
	// The init sets no_new_privs itself when the spec asks for it.
	if err := f.SetNoNewPrivsBit(false); err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	for _, sc := range p.Syscalls {
		act, err := seccompAction(sc.Action, sc.ErrnoRet)
		if err != nil {
			return nil, err
		}
		if act == def {
			continue
		}
		var conds []libseccomp.ScmpCondition
		for _, a := range sc.Args {
			op, ok := seccompOps[a.Op]
			if !ok {
				return nil, fmt.Errorf("seccomp: unsupported operator %q", a.Op)
			}
			c, err := libseccomp.MakeCondition(a.Index, op, a.Value, a.ValueTwo)
			if err != nil {
				return nil, fmt.Errorf("seccomp: condition on %v: %w", sc.Names, err)
			}
			conds = append(conds, c)
		}
		for _, name := range sc.Names {
			nr, err := libseccomp.GetSyscallFromName(name)
			if err != nil {
				// Syscalls this architecture or libseccomp does not know are skipped, as Docker does.
				continue
			}
			if len(conds) == 0 {
				err = f.AddRule(nr, act)
			} else {
				err = f.AddRuleConditional(nr, act, conds)
			}
			if err != nil {
				return nil, fmt.Errorf("seccomp: rule for %s: %w", name, err)
			}
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	defer r.Close()
	done := make(chan []byte, 1)
	go func() {
		var buf []byte
		chunk := make([]byte, 65536)
		for {
			n, err := r.Read(chunk)
			buf = append(buf, chunk[:n]...)
			if err != nil {
				break
			}
		}
		done <- buf
	}()
	err = f.ExportBPF(w)
	w.Close()
	prog := <-done
	if err != nil {
		return nil, fmt.Errorf("seccomp: export filter: %w", err)
	}
	if len(prog) == 0 || len(prog)%8 != 0 {
		return nil, fmt.Errorf("seccomp: exported filter has %d bytes", len(prog))
	}
	return prog, nil
}
