package app

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

func TestExitCode(t *testing.T) {
	locked := &lock.LockedError{Namespace: "ns", Name: "m", Holder: "other"}
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "m", errors.New("no"))
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, ExitOK},
		{"generic", errors.New("boom"), ExitError},
		{"forbidden", fmt.Errorf("mutex ns/m: %w", forbidden), ExitError},
		{"not a mutex", &lock.NotMutexError{Namespace: "ns", Name: "m", Reason: "x"}, ExitError},
		{"not held", fmt.Errorf("x: %w", lock.ErrNotHeld), ExitError},
		{"ttl conflict", fmt.Errorf("x: %w", lock.ErrTTLConflict), ExitError},
		{"usage", cmdutil.Usagef("bad"), ExitUsage},
		{"library invalid argument", fmt.Errorf("invalid mutex name %q: %w", "A", lock.ErrInvalid), ExitUsage},
		{"locked", locked, ExitNotAcquired},
		{"locked, wrapped", &cmdutil.MessageError{Msg: "not acquired", Err: locked}, ExitNotAcquired},
		{"already held", fmt.Errorf("x: %w", lock.ErrAlreadyHeld), ExitAlreadyHeld},
		{"conflict exit code", &cmdutil.ExitCodeError{Code: 75, Err: locked}, 75},
		{"conflict exit code 0", cmdutil.Busy(locked, 0), 0},
		{"locked but a refusal", &cmdutil.RuntimeError{Err: locked}, ExitError},
		{"lost", &cmdutil.MessageError{Msg: "lost", Err: fmt.Errorf("x: %w", lock.ErrLost)}, ExitLost},
		{"child status 42", &cmdutil.ChildExitError{Code: 42}, 42},
		{"child status 1", &cmdutil.ChildExitError{Code: 1}, 1},
		{"child killed by SIGTERM", &cmdutil.ChildExitError{Signal: syscall.SIGTERM}, 143},
		{"child killed by SIGKILL", &cmdutil.ChildExitError{Signal: syscall.SIGKILL}, 137},
		{"command not found", &cmdutil.ExecError{Path: "x", NotFound: true, Err: errors.New("nope")}, ExitCommandNotFound},
		{"cannot execute", &cmdutil.ExecError{Path: "x", Err: errors.New("nope")}, ExitCannotExecute},
		{"SIGINT while waiting", &cmdutil.SignalError{Signal: syscall.SIGINT, Err: locked}, 130},
		{"SIGTERM while waiting", &cmdutil.SignalError{Signal: syscall.SIGTERM}, 143},
		{"wait timed out", &cmdutil.TimeoutError{Err: errors.New("not unlocked within 1s")}, ExitNotAcquired},
		{"wait timed out on a locked mutex", &cmdutil.TimeoutError{Err: locked}, ExitNotAcquired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExitCode(tc.err); got != tc.want {
				t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func TestMessage(t *testing.T) {
	refused := fmt.Errorf("mutex ns/m: get lease: %w", &url.Error{
		Op: "Get", URL: "https://10.0.0.1:6443/apis/coordination.k8s.io/v1/namespaces/ns/leases/m",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED},
	})
	unknownCA := fmt.Errorf("mutex ns/m: get lease: %w", &url.Error{
		Op: "Get", URL: "https://10.0.0.1:6443/apis", Err: x509.UnknownAuthorityError{},
	})
	forbidden := fmt.Errorf("mutex ns/m: not allowed: %w", apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "m", errors.New("no")))
	unauthorized := fmt.Errorf("mutex ns/m: %w", apierrors.NewUnauthorized("who are you"))
	for _, tc := range []struct {
		name string
		err  error
		host string
		want []string
	}{
		{"unreachable names the server from the request", refused, "https://configured:1", []string{"cannot reach the Kubernetes API server at https://10.0.0.1:6443", "connection refused", "--kubeconfig", "--context"}},
		{"unknown CA", unknownCA, "", []string{"cannot verify the TLS certificate of the Kubernetes API server at https://10.0.0.1:6443", "certificate-authority"}},
		{"RBAC", forbidden, "", []string{"not allowed", "examples/rbac/role.yaml"}},
		{"unauthorized names the configured server", unauthorized, "https://configured:1", []string{"https://configured:1 rejected koncli's credentials", "--token"}},
		{"invalid argument suffix dropped", fmt.Errorf("invalid mutex name %q: rule: %w", "A", lock.ErrInvalid), "", []string{`invalid mutex name "A": rule`}},
		{"joined errors on one line", errors.Join(errors.New("first"), errors.New("second")), "", []string{"first; second"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Message(tc.err, tc.host)
			if strings.Contains(got, "\n") {
				t.Errorf("Message = %q, want one line", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("Message = %q, want it to contain %q", got, w)
				}
			}
			if strings.HasSuffix(got, "invalid argument") {
				t.Errorf("Message = %q ends with the sentinel's text", got)
			}
		})
	}
}
