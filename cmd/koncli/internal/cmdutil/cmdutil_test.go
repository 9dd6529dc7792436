package cmdutil

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/spf13/cobra"

	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/ttl"
)

var (
	t0      = time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	locked  = lock.Status{Namespace: "ns", Name: "critical-section", Holder: "pod-abc-123", Phase: lock.PhaseLocked, LockedAt: t0, RenewedAt: t0, ExpiresAt: t0.Add(10 * time.Minute), TTL: 10 * time.Minute, Token: 7}
	noTTL   = lock.Status{Namespace: "ns", Name: "db-migration", Holder: "worker-1", Phase: lock.PhaseLocked, LockedAt: t0.Add(-2 * time.Hour), Token: 3, Fair: true, Waiters: []string{"w1", "w2"}}
	free    = lock.Status{Namespace: "other", Name: "idle", Phase: lock.PhaseUnlocked, TTL: 30 * time.Second, Token: 2}
	expired = lock.Status{Namespace: "other", Name: "stale", Holder: "dead-pod", Phase: lock.PhaseExpired, LockedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(-50 * time.Minute), TTL: 10 * time.Minute, Token: 9}
)

func TestAgeAndUntil(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Age(time.Time{}, t0), "<none>"},
		{Age(t0.Add(-90*time.Second), t0), "90s"},
		{Age(t0.Add(time.Minute), t0), "0s"}, // skew: never negative
		{Until(t0.Add(4*time.Minute), t0), "in 4m"},
		{Until(t0.Add(-30*time.Second), t0), "30s ago"},
		{Until(time.Time{}, t0), "<none>"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestParseTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "30s": 30 * time.Second, "1m30s": 90 * time.Second, "0s": 0} {
		if got, err := ParseTimeout("timeout", in); err != nil || got != want {
			t.Errorf("ParseTimeout(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, wantMsg := range map[string]string{
		"abc": `invalid --timeout "abc": not a Go duration`,
		"30":  `invalid --timeout "30": not a Go duration`,
		"-1s": `invalid --timeout "-1s": must not be negative`,
		"":    `invalid --timeout "": not a Go duration`,
	} {
		_, err := ParseTimeout("timeout", in)
		if !IsUsage(err) || !strings.Contains(err.Error(), wantMsg) {
			t.Errorf("ParseTimeout(%q) = %v, want usage error %q", in, err, wantMsg)
		}
	}
}

func TestParseTTL(t *testing.T) {
	if d, err := ParseTTL("5m"); err != nil || d != 5*time.Minute {
		t.Errorf("ParseTTL(5m) = %v, %v", d, err)
	}
	for _, in := range []string{"0", "-1s", "abc", "500ms", "100000h", "30", " 5m"} {
		_, err := ParseTTL(in)
		if !IsUsage(err) || !errors.Is(err, ttl.ErrInvalid) || !strings.HasPrefix(err.Error(), `invalid --ttl "`+in+`": `) {
			t.Errorf("ParseTTL(%q) = %v, want a usage error naming the flag and quoting the input", in, err)
		}
		// Said once: not "invalid --ttl: invalid TTL ...".
		if n := strings.Count(strings.ToLower(err.Error()), "invalid"); n != 1 {
			t.Errorf("ParseTTL(%q) = %q says \"invalid\" %d times", in, err, n)
		}
	}
	_, err := ParseTTL("0")
	if want := `invalid --ttl "0": is zero; a TTL must be at least 1s`; err == nil || err.Error() != want {
		t.Errorf("ParseTTL(0) = %v, want %q", err, want)
	}
}

func TestWaitFromFlag(t *testing.T) {
	if w, err := WaitFromFlag("", false); err != nil || !w.Forever {
		t.Errorf("unset --timeout = %+v, %v; want forever", w, err)
	}
	if w, err := WaitFromFlag("0", true); err != nil || w.Forever || w.Timeout != 0 {
		t.Errorf("--timeout 0 = %+v, %v; want a single attempt", w, err)
	}
	if w, err := WaitFromFlag("30s", true); err != nil || w.Forever || w.Timeout != 30*time.Second {
		t.Errorf("--timeout 30s = %+v, %v", w, err)
	}
}

func TestHolder(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name:", err)
	}
	if h, err := Holder("", false, ""); err != nil || h != host {
		t.Errorf("default holder = %q, %v; want %q", h, err, host)
	}
	if h, err := Holder("", false, "42"); err != nil || h != host+"-42" {
		t.Errorf("default holder with suffix = %q, %v; want %q", h, err, host+"-42")
	}
	if h, err := Holder("worker-1", true, "42"); err != nil || h != "worker-1" {
		t.Errorf("explicit holder = %q, %v; want worker-1 without suffix", h, err)
	}
	for _, bad := range []string{"", " x", "x\n", strings.Repeat("h", lock.MaxHolderLength+1)} {
		if _, err := Holder(bad, true, ""); !IsUsage(err) {
			t.Errorf("Holder(%q) = %v, want usage error", bad, err)
		}
	}
}

