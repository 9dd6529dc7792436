package cmdutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/ttl"
)

// ExactArgs requires one positional argument per name in names (as shown
// in the usage line, e.g. "NAME").
func ExactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		want := strings.Join(names, " ")
		if len(args) < len(names) {
			return Usagef("%q needs %s", cmd.CommandPath(), want)
		}
		return Usagef("%q takes only %s; unexpected %q", cmd.CommandPath(), want, strings.Join(args[len(names):], " "))
	}
}

// NoArgs is for commands that take no positional argument; for a command
// with subcommands, an argument is an unknown subcommand.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.HasAvailableSubCommands() {
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2 // cobra's own default, applied only in its Find
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf("; did you mean %q?", s[0])
		}
		return Usagef("%s", msg)
	}
	return Usagef("%q takes no arguments; unexpected %q", cmd.CommandPath(), strings.Join(args, " "))
}

// ValidateName checks a mutex name before anything is sent.
func ValidateName(name string) error {
	return AsUsage(lock.ValidateName(name))
}

// ParseTimeout parses --timeout: a Go duration, zero or positive. Zero means
// a single attempt.
func ParseTimeout(flag, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, Usagef("invalid --%s %q: not a Go duration; want e.g. \"30s\", \"5m\", or \"0\" for a single attempt", flag, s)
	}
	if d < 0 {
		return 0, Usagef("invalid --%s %q: must not be negative", flag, s)
	}
	return d, nil
}

// ParseDuration parses a non-negative Go duration for a flag other than
// --timeout and --ttl.
func ParseDuration(flag, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, Usagef("invalid --%s %q: not a Go duration; want e.g. \"10s\" or \"1m\"", flag, s)
	}
	if d < 0 {
		return 0, Usagef("invalid --%s %q: must not be negative", flag, s)
	}
	return d, nil
}

// ParseTTL parses --ttl with the TTL rules of package ttl (1s to one year).
// The error names the flag, quotes the input and states the rule, as
// ParseTimeout's do: `invalid --ttl "0": is zero; ...`; it still matches
// ttl.ErrInvalid.
func ParseTTL(s string) (time.Duration, error) {
	d, err := ttl.Parse(s)
	if err != nil {
		var pe *ttl.ParseError
		if errors.As(err, &pe) {
			return 0, AsUsage(&MessageError{Msg: fmt.Sprintf("invalid --ttl %q: %s", pe.Input, pe.Reason), Err: err})
		}
		return 0, Usagef("invalid --ttl %q: %w", s, err)
	}
	return d, nil
}

// Holder returns the holder identity: flag if set, else the host name,
// which in a pod is the pod's name. suffix, if not empty, is appended
// after a dash (run adds its pid so that several runs on one host are
// different holders). The result is validated.
func Holder(flag string, changed bool, suffix string) (string, error) {
	if changed {
		if err := lock.ValidateHolder(flag); err != nil {
			return "", Usagef("invalid --holder: %w", err)
		}
		return flag, nil
	}
	host, err := os.Hostname()
	if err == nil && host == "" {
		err = errors.New("it is empty")
	}
	if err != nil {
		return "", Usagef("cannot determine the host name for the default holder identity (%w); pass --holder", err)
	}
	h := host
	if suffix != "" {
		h = host + "-" + suffix
		if over := len(h) - lock.MaxHolderLength; over > 0 && over < len(host) {
			h = host[:len(host)-over] + "-" + suffix
		}
	}
	if err := lock.ValidateHolder(h); err != nil {
		return "", Usagef("the host name does not make a valid holder identity (%w); pass --holder", err)
	}
	return h, nil
}

// StopSignals are the signals that end a wait for a mutex (and that run
// passes on to its command): Ctrl-C, kill, and a closed terminal.
var StopSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// SignalContext returns a context that is cancelled, with a *SignalError
// as its cause, on the first of StopSignals. stop releases the signals (a
// second signal then kills koncli the default way).
func SignalContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, StopSignals...)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			cancel(&SignalError{Signal: s})
			signal.Stop(sigs)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(context.Canceled)
	}
}

// Interrupted returns the *SignalError that cancelled ctx, if a signal did.
func Interrupted(ctx context.Context) *SignalError {
	if se, ok := context.Cause(ctx).(*SignalError); ok {
		return se
	}
	return nil
}

// Ref names a mutex as namespace/name in messages.
func Ref(namespace, name string) string { return namespace + "/" + name }

// FormatTime formats a time for people and scripts alike: RFC 3339 in UTC.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// HoldDescription names a mutex's holder and its hold for messages about
// an eviction: `"w1" (token 3, locked at 2026-01-02T03:04:05Z)`.
func HoldDescription(st lock.Status) string {
	return fmt.Sprintf("%q (token %d, locked at %s)", st.Holder, st.Token, FormatTime(st.LockedAt))
}

// ParseLimit checks --limit: a semaphore's limit, 1 to lock.MaxLimit.
func ParseLimit(value string) (int, error) {
	n, err := strconv.Atoi(value)
	if err != nil || n < 1 || n > lock.MaxLimit {
		return 0, Usagef("invalid --limit %q: the most holders at once, a whole number from 1 to %d", value, lock.MaxLimit)
	}
	return n, nil
}
