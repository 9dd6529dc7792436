package harness

import (
	"fmt"
	"os"

	"go.uber.org/goleak"
)

// LeakOptions are the goroutines a test binary may still run once its tests
// and control plane are done; each is named with why it is harmless. Tests
// checking for leaks around one operation pass them to goleak.VerifyNone.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		// klog (imported by client-go) starts one flush daemon per process
		// at init and never stops it; it is not ours and does not grow.
		goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		// The harness forks its children from one goroutine locked to its
		// thread for the life of the process, on purpose: Pdeathsig fires
		// when the forking thread ends (see startOnLockedThread).
		goleak.IgnoreAnyFunction("github.com/konlease/konlease/e2e/harness.startOnLockedThread.func1.1"),
	}
}

// nodeLeakOptions are what a run with a node may leave besides: the node
// tests' clients (the suite's shared clientset among them) keep idle
// HTTP/2 connections to the API server until the process exits. The e2e
// package's TestNoGoroutineLeft checks connection clean-up where it
// matters, around each operation, and its process-end check has no such
// exception.
func nodeLeakOptions() []goleak.Option {
	return append(LeakOptions(), goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"))
}

// checkLeaks reports the goroutines left after the tests and the control
// plane stopped: by then every client connection has been closed by the
// server going away, so anything still running was leaked by a test or by
// the library under test.
func checkLeaks(opts []goleak.Option) error {
	if err := goleak.Find(opts...); err != nil {
		return fmt.Errorf("goroutines left after the tests: %w", err)
	}
	return nil
}

// reportLeaks turns a leak into a failure of a passing run; a failed run
// keeps its own exit code, as its goroutines are expected to be a mess.
func reportLeaks(code int, opts []goleak.Option) int {
	if code != 0 {
		return code
	}
	if err := checkLeaks(opts); err != nil {
		fmt.Fprintf(os.Stderr, "harness: %v\n", err)
		return 1
	}
	return 0
}
