//go:build !unix

package run

import (
	"os"
	"syscall"
)

// sysProcAttr: no process groups here.
func sysProcAttr(bool) *syscall.SysProcAttr { return nil }

// signalChild signals CMD alone; without POSIX signals, anything but an
// interrupt kills it.
func signalChild(p *os.Process, _ bool, sig syscall.Signal) error {
	if sig == syscall.SIGINT {
		return p.Signal(os.Interrupt)
	}
	return p.Kill()
}
