package lock

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"
)

// DefaultRetryTimeout bounds how long Lock, TryLock and Unlock go on
// retrying transient failures (see isTransient) when their context has no
// deadline: that long without one success ends the call with the last
// failure. With a deadline, they retry until it. It is also how long the
// Unlock at the end of With, and the CLI's run, goes on trying, so that a
// short outage of the API server never leaves a finished critical section
// locked.
const DefaultRetryTimeout = 30 * time.Second

// isTransient reports a failure that a retry may cure: the API server could
// not be reached or answered that it is overloaded or failing (connection
// refused, reset or closed under a request (EPIPE, or HTTP/2's abort of the
// requests on a broken connection), a timeout, 429, 5xx). A refusal on the
// merits (403, 404, 409, 422) is not transient, and neither is a
// configuration problem such as an untrusted certificate or an unknown
// host: retrying those only delays the error. The caller's own context ending is not transient either.
func isTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		code := s.Status().Code
		return code == http.StatusTooManyRequests || code >= http.StatusInternalServerError ||
			apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err)
	}
	// IsProbableEOF compares the error (unwrapped from *url.Error only) with
	// io.EOF, so wrapped ends of stream are matched here.
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	// A request written on a connection that the server (or a load
	// balancer in front of it) had just closed fails with EPIPE, or with
	// ECONNRESET wrapped beyond what IsConnectionReset unwraps: the server
	// went away, which is what a retry is for.
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) {
		return true
	}
	// When a write on an HTTP/2 connection fails (the server, or a load
	// balancer in front of several, closed it), net/http closes the
	// connection and fails every request still in flight on it with this
	// error, which it does not export: they got no answer, as with a reset.
	if strings.Contains(err.Error(), "http2: client connection force closed") {
		return true
	}
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) ||
		utilnet.IsProbableEOF(err) || utilnet.IsTimeout(err) || utilnet.IsHTTP2ConnectionLost(err)
}

// retrier paces the retries of one call after transient failures, with
// exponential backoff and jitter, within the call's deadline or, without
// one, within timeout of consecutive failures.
type retrier struct {
	clock   clock.Clock
	log     logr.Logger
	timeout time.Duration
	what    string
	// notify, if set, is told when a run of failures begins.
	notify func(err error, until time.Time)

	backoff wait.Backoff
	// since is when the current run of failures began; zero after a
	// success.
	since time.Time
	// last is the latest failure of the current run.
	last error
}

func newRetrier(clk clock.Clock, log logr.Logger, timeout time.Duration, what string) *retrier {
	r := &retrier{clock: clk, log: log, timeout: timeout, what: what}
	r.reset()
	return r
}

// reset ends a run of failures: the next failure waits the shortest time.
func (r *retrier) reset() {
	r.since, r.last = time.Time{}, nil
	// 100ms, 200ms, ... up to 2s between attempts: quick enough to notice
	// an API server that is back, slow enough not to hammer one that is
	// overloaded.
	r.backoff = wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: math.MaxInt32, Cap: 2 * time.Second}
}

// failing reports whether the latest attempt failed transiently.
func (r *retrier) failing() bool { return r.last != nil }

// wait decides whether to try again after err: false when err is not
// transient, or the time to retry has run out (ctx's deadline, or the
// timeout since the run of failures began); otherwise it waits the backoff
// and returns true. It logs the first failure of a run at level 0, because
// the caller then waits without anything else to show for it.
func (r *retrier) wait(ctx context.Context, err error) bool {
	if !isTransient(err) {
		if ctx.Err() == nil {
			r.last = nil // a refusal on the merits ends the run of failures
		}
		return false
	}
	now := r.clock.Now()
	first := r.since.IsZero()
	if first {
		r.since = now
	}
	r.last = err
	end := r.since.Add(r.timeout)
	if dl, ok := ctx.Deadline(); ok {
		end = dl
	}
	left := end.Sub(now)
	if left <= 0 {
		return false
	}
	if first {
		r.log.Info(r.what+" failed, retrying", "error", err.Error(), "until", end.UTC().Format(time.RFC3339))
		if r.notify != nil {
			r.notify(err, end)
		}
	}
	t := r.clock.NewTimer(min(r.backoff.Step(), left))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}