func TestArgs(t *testing.T) {
	root := &cobra.Command{Use: "koncli"}
	group := &cobra.Command{Use: "mutex"}
	leaf := &cobra.Command{Use: "lock NAME", Run: func(*cobra.Command, []string) {}}
	root.AddCommand(group)
	group.AddCommand(leaf)
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"missing", ExactArgs("NAME")(leaf, nil), `"koncli mutex lock" needs NAME`},
		{"extra", ExactArgs("NAME")(leaf, []string{"a", "b", "c"}), `"koncli mutex lock" takes only NAME; unexpected "b c"`},
		{"unknown subcommand", NoArgs(group, []string{"lok"}), `unknown command "lok" for "koncli mutex"; did you mean "lock"?`},
		{"argument to a leaf", NoArgs(leaf, []string{"x"}), `"koncli mutex lock" takes no arguments; unexpected "x"`},
	} {
		if !IsUsage(tc.err) || tc.err.Error() != tc.want {
			t.Errorf("%s: %v, want usage error %q", tc.name, tc.err, tc.want)
		}
	}
	if err := ExactArgs("NAME")(leaf, []string{"a"}); err != nil {
		t.Errorf("one NAME: %v", err)
	}
	if IsUsage(errors.New("x")) {
		t.Errorf("IsUsage of a plain error")
	}
}

func TestWaitMessage(t *testing.T) {
	for _, tc := range []struct {
		name     string
		s        lock.Status
		deadline time.Time
		want     string
	}{
		{"ttl", locked, time.Time{}, `waiting for mutex ns/critical-section: locked by "pod-abc-123" since 2024-01-01T12:00:00Z (token 7); its TTL runs out at 2024-01-01T12:10:00Z unless the holder renews it`},
		{"no ttl, deadline", noTTL, t0.Add(30 * time.Second), `waiting for mutex ns/db-migration: locked by "worker-1" since 2024-01-01T10:00:00Z (token 3); it has no TTL, so it stays locked until its holder unlocks it; giving up at 2024-01-01T12:00:30Z`},
		{"expired", expired, time.Time{}, `its TTL has run out, taking it over`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := WaitMessage(Ref(tc.s.Namespace, tc.s.Name), tc.s, tc.deadline); !strings.Contains(got, tc.want) {
				t.Errorf("WaitMessage =\n %q\nwant it to contain\n %q", got, tc.want)
			}
		})
	}
}

// logSink collects the messages of a logger.
type logSink struct {
	mu   sync.Mutex
	msgs []string
	ch   chan string
}

func newLogSink() (*logSink, logr.Logger) {
	s := &logSink{ch: make(chan string, 16)}
	return s, funcr.New(func(_, args string) {
		s.mu.Lock()
		s.msgs = append(s.msgs, args)
		s.mu.Unlock()
		s.ch <- args
	}, funcr.Options{})
}

func TestWaitReporter(t *testing.T) {
	sink, log := newLogSink()
	w := NewWaitReporter(log, "ns", "m", time.Time{})
	w.delay = 50 * time.Millisecond
	w.Start()
	start := time.Now()
	w.Notify(locked)
	first := <-sink.ch
	if took := time.Since(start); took < w.delay {
		t.Errorf("first message after %s, want not before %s", took, w.delay)
	}
	if !strings.Contains(first, `pod-abc-123`) {
		t.Errorf("first message %q does not name the holder", first)
	}
	// A holder change after the first message is reported at once.
	w.Notify(noTTL)
	if second := <-sink.ch; !strings.Contains(second, "worker-1") {
		t.Errorf("second message %q does not name the new holder", second)
	}
	w.Stop()
	w.Notify(free) // after Stop: nothing
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.msgs) != 2 {
		t.Errorf("messages: %q, want 2", sink.msgs)
	}
}

func TestWaitReporterQuietForShortWaits(t *testing.T) {
	sink, log := newLogSink()
	w := NewWaitReporter(log, "ns", "m", time.Time{})
	w.Start()
	w.Notify(locked)
	w.Stop() // acquired well within WaitReportDelay
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.msgs) != 0 {
		t.Errorf("messages for a short wait: %q, want none", sink.msgs)
	}
}

func TestLoggerFormat(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, 0)
	log.Info("plain message")
	log.V(1).Info("hidden at -v 0")
	if buf.String() != "plain message\n" {
		t.Errorf("-v 0 output %q, want the bare message", buf.String())
	}
	buf.Reset()
	log = NewLogger(&buf, 2)
	log.V(2).Info("request", "status", 200)
	if got := buf.String(); !strings.Contains(got, "V(2) request") || !strings.Contains(got, `"status": 200`) {
		t.Errorf("-v 2 output %q, want level and fields", got)
	}
}
