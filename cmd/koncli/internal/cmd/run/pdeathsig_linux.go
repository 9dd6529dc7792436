package run

import "syscall"

// setParentDeathSignal makes the kernel SIGKILL CMD if koncli dies (even by
// SIGKILL): nobody would renew the lock or stop CMD when it is lost, so CMD
// must not outlive koncli.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
