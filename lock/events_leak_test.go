package lock_test

import (
	"testing"

	"go.uber.org/goleak"
	"k8s.io/client-go/rest"

	"github.com/konlease/konlease/lock"
)

// TestCloseStopsEventBroadcaster: Close stops every goroutine of the event
// broadcaster WithEvents starts. client-go's Shutdown leaves its recording
// goroutines running until their context ends, and Close used to leave
// three of them per client (found by the e2e suite's leak check).
func TestCloseStopsEventBroadcaster(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []lock.ClientOption
	}{
		{"with events", []lock.ClientOption{lock.WithEvents()}},
		{"without events", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			// Nothing listens there: neither creating nor closing a client
			// with no events recorded and no sessions sends a request.
			c, err := lock.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"}, tc.opts...)
			if err != nil {
				t.Fatalf("NewForConfig: %v", err)
			}
			if err := c.Close(t.Context()); err != nil {
				t.Fatalf("Close: %v", err)
			}
			goleak.VerifyNone(t, before)
		})
	}
}
