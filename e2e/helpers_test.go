//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/konlease/konlease/lock"
)

// testLogger logs to stderr when KONLEASE_E2E_LOG is a verbosity (0, 1, 2);
// it discards otherwise. It never uses t.Log, because a holder's keeper may
// log after its test has returned.
func testLogger() logr.Logger {
	v := os.Getenv("KONLEASE_E2E_LOG")
	if v == "" {
		return logr.Discard()
	}
	level := int(v[0] - '0')
	return funcr.New(func(prefix, args string) {
		os.Stderr.WriteString(time.Now().Format("15:04:05.000 ") + prefix + " " + args + "\n")
	}, funcr.Options{Verbosity: level})
}

// newClient returns a lock.Client for cfg with the test logger, closed when
// the test ends (after the mutexes of newMutex are released): its fair
// waiters' sessions are deleted rather than left to linger for a waiter
// TTL, renewing.
func newClient(t testing.TB, cfg *rest.Config, opts ...lock.ClientOption) *lock.Client {
	t.Helper()
	c, err := lock.NewForConfig(cfg, append([]lock.ClientOption{lock.WithLogger(testLogger())}, opts...)...)
	if err != nil {
		t.Fatalf("lock.NewForConfig: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("closing the lock client: %v", err)
		}
	})
	return c
}

// newMutex returns a handle, failing the test on error, and releases it at
// cleanup if it is still held.
func newMutex(t testing.TB, c *lock.Client, ns, name string, opts ...lock.Option) *lock.Mutex {
	t.Helper()
	m, err := c.NewMutex(ns, name, opts...)
	if err != nil {
		t.Fatalf("NewMutex(%s/%s): %v", ns, name, err)
	}
	t.Cleanup(func() {
		if m.Token() != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = m.Unlock(ctx)
		}
	})
	return m
}

// admin is a typed clientset acting as cluster admin.
func admin(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config())
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	return cs
}

// getLease reads a Lease as admin.
func getLease(t testing.TB, ns, name string) *coordinationv1.Lease {
	t.Helper()
	l, err := admin(t).CoordinationV1().Leases(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get lease %s/%s: %v", ns, name, err)
	}
	return l
}

// requestCounter counts API requests by verb (GET, LIST, WATCH, CREATE,
// UPDATE, DELETE) going through a rest.Config.
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func countRequests(cfg *rest.Config) (*rest.Config, *requestCounter) {
	rc := &requestCounter{counts: map[string]int{}}
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			rc.add(verbOf(req))
			return rt.RoundTrip(req)
		})
	})
	return cfg, rc
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func verbOf(req *http.Request) string {
	q := req.URL.Query()
	switch req.Method {
	case http.MethodGet:
		if q.Get("watch") == "true" || q.Get("watch") == "1" {
			return "WATCH"
		}
		// A collection path ends in the resource, a named one in the name.
		if strings.HasSuffix(req.URL.Path, "/leases") {
			return "LIST"
		}
		return "GET"
	case http.MethodPost:
		return "CREATE"
	case http.MethodPut:
		return "UPDATE"
	default:
		return req.Method
	}
}

func (rc *requestCounter) add(verb string) {
	rc.mu.Lock()
	rc.counts[verb]++
	rc.mu.Unlock()
}

// snapshot returns a copy of the counts and resets them.
func (rc *requestCounter) snapshot() map[string]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := rc.counts
	rc.counts = map[string]int{}
	return out
}

// skewedClock is the real clock with its wall time moved by offset, as on a
// machine whose clock is wrong. Durations (monotonic) are unaffected.
type skewedClock struct {
	clock.RealClock
	offset time.Duration
}

func (s skewedClock) Now() time.Time                  { return time.Now().Add(s.offset) }
func (s skewedClock) Since(t time.Time) time.Duration { return s.Now().Sub(t) }

// noLockGoroutines waits until no goroutine runs code of package lock, and
// fails the test if one is still there after a bound: a leak.
func noLockGoroutines(t testing.TB) {
	t.Helper()
	var leaked string
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			leaked = ""
			for _, g := range strings.Split(string(buf), "\n\n") {
				if strings.Contains(g, "github.com/konlease/konlease/lock.") {
					leaked += g + "\n\n"
				}
			}
			return leaked == "", nil
		})
	if err != nil {
		t.Fatalf("goroutines of package lock still running:\n%s", leaked)
	}
}

// within fails the test unless ch closes within d.
func within(t testing.TB, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not within %s", what, d)
	}
}
