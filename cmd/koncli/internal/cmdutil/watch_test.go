package cmdutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/konlease/konlease/lock"
)

// watchPrinted prints events as get -w (defaultFormat FormatYAML) or list
// -w (FormatTable) would with args.
func watchPrinted(t *testing.T, defaultFormat string, args []string, events []lock.WatchEvent) string {
	t.Helper()
	pr, err := parsedPrintFlags(t, defaultFormat, args).ToWatchPrinter(false)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	var buf bytes.Buffer
	wp := NewWatchPrinter(pr, &buf)
	for _, ev := range events {
		if err := wp.Print(ev, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}

func TestWatchPrinter(t *testing.T) {
	locked := lock.Status{Namespace: "ns", Name: "m", Phase: lock.PhaseLocked, Holder: "w1", Token: 3, LockedAt: t0, RenewedAt: t0, Fair: true, Waiters: []string{"w2"}}
	unlocked := lock.Status{Namespace: "ns", Name: "m", Phase: lock.PhaseUnlocked, Token: 3}
	events := []lock.WatchEvent{{Status: unlocked}, {Status: locked}, {Status: unlocked, Deleted: true}}
	for _, tc := range []struct {
		name, defaultFormat string
		args                []string
		want                []string // one regular expression per line
	}{
		{"get -w: the wide table, header once", FormatYAML, nil, []string{
			`^NAME +HOLDER +PHASE +TTL +LOCKED +EXPIRES +RENEWED +TOKEN +FAIR +WAITERS +REASON$`,
			`^m +<none> +Unlocked +<none> +<none> +<none> +<none> +3 +false +0 +<none>$`,
			`^m +w1 +Locked +<none> +60s +<none> +60s +3 +true +1 +<none>$`,
			`^m +<none> +Deleted +<none> `,
		}},
		{"list -w -o json: one object per line", FormatTable, []string{"-o", "json"}, []string{
			`^\{"apiVersion":"konlease.io/v1alpha1","kind":"Mutex","metadata":\{"name":"m","namespace":"ns"\},"spec":\{\},"status":\{"phase":"Unlocked","token":3\}\}$`,
			`^\{.*"spec":\{"fair":true\},"status":\{"holder":"w1","lockedAt":"2024-01-01T12:00:00Z",.*"phase":"Locked",.*"token":3,"waiters":\["w2"\]\}\}$`,
			`^\{.*"status":\{"phase":"Deleted","token":3\}\}$`,
		}},
		{"--no-headers", FormatTable, []string{"--no-headers"}, []string{`^m +<none> +Unlocked `, `^m +w1 +Locked `, `^m +<none> +Deleted `}},
		{"-o name", FormatYAML, []string{"-o", "name"}, []string{`^m$`, `^m$`, `^m$`}},
		{"-o yaml: documents of one stream", FormatYAML, []string{"-o", "yaml"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := watchPrinted(t, tc.defaultFormat, tc.args, events)
			if tc.want == nil {
				if strings.Count(out, "---\n") != len(events)-1 || strings.Count(out, "kind: Mutex\n") != len(events) {
					t.Errorf("got %q, want %d YAML documents", out, len(events))
				}
				return
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(tc.want), out)
			}
			for i, re := range tc.want {
				if !regexp.MustCompile(re).MatchString(lines[i]) {
					t.Errorf("line %d: %q, want %s", i+1, lines[i], re)
				}
				if tc.args != nil && tc.args[0] == "-o" && tc.args[1] == "json" {
					var obj map[string]any
					if err := json.Unmarshal([]byte(lines[i]), &obj); err != nil {
						t.Errorf("line %d is not JSON: %v", i+1, err)
					}
				}
			}
		})
	}
}

func TestBusyFlags(t *testing.T) {
	locked := &lock.LockedError{Namespace: "ns", Name: "m", Holder: "other"}
	for _, tc := range []struct {
		args     []string
		code     int
		usage    string // non-empty: a usage error containing it
		skipText bool   // the busy error says "skipped: "
	}{
		{nil, DefaultConflictExitCode, "", false},
		{[]string{"-E", "75"}, 75, "", false},
		{[]string{"-E", "0"}, 0, "", true},
		{[]string{"--if-busy=skip"}, 0, "", true},
		{[]string{"--if-busy=skip", "-E", "0"}, 0, "", true},
		{[]string{"--if-busy", "fail", "-E", "9"}, 9, "", false},
		{[]string{"--if-busy=skip", "-E", "3"}, 0, "--if-busy=skip exits 0", false},
		{[]string{"--if-busy=later"}, 0, `invalid --if-busy "later"`, false},
		{[]string{"-E", "256"}, 0, "0 to 255", false},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var b BusyFlags
			cmd := &cobra.Command{Use: "test"}
			b.AddFlags(cmd, BusyMutex)
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			code, err := b.ExitCode(cmd)
			if tc.usage != "" {
				if !IsUsage(err) || !strings.Contains(err.Error(), tc.usage) {
					t.Errorf("ExitCode: %v, want a usage error saying %q", err, tc.usage)
				}
				return
			}
			if err != nil || code != tc.code {
				t.Fatalf("ExitCode = %d, %v; want %d", code, err, tc.code)
			}
			busy := Busy(locked, code)
			var ec *ExitCodeError
			if !errors.As(busy, &ec) || ec.Code != tc.code || !errors.Is(busy, lock.ErrLocked) || strings.HasPrefix(busy.Error(), "skipped: ") != tc.skipText {
				t.Errorf("Busy(locked, %d) = %v", code, busy)
			}
			if other := errors.New("boom"); Busy(other, code) != other {
				t.Error("Busy changed an error that is not ErrLocked")
			}
		})
	}
}
