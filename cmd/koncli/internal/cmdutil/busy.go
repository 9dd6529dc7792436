package cmdutil

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/konlease/konlease/lock"
)

// The values of --if-busy: what lock and run do when another holder holds
// the mutex (once --timeout has run out, or at once with --timeout 0).
const (
	// IfBusyFail exits with the "not acquired" status (3, or -E N).
	IfBusyFail = "fail"
	// IfBusySkip exits 0: there was nothing to do. A CronJob's run that
	// skips is then a Job that succeeded, not one that failed.
	IfBusySkip = "skip"
)

// BusyFlags are --if-busy and -E (--conflict-exit-code) of lock and run:
// two ways to say what a busy mutex ends with. --if-busy=skip is the
// readable form of -E 0.
type BusyFlags struct {
	ifBusy string
	code   int
}

// BusyMutex and BusySemaphore say what "busy" is, in the flags' help.
const (
	BusyMutex     = "another holder holds the mutex"
	BusySemaphore = "the semaphore is full"
)

// AddFlags adds --if-busy and -E to cmd; busy says when they apply
// (BusyMutex, BusySemaphore).
func (b *BusyFlags) AddFlags(cmd *cobra.Command, busy string) {
	cmd.Flags().StringVar(&b.ifBusy, "if-busy", IfBusyFail, `when `+busy+`: "fail" (exit 3, or -E N) or "skip" (exit 0, as -E 0)`)
	cmd.Flags().IntVarP(&b.code, "conflict-exit-code", "E", DefaultConflictExitCode, "exit status when "+busy+" (0 to 255); --if-busy=skip is -E 0")
	_ = cmd.RegisterFlagCompletionFunc("if-busy", cobra.FixedCompletions([]string{IfBusyFail, IfBusySkip}, cobra.ShellCompDirectiveNoFileComp))
}

// ExitCode checks the flags and returns the exit status of a busy mutex.
func (b *BusyFlags) ExitCode(cmd *cobra.Command) (int, error) {
	if err := ParseConflictExitCode(b.code); err != nil {
		return 0, err
	}
	switch b.ifBusy {
	case IfBusyFail:
		return b.code, nil
	case IfBusySkip:
		if cmd.Flags().Changed("conflict-exit-code") && b.code != 0 {
			return 0, Usagef("--if-busy=skip exits 0 when another holder holds the mutex, and -E %d exits %d: give one of them", b.code, b.code)
		}
		return 0, nil
	}
	return 0, Usagef(`invalid --if-busy %q: want "fail" or "skip"`, b.ifBusy)
}

// Busy gives a "not acquired: held by someone else" error the exit status
// code (ExitCode's); with 0 it says that the work was skipped. Every other
// error is returned as it is.
func Busy(err error, code int) error {
	var se *SignalError
	if err == nil || !errors.Is(err, lock.ErrLocked) || errors.As(err, &se) {
		return err
	}
	if code == 0 {
		err = &MessageError{Msg: "skipped: " + err.Error(), Err: err}
	}
	return &ExitCodeError{Code: code, Err: err}
}
