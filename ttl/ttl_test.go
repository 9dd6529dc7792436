package ttl

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"1s", time.Second},
		{"30s", 30 * time.Second},
		{"5m", 5 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"1.5s", 1500 * time.Millisecond},
		{"8760h", Max},
		{"1000ms", time.Second},
		{"5m0s", 5 * time.Minute},
		{"+5m", 5 * time.Minute}, // a Go duration; the sign is allowed
		{"1.s", time.Second},
		{"525600m", Max},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q) error = %v, want nil", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		in       string
		fragment string // must occur in the error message
	}{
		{"", `invalid TTL "": empty`},
		{"0", `"0": is zero`},
		{"0s", `"0s": is zero`},
		{"-0s", `is zero`},
		{"-1s", `"-1s": is negative`},
		{"-1h", `is negative`},
		{"abc", `"abc": not a Go duration`},
		{"30", `"30": missing unit; did you mean "30s"?`},
		{"1.5", `did you mean "1.5s"?`},
		{"0.5", `missing unit; use "s", "m" or "h"`}, // "0.5s" is invalid too: no suggestion
		{"-30", `missing unit; use`},
		{"500ms", `"500ms": below the minimum of 1s`},
		{"999ms", `below the minimum of 1s`},
		{"999999999ns", `below the minimum of 1s`},
		{".5s", `below the minimum`},
		{"8761h", `"8761h": above the maximum of 8760h (one year)`},
		{"8760h0m0.000000001s", `above the maximum`},
		{"100000h", `above the maximum`},
		{" 5m", `" 5m": contains white space; write the duration without spaces, e.g. "5m"`},
		{"5m ", `"5m ": contains white space`},
		{"5 m", `e.g. "5m"`},
		{"5m\n", `contains white space`},
		{"\t", `contains white space; write the duration without spaces`},
		{"1e3s", `"1e3s": not a Go duration`}, // decided: no exponent notation
		{"1e3", `not a Go duration`},
		{"30S", `not a Go duration`},
		{"5min", `not a Go duration`},
		{"1d", `not a Go duration`},
		{"9999999999999999h", `not a Go duration`}, // overflows int64 nanoseconds
		{"s", `not a Go duration`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %v, nil; want error containing %q", tt.in, got, tt.fragment)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) error %q does not wrap ErrInvalid", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.fragment) {
				t.Errorf("Parse(%q) error = %q, want it to contain %q", tt.in, err, tt.fragment)
			}
			// The parts, for callers that name the input's source
			// themselves: the message is exactly "invalid TTL", the quoted
			// input and the reason.
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Input != tt.in || pe.Reason == "" ||
				err.Error() != fmt.Sprintf("invalid TTL %q: %s", tt.in, pe.Reason) {
				t.Errorf("Parse(%q) error %#v: want a *ParseError of the input and its reason", tt.in, err)
			}
			if got != 0 {
				t.Errorf("Parse(%q) returned %v with an error, want 0", tt.in, got)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		d        time.Duration
		fragment string // "" means valid
	}{
		{Min, ""},
		{Max, ""},
		{30 * time.Second, ""},
		{0, "invalid TTL 0s: is zero"},
		{-time.Second, "invalid TTL -1s: is negative"},
		{Min - 1, "below the minimum of 1s"},
		{Max + 1, "above the maximum of 8760h (one year)"},
		{math.MaxInt64, "above the maximum"},
		{math.MinInt64, "is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.d.String(), func(t *testing.T) {
			err := Validate(tt.d)
			if tt.fragment == "" {
				if err != nil {
					t.Fatalf("Validate(%v) = %v, want nil", tt.d, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%v) = nil, want error containing %q", tt.d, tt.fragment)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate(%v) error %q does not wrap ErrInvalid", tt.d, err)
			}
			if !strings.Contains(err.Error(), tt.fragment) {
				t.Errorf("Validate(%v) = %q, want it to contain %q", tt.d, err, tt.fragment)
			}
		})
	}
}

func TestFormatRoundTrip(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{Min, "1s"},
		{1500 * time.Millisecond, "1.5s"},
		{30 * time.Second, "30s"},
		{5 * time.Minute, "5m0s"},
		{90 * time.Minute, "1h30m0s"},
		{Max, "8760h0m0s"},
		{time.Second + time.Nanosecond, "1.000000001s"},
		{Max - time.Nanosecond, "8759h59m59.999999999s"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got := Format(tt.d)
			if got != tt.want {
				t.Errorf("Format(%d) = %q, want %q", tt.d, got, tt.want)
			}
			back, err := Parse(got)
			if err != nil || back != tt.d {
				t.Errorf("Parse(Format(%d)) = %d, %v; want %d, nil", tt.d, back, err, tt.d)
			}
		})
	}
}

func TestLeaseDurationSeconds(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int32
	}{
		{time.Second, 1},
		{1500 * time.Millisecond, 2},
		{time.Second + time.Nanosecond, 2},
		{2*time.Second - time.Nanosecond, 2},
		{time.Minute, 60},
		{90 * time.Minute, 5400},
		{Max, 31_536_000},
		// Out of range: clamped, never rejected by the API server.
		{0, 1},
		{-time.Hour, 1},
		{time.Nanosecond, 1},
		{math.MaxInt64, math.MaxInt32},
	}
	for _, tt := range tests {
		t.Run(tt.d.String(), func(t *testing.T) {
			if got := LeaseDurationSeconds(tt.d); got != tt.want {
				t.Errorf("LeaseDurationSeconds(%v) = %d, want %d", tt.d, got, tt.want)
			}
		})
	}
}

func TestHolderSchedule(t *testing.T) {
	sent := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		d                    time.Duration
		renew, margin        time.Duration
		deadlineAfterSending time.Duration
	}{
		{time.Second, 333333333, 100 * time.Millisecond, 900 * time.Millisecond},
		{30 * time.Second, 10 * time.Second, 3 * time.Second, 27 * time.Second},
		{time.Hour, 20 * time.Minute, 6 * time.Minute, 54 * time.Minute},
		{Max, 2920 * time.Hour, 876 * time.Hour, 7884 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.d.String(), func(t *testing.T) {
			if got := RenewInterval(tt.d); got != tt.renew {
				t.Errorf("RenewInterval(%v) = %v, want %v", tt.d, got, tt.renew)
			}
			if got := HolderMargin(tt.d); got != tt.margin {
				t.Errorf("HolderMargin(%v) = %v, want %v", tt.d, got, tt.margin)
			}
			want := sent.Add(tt.deadlineAfterSending)
			if got := HolderDeadline(sent, tt.d); !got.Equal(want) {
				t.Errorf("HolderDeadline(%v, %v) = %v, want %v", sent, tt.d, got, want)
			}
			// The holder renews well before it gives up.
			if 2*RenewInterval(tt.d) >= tt.d-HolderMargin(tt.d) {
				t.Errorf("for %v two renew intervals (%v) do not fit before the deadline (%v)",
					tt.d, 2*RenewInterval(tt.d), tt.d-HolderMargin(tt.d))
			}
		})
	}
}
