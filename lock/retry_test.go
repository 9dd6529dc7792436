package lock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestIsTransient(t *testing.T) {
	gr := schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}
	refused := &url.Error{Op: "Get", URL: "https://127.0.0.1:1", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", refused, true},
		{"connection refused, wrapped", fmt.Errorf("mutex a/b: get lease: %w", refused), true},
		{"connection reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{"broken pipe", &url.Error{Op: "Put", URL: "https://127.0.0.1:1", Err: &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}}, true},
		{"connection reset, wrapped", fmt.Errorf("mutex a/b: update: %w", &url.Error{Op: "Put", URL: "https://127.0.0.1:1", Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}), true},
		{"unexpected EOF", fmt.Errorf("reading body: %w", io.ErrUnexpectedEOF), true},
		{"EOF in a url.Error", &url.Error{Op: "Put", URL: "https://127.0.0.1:1", Err: io.EOF}, true},
		{"429", apierrors.NewTooManyRequests("slow down", 1), true},
		{"500", apierrors.NewInternalError(errors.New("boom")), true},
		{"503", apierrors.NewServiceUnavailable("starting"), true},
		{"504", apierrors.NewTimeoutError("took too long", 1), true},
		{"409", apierrors.NewConflict(gr, "m", errors.New("changed")), false},
		{"403", apierrors.NewForbidden(gr, "m", errors.New("no")), false},
		{"404", apierrors.NewNotFound(gr, "m"), false},
		{"own context cancelled", context.Canceled, false},
		{"own deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), false},
		{"unknown host", &net.DNSError{Err: "no such host", Name: "nowhere", IsNotFound: true}, false},
		{"nil", nil, false},
	} {
		if got := isTransient(tc.err); got != tc.want {
			t.Errorf("%s: isTransient(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestRetrierBudget checks that, without a deadline, retries stop once the
// timeout has passed since the first failure of a run, that a success starts
// a new run, and that a non-transient error is never retried.
func TestRetrierBudget(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	r := newRetrier(clk, logr.Discard(), 10*time.Second, "testing")
	fail := apierrors.NewServiceUnavailable("down")
	ctx := t.Context()

	// wait blocks on the fake clock: step it until wait returns.
	waitStepping := func(err error) bool {
		res := make(chan bool, 1)
		go func() { res <- r.wait(ctx, err) }()
		for {
			select {
			case ok := <-res:
				return ok
			default:
			}
			if clk.HasWaiters() {
				clk.Step(time.Second)
			}
		}
	}
	if r.wait(ctx, apierrors.NewForbidden(schema.GroupResource{}, "m", errors.New("no"))) {
		t.Fatal("a 403 was retried")
	}
	tries := 0
	for waitStepping(fail) {
		tries++
		if tries > 100 {
			t.Fatal("retries never stop")
		}
	}
	if elapsed := clk.Since(time.Unix(1000, 0)); elapsed < 10*time.Second || elapsed > 12*time.Second {
		t.Errorf("gave up after %s of failures, want the 10s timeout", elapsed)
	}
	if !r.failing() {
		t.Error("after giving up, failing() = false")
	}
	r.reset()
	if !waitStepping(fail) {
		t.Error("after a success, the next failure was not retried")
	}

	// With a deadline, the deadline is the bound, however far away.
	dctx, cancel := context.WithDeadline(ctx, clk.Now().Add(-time.Second))
	defer cancel()
	r.reset()
	if r.wait(dctx, fail) {
		t.Error("retried past the context's deadline")
	}
}

// TestIsTransientHTTP2ForceClosed: a request in flight on an HTTP/2
// connection that net/http closes (as it does once a write on it failed,
// when a load balancer or the API server closed it) fails with an error
// that net/http does not export. It is transient: the request got no
// answer. Found by the HA topology's e2e test, whose waiter gave up with
// it when its connection moved to another API server.
func TestIsTransientHTTP2ForceClosed(t *testing.T) {
	entered := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	tr := srv.Client().Transport.(*http.Transport)
	cc, err := tr.NewClientConn(t.Context(), "https", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/apis/coordination.k8s.io/v1/namespaces/a/leases/b", nil)
	if err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	go func() {
		resp, err := cc.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		failed <- err
	}()
	<-entered
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}
	rtErr := <-failed
	if rtErr == nil || !strings.Contains(rtErr.Error(), "force closed") {
		t.Fatalf("request on a closed HTTP/2 connection failed with %v, want net/http's force-closed error", rtErr)
	}
	// As client-go returns it: wrapped in a url.Error, then by the library.
	err = fmt.Errorf("mutex a/b: get lease: %w", &url.Error{Op: "Get", URL: req.URL.String(), Err: rtErr})
	if !isTransient(err) {
		t.Errorf("isTransient(%v) = false, want true", err)
	}
}
