package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

// koncli's exit codes. Scripts branch on them, so they never change
// meaning; the table in the root command's help and in the README lists
// them.
const (
	// ExitOK: success.
	ExitOK = 0
	// ExitError: any runtime failure: the API server refused or could not
	// be reached, RBAC, a Lease that is not a mutex, not the holder.
	ExitError = 1
	// ExitUsage: refused before contacting the server: unknown command or
	// flag, wrong arguments, invalid name, duration or TTL.
	ExitUsage = 2
	// ExitNotAcquired: the mutex is held by someone else and the wait
	// allowed by --timeout ended (or was a single attempt). lock and run
	// take another code with --conflict-exit-code (--if-busy=skip: 0).
	// wait: the condition did not hold within --timeout.
	ExitNotAcquired = 3
	// ExitLost: the lock was lost while run's command ran.
	ExitLost = 4
	// ExitAlreadyHeld: this holder identity holds the mutex already
	// (through another process, or an earlier lock); locking again would
	// deadlock, so nothing was done. A script that re-runs after a crash
	// tells it from "someone else holds it" by this code.
	ExitAlreadyHeld = 5
	// ExitCannotExecute: run's command exists but could not be executed.
	ExitCannotExecute = 126
	// ExitCommandNotFound: run's command was not found.
	ExitCommandNotFound = 127
	// ExitSignalBase plus a signal's number: run's command was killed by
	// that signal, or koncli was interrupted by it while waiting for a
	// mutex (130 for SIGINT, 143 for SIGTERM).
	ExitSignalBase = 128
)

// exitStatusHelp documents the exit codes; it ends the root command's help.
const exitStatusHelp = `Exit status:
  0      success
  1      error: the API server refused or could not be reached, RBAC
         denied a verb, the Lease is not of the command's kind (mutex
         or semaphore), not the holder, ...; run: CMD succeeded but
         unlocking failed
  2      usage error: unknown command or flag, wrong arguments, invalid
         name, holder, duration or TTL; refused before contacting the
         server
  3      not acquired: the mutex is held by another holder (every slot
         of the semaphore is) and --timeout ran out (or was 0); lock,
         acquire, run: --conflict-exit-code picks another code,
         --if-busy=skip makes it 0; wait: the condition did not hold
         within --timeout
  4      run: the lock was lost while CMD ran; CMD was stopped
  5      not acquired: this holder identity holds the mutex (a slot of
         the semaphore) already; nothing changed
  126    run: CMD could not be executed
  127    run: CMD was not found
  128+n  run: CMD was killed by signal n; lock, acquire, run: koncli was
         interrupted by signal n while waiting (130 SIGINT, 143 SIGTERM,
         129 SIGHUP), leaving nothing locked
  N      run: CMD exited with status N`

// ExitCode maps a command's error to koncli's exit code.
func ExitCode(err error) int {
	var (
		explicit *cmdutil.ExitCodeError
		child    *cmdutil.ChildExitError
		execErr  *cmdutil.ExecError
		sig      *cmdutil.SignalError
		runtime  *cmdutil.RuntimeError
		timeout  *cmdutil.TimeoutError
	)
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &explicit):
		return explicit.Code
	case errors.As(err, &child):
		if child.Signal != 0 {
			return ExitSignalBase + int(child.Signal)
		}
		return child.Code
	case errors.As(err, &execErr):
		if execErr.NotFound {
			return ExitCommandNotFound
		}
		return ExitCannotExecute
	case errors.As(err, &sig):
		if s, ok := sig.Signal.(syscall.Signal); ok {
			return ExitSignalBase + int(s)
		}
		return ExitError
	case cmdutil.IsUsage(err):
		return ExitUsage
	case errors.As(err, &timeout):
		return ExitNotAcquired
	case errors.As(err, &runtime):
		return ExitError
	case errors.Is(err, lock.ErrLost):
		return ExitLost
	case errors.Is(err, lock.ErrInvalid):
		// The library refused an argument before sending anything.
		return ExitUsage
	case errors.Is(err, lock.ErrAlreadyHeld):
		return ExitAlreadyHeld
	case errors.Is(err, lock.ErrLocked):
		return ExitNotAcquired
	}
	return ExitError
}

// rbacHint points at the Role that grants what koncli needs.
const rbacHint = "see examples/rbac/role.yaml in the konlease repository for the Role koncli needs"

// Message is the one-line text printed after "error: " for err. It keeps
// the error's own text and adds what to do about it: which server could
// not be reached and which flags choose it, why TLS failed, where the
// needed RBAC Role is. host is the configured API server URL, used when
// the error does not name one.
func Message(err error, host string) string {
	// The lock package ends invalid-argument errors with the sentinel's
	// text, which adds nothing to a message that already states the rule.
	msg := strings.TrimSuffix(oneLine(err.Error()), ": "+lock.ErrInvalid.Error())
	if u := failedURL(err); u != "" {
		host = u
	}
	where := "the Kubernetes API server"
	if host != "" {
		where += " at " + host
	}
	switch {
	case apierrors.IsForbidden(err) && strings.Contains(msg, "ClusterRole"):
		return msg // the Role of examples/rbac cannot grant it
	case apierrors.IsForbidden(err):
		return msg + "; " + rbacHint
	case apierrors.IsUnauthorized(err):
		return fmt.Sprintf("%s rejected koncli's credentials (401 Unauthorized): %s; check the user of the kubeconfig context, --token or --client-certificate", where, msg)
	case isTLSError(err):
		return fmt.Sprintf("cannot verify the TLS certificate of %s: %s; check the certificate-authority of the kubeconfig cluster, or --certificate-authority", where, msg)
	case isUnreachable(err):
		return fmt.Sprintf("cannot reach %s: %s; check that the cluster is up, and --kubeconfig, --context or --server", where, msg)
	}
	return msg
}

// oneLine joins the lines of a multi-line error (errors.Join) so that every
// error prints as one line.
func oneLine(s string) string {
	var parts []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			parts = append(parts, line)
		}
	}
	return strings.Join(parts, "; ")
}

// failedURL is scheme://host of the request an error is about, if any.
func failedURL(err error) string {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return ""
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// isTLSError reports a failed verification of the server's certificate.
func isTLSError(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verification     *tls.CertificateVerificationError
	)
	return errors.As(err, &unknownAuthority) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &verification)
}

// isUnreachable reports a transport failure: the request never got an
// answer from an API server (refused, no route, DNS, timeout).
func isUnreachable(err error) bool {
	var (
		status apierrors.APIStatus
		opErr  *net.OpError
		dnsErr *net.DNSError
		ue     *url.Error
	)
	if errors.As(err, &status) {
		return false // the server answered
	}
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &ue) && ue.Timeout())
}
