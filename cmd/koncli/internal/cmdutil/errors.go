// Package cmdutil holds what koncli's commands share: the connection flags
// and the lock client built from them, the logger, the parsing of names and
// durations, and the error types through which a command tells package app
// which exit code it ends with. It holds no exit code numbers itself: those
// are defined, and documented, in one place (package app).
package cmdutil

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// UsageError is an error in how koncli was invoked: a wrong number of
// arguments, an unknown flag or command, an invalid name or duration.
// Everything that returns one has contacted no server. It ends koncli with
// the usage exit code and a pointer to the command's --help.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// AsUsage marks err as a usage error; nil stays nil.
func AsUsage(err error) error {
	if err == nil {
		return nil
	}
	return &UsageError{Err: err}
}

// RuntimeError forces the generic error exit code for an error that would
// otherwise map to a more specific one: delete and create refuse a locked
// mutex with an error that matches lock.ErrLocked, but that refusal is not
// the "not acquired" outcome of lock and run.
type RuntimeError struct{ Err error }

func (e *RuntimeError) Error() string { return e.Err.Error() }
func (e *RuntimeError) Unwrap() error { return e.Err }

// ExitCodeError ends koncli with exactly Code; Err says why (and keeps its
// chain for errors.Is). It is how --conflict-exit-code replaces the "not
// acquired" code.
type ExitCodeError struct {
	Code int
	Err  error
}

func (e *ExitCodeError) Error() string { return e.Err.Error() }
func (e *ExitCodeError) Unwrap() error { return e.Err }

// SignalError says that koncli itself was stopped by a signal (SIGINT,
// SIGTERM) before it finished; it exits as a shell reports a process killed
// by that signal.
type SignalError struct {
	Signal os.Signal
	// Err says what was interrupted; may be nil.
	Err error
}

func (e *SignalError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("interrupted by %s %v", SignalName(e.Signal), e.Err)
	}
	return "interrupted by " + SignalName(e.Signal)
}

func (e *SignalError) Unwrap() error { return e.Err }

// ChildExitError says that the command run under `mutex run` exited with a
// non-zero status or was killed by a signal; koncli passes that status on.
// The child has said what it had to say on its own stderr, so this error
// prints nothing.
type ChildExitError struct {
	// Code is the child's exit status, when it exited.
	Code int
	// Signal is the signal that killed the child, when it was killed.
	Signal syscall.Signal
}

func (e *ChildExitError) Error() string {
	if e.Signal != 0 {
		return "command was killed by " + SignalName(e.Signal)
	}
	return fmt.Sprintf("command exited with status %d", e.Code)
}

// ExecError says that the command given to `mutex run` could not be
// started at all: not found, or not executable.
type ExecError struct {
	Path string
	// NotFound: no such file in PATH (or at the path given).
	NotFound bool
	Err      error
}

func (e *ExecError) Error() string {
	if e.NotFound {
		return fmt.Sprintf("command %q not found: %v", e.Path, e.Err)
	}
	return fmt.Sprintf("cannot execute %q: %v", e.Path, e.Err)
}

func (e *ExecError) Unwrap() error { return e.Err }

// SignalName names a signal as shells and kill(1) do: SIGTERM, SIGINT.
func SignalName(s os.Signal) string {
	if sig, ok := s.(syscall.Signal); ok {
		switch sig {
		case syscall.SIGINT:
			return "SIGINT"
		case syscall.SIGTERM:
			return "SIGTERM"
		case syscall.SIGKILL:
			return "SIGKILL"
		case syscall.SIGHUP:
			return "SIGHUP"
		case syscall.SIGQUIT:
			return "SIGQUIT"
		}
		return fmt.Sprintf("signal %d (%s)", int(sig), sig)
	}
	return s.String()
}

// IsUsage reports whether err is a usage error.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

// MessageError replaces the message of Err, which stays in the chain for
// errors.Is and errors.As.
type MessageError struct {
	Msg string
	Err error
}

func (e *MessageError) Error() string { return e.Msg }
func (e *MessageError) Unwrap() error { return e.Err }
