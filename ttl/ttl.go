package ttl

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
	"unicode"
)

const (
	// Min is the shortest TTL a mutex may have.
	Min = time.Second
	// Max is the longest TTL a mutex may have (one year). Anything longer is
	// taken to be a typo.
	Max = 8760 * time.Hour
)

// ErrInvalid is wrapped by every error returned from [Parse] and [Validate];
// test for it with errors.Is.
var ErrInvalid = errors.New("invalid TTL")

// Human-readable forms of the limits, used in error messages.
const (
	minText = "1s"
	maxText = "8760h (one year)"
)

// bareNumber matches inputs that are a number without a unit, such as "30"
// or "1.5", so that Parse can suggest the missing "s".
var bareNumber = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$`)

// Parse parses a TTL given by a user or read from an annotation: a Go
// duration ("30s", "5m", "1h30m", "1.5s") between [Min] and [Max] inclusive.
//
// Input is taken literally: surrounding or embedded white space is an error,
// not trimmed, and so is a number without a unit ("30"). Every error quotes
// the input, states the rule it broke and wraps [ErrInvalid]; it is a
// *[ParseError].
func Parse(s string) (time.Duration, error) {
	if s == "" {
		return 0, invalidString(s, `empty; want a duration such as "30s", "5m" or "1h30m"`)
	}
	if strings.ContainsFunc(s, unicode.IsSpace) {
		reason := "contains white space; write the duration without spaces"
		if squeezed := strings.Join(strings.Fields(s), ""); squeezed != "" {
			if _, err := Parse(squeezed); err == nil {
				reason += fmt.Sprintf(", e.g. %q", squeezed)
			}
		}
		return 0, invalidString(s, reason)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if bareNumber.MatchString(s) {
			if _, err := Parse(s + "s"); err == nil {
				return 0, invalidString(s, fmt.Sprintf("missing unit; did you mean %q?", s+"s"))
			}
			return 0, invalidString(s, `missing unit; use "s", "m" or "h", e.g. "30s"`)
		}
		return 0, invalidString(s, `not a Go duration; want e.g. "30s", "5m" or "1h30m"`)
	}
	if reason := rangeProblem(d); reason != "" {
		return 0, invalidString(s, reason)
	}
	return d, nil
}

// Validate reports whether d is an acceptable TTL: [Min] <= d <= [Max]. The
// error, if any, wraps [ErrInvalid].
func Validate(d time.Duration) error {
	if reason := rangeProblem(d); reason != "" {
		return fmt.Errorf("%w %s: %s", ErrInvalid, d, reason)
	}
	return nil
}

// rangeProblem returns why d is out of range, or "" if it is a valid TTL.
func rangeProblem(d time.Duration) string {
	switch {
	case d == 0:
		return "is zero; a TTL must be at least " + minText
	case d < 0:
		return "is negative; a TTL must be at least " + minText
	case d < Min:
		return "below the minimum of " + minText
	case d > Max:
		return "above the maximum of " + maxText
	}
	return ""
}

// ParseError is the error of [Parse]: the input and the rule it broke,
// apart, so that a caller can name where the input came from ("invalid
// --ttl "0": is zero; ...") without repeating "invalid TTL". It matches
// [ErrInvalid] with errors.Is.
type ParseError struct {
	// Input is the string given to Parse.
	Input string
	// Reason states the rule Input broke, and a fix where there is one.
	Reason string
}

// Error reads `invalid TTL "INPUT": REASON`.
func (e *ParseError) Error() string {
	return fmt.Sprintf("%s %q: %s", ErrInvalid, e.Input, e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ParseError) Is(target error) bool { return target == ErrInvalid }

func invalidString(s, reason string) error {
	return &ParseError{Input: s, Reason: reason}
}

// Format returns the canonical annotation value for d, which is d.String().
// Parse(Format(d)) == d for every valid d.
func Format(d time.Duration) string {
	return d.String()
}

// LeaseDurationSeconds returns d rounded up to whole seconds, the value for
// a Lease's spec.leaseDurationSeconds. It is meant for valid TTLs only; any
// other d is clamped into [1, math.MaxInt32] so the result is never a value
// the API server would reject.
func LeaseDurationSeconds(d time.Duration) int32 {
	if d <= 0 {
		return 1
	}
	s := d / time.Second
	if d%time.Second != 0 {
		s++
	}
	if s > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(s)
}

// RenewInterval returns how often a holder renews a mutex with TTL d: d/3.
func RenewInterval(d time.Duration) time.Duration {
	return d / 3
}

// HolderMargin returns how long before d has passed since its last
// successful write was sent a holder gives the mutex up: d/10.
func HolderMargin(d time.Duration) time.Duration {
	return d / 10
}

// HolderDeadline returns the local time after which a holder must consider
// the mutex lost: sent + d - HolderMargin(d), where sent is the local clock
// reading taken just before the holder sent its last successful write. If
// sent carries a monotonic clock reading, so does the result.
func HolderDeadline(sent time.Time, d time.Duration) time.Time {
	return sent.Add(d - HolderMargin(d))
}
