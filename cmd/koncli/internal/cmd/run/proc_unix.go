//go:build unix

package run

import (
	"os"
	"syscall"
)

// sysProcAttr puts CMD in its own process group when ownGroup is set, and
// has the kernel kill it if koncli dies (where the kernel can).
func sysProcAttr(ownGroup bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: ownGroup}
	setParentDeathSignal(a)
	return a
}

// signalChild sends sig to CMD's process group when it has its own, else
// to CMD alone.
func signalChild(p *os.Process, ownGroup bool, sig syscall.Signal) error {
	if ownGroup {
		return syscall.Kill(-p.Pid, sig)
	}
	return p.Signal(sig)
}
