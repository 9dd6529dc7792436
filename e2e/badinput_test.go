//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/ttl"
)

// badInputCase is one bad input: op feeds it to the library, and the error
// must match is and contain every string of want. No Lease of the namespace
// may change. TestInvalidArguments (names and holders given to NewMutex)
// and TestNonMutexLeaseUntouched (every operation on a leader-election
// Lease and on a TTL annotation "abc") cover the rest; TestCLIBadInputs,
// TestCLIConnection and TestCLIRBAC the same inputs through koncli.
type badInputCase struct {
	name string
	op   func(ctx context.Context) error
	is   func(error) bool
	want []string
}

func isErr(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

// runBadInputs runs each case on its own, with a snapshot of every Lease of
// ns (name and resourceVersion) before and after.
func runBadInputs(t *testing.T, ns string, cases []badInputCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := leaseVersions(t, ns)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := tc.op(ctx)
			if err == nil || !tc.is(err) {
				t.Errorf("got error %v, want a match of the case's sentinel", err)
			}
			for _, w := range tc.want {
				if err != nil && !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
			expectUnchanged(t, ns, before, tc.name)
		})
	}
}

// garbledMutex creates a mutex Lease whose konlease annotations were
// edited to garbage.
func garbledMutex(t *testing.T, ns, name string, annotations map[string]string) {
	t.Helper()
	_, err := admin(t).CoordinationV1().Leases(ns).Create(t.Context(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{lock.LabelKind: lock.KindMutex}, Annotations: annotations},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create garbled mutex %s: %v", name, err)
	}
}

// TestBadInput: bad names, TTLs, holders and edited annotations are refused
// with a specific error and change no Lease.
func TestBadInput(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	// A held mutex without TTL (no renewal changes it during the test), a
	// free one with a TTL, a leader-election Lease and two garbled mutexes.
	held := newMutex(t, c, ns, "held", lock.WithHolder("owner"))
	if err := held.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Create(t.Context(), ns, "free", lock.CreateOptions{TTL: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	createLeaderLease(t, ns, "leader")
	garbledMutex(t, ns, "unlock-yes", map[string]string{lock.AnnotationUnlock: "yes"})
	garbledMutex(t, ns, "ttl-negative", map[string]string{lock.AnnotationUnlock: lock.UnlockExplicit, lock.AnnotationTTL: "-5s"})

	var cases []badInputCase
	for _, s := range []string{"0", "-1s", "abc", "500ms", "100000h", "30", " 30s"} {
		cases = append(cases, badInputCase{
			name: "ttl.Parse " + s,
			op:   func(context.Context) error { _, err := ttl.Parse(s); return err },
			is:   isErr(ttl.ErrInvalid),
			want: []string{fmt.Sprintf("%q", s)},
		})
	}
	// Names given to the Client's operations (NewMutex's are covered by
	// TestInvalidArguments).
	for _, name := range []string{"UPPER", strings.Repeat("a", 254), "", "../x", "a/b"} {
		short := name
		if len(short) > 10 {
			short = short[:10] + "..."
		}
		cases = append(cases,
			badInputCase{name: "Get " + short, is: isErr(lock.ErrInvalid), want: []string{"mutex name"},
				op: func(ctx context.Context) error { _, err := c.Get(ctx, ns, name); return err }},
			badInputCase{name: "Create " + short, is: isErr(lock.ErrInvalid), want: []string{"mutex name"},
				op: func(ctx context.Context) error {
					_, _, err := c.Create(ctx, ns, name, lock.CreateOptions{})
					return err
				}},
			badInputCase{name: "ForceUnlock " + short, is: isErr(lock.ErrInvalid), want: []string{"mutex name"},
				op: func(ctx context.Context) error { _, err := c.ForceUnlock(ctx, ns, name); return err }},
			badInputCase{name: "Delete " + short, is: isErr(lock.ErrInvalid), want: []string{"mutex name"},
				op: func(ctx context.Context) error {
					_, err := c.Delete(ctx, ns, name, lock.DeleteOptions{Force: true})
					return err
				}},
		)
	}
	for _, d := range []time.Duration{-time.Second, 500 * time.Millisecond, 100000 * time.Hour} {
		cases = append(cases, badInputCase{
			name: "Create with TTL " + d.String(), is: isErr(lock.ErrInvalid), want: []string{d.String()},
			op: func(ctx context.Context) error {
				_, _, err := c.Create(ctx, ns, "free", lock.CreateOptions{TTL: d, UpdateTTL: true})
				return err
			},
		})
	}
	// A TTL that differs from the mutex's own.
	cases = append(cases, badInputCase{
		name: "Create with another TTL", is: isErr(lock.ErrTTLConflict),
		op: func(ctx context.Context) error {
			_, _, err := c.Create(ctx, ns, "free", lock.CreateOptions{TTL: time.Minute})
			return err
		},
	})
	for _, name := range []string{"unlock-yes", "ttl-negative"} {
		m := newMutex(t, c, ns, name, lock.WithHolder("w"))
		reason := map[string]string{"unlock-yes": `"yes"`, "ttl-negative": `"-5s"`}[name]
		cases = append(cases,
			badInputCase{name: name + " TryLock", is: isErr(lock.ErrNotMutex), want: []string{ns + "/" + name, reason},
				op: func(ctx context.Context) error { return m.TryLock(ctx) }},
			badInputCase{name: name + " Lock", is: isErr(lock.ErrNotMutex), want: []string{reason},
				op: func(ctx context.Context) error { return m.Lock(ctx) }},
			badInputCase{name: name + " ForceUnlock", is: isErr(lock.ErrNotMutex), want: []string{reason},
				op: func(ctx context.Context) error { _, err := c.ForceUnlock(ctx, ns, name); return err }},
			badInputCase{name: name + " Create with UpdateTTL", is: isErr(lock.ErrNotMutex), want: []string{reason},
				op: func(ctx context.Context) error {
					_, _, err := c.Create(ctx, ns, name, lock.CreateOptions{TTL: time.Minute, UpdateTTL: true})
					return err
				}},
		)
	}
	// Holders the library refuses, and one it accepts but that holds nothing.
	for _, h := range []string{"bad\xffutf8", "nul\x00byte", "trailing\n"} {
		cases = append(cases, badInputCase{
			name: fmt.Sprintf("holder %q", h), is: isErr(lock.ErrInvalid), want: []string{"holder"},
			op: func(context.Context) error { _, err := c.NewMutex(ns, "held", lock.WithHolder(h)); return err },
		})
	}
	intruder := newMutex(t, c, ns, "held", lock.WithHolder("intruder"))
	cases = append(cases, badInputCase{
		name: "Unlock by another holder", is: isErr(lock.ErrNotHeld), want: []string{`"owner"`},
		op: func(ctx context.Context) error { return intruder.Unlock(ctx) },
	})
	runBadInputs(t, ns, cases)

	// The mutexes and the lease still read as before.
	list, err := c.List(t.Context(), ns)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range list {
		names = append(names, st.Name+"="+string(st.Phase))
	}
	if got, want := strings.Join(names, ","), "free=Unlocked,held=Locked,ttl-negative=Invalid,unlock-yes=Invalid"; got != want {
		t.Errorf("List after bad inputs: got %s, want %s (garbled mutexes listed as Invalid)", got, want)
	}
}

// TestBadEnvironment: missing RBAC verbs, an unreachable or untrusted API
// server and cancelled contexts fail with specific errors and change no
// Lease; what the remaining verbs allow still works.
func TestBadEnvironment(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	held := newMutex(t, c, ns, "held", lock.WithHolder("owner"))
	if err := held.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Create(t.Context(), ns, "free", lock.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	all := []string{"get", "update", "create", "watch", "list", "delete"}
	var cases []badInputCase
	for _, missing := range all {
		var verbs []string
		for _, v := range all {
			if v != missing {
				verbs = append(verbs, v)
			}
		}
		rc := newClient(t, env.Identity(t, ns, verbs...), lock.WithPollInterval(100*time.Millisecond))
		m := newMutex(t, rc, ns, "free", lock.WithHolder("rbac-"+missing))
		tc := badInputCase{name: "without " + missing, is: apierrors.IsForbidden,
			want: []string{fmt.Sprintf(`cannot %s resource "leases"`, missing)}}
		switch missing {
		case "get", "update":
			tc.op = func(ctx context.Context) error { return m.TryLock(ctx) }
		case "create":
			tc.op = func(ctx context.Context) error {
				return newMutex(t, rc, ns, "missing", lock.WithHolder("rbac-create")).TryLock(ctx)
			}
		case "list":
			tc.op = func(ctx context.Context) error { _, err := rc.List(ctx, ns); return err }
		case "delete":
			tc.op = func(ctx context.Context) error {
				_, err := rc.Delete(ctx, ns, "free", lock.DeleteOptions{})
				return err
			}
		case "watch":
			// Nothing fails without watch: a waiter polls. It times out on
			// the held mutex like any waiter.
			w := newMutex(t, rc, ns, "held", lock.WithHolder("rbac-watch"))
			tc.op = func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
				defer cancel()
				return w.Lock(ctx)
			}
			tc.is = func(err error) bool {
				return errors.Is(err, lock.ErrLocked) && errors.Is(err, context.DeadlineExceeded)
			}
			tc.want = []string{`"owner"`}
		}
		cases = append(cases, tc)
		// What still works with the other verbs.
		t.Run("without "+missing+" still", func(t *testing.T) {
			switch missing {
			case "get", "update":
				if _, err := rc.List(t.Context(), ns); err != nil {
					t.Errorf("List: got %v, want success", err)
				}
			default:
				if err := m.TryLock(t.Context()); err != nil {
					t.Fatalf("TryLock: got %v, want success", err)
				}
				if err := m.Unlock(t.Context()); err != nil {
					t.Errorf("Unlock: got %v, want success", err)
				}
			}
		})
	}

	unreachable := env.Config()
	unreachable.Host = closedPortURL(t)
	uc := newClient(t, unreachable)
	um := newMutex(t, uc, ns, "free", lock.WithHolder("unreachable"))
	foreign := env.Config()
	foreign.CAFile, foreign.CAData = "", foreignCA(t)
	fm := newMutex(t, newClient(t, foreign), ns, "free", lock.WithHolder("foreign"))
	anyErr := func(err error) bool { return err != nil }
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	free := newMutex(t, c, ns, "free", lock.WithHolder("cancelled"))
	cases = append(cases,
		badInputCase{name: "unreachable TryLock", is: anyErr, want: []string{"connection refused"},
			op: func(ctx context.Context) error { return um.TryLock(ctx) }},
		badInputCase{name: "unreachable Get", is: anyErr, want: []string{"connection refused"},
			op: func(ctx context.Context) error { _, err := uc.Get(ctx, ns, "free"); return err }},
		badInputCase{name: "wrong CA TryLock", is: anyErr, want: []string{"certificate signed by unknown authority"},
			op: func(ctx context.Context) error { return fm.TryLock(ctx) }},
		badInputCase{name: "TryLock with a cancelled context", is: isErr(context.Canceled),
			op: func(context.Context) error { return free.TryLock(cancelled) }},
		badInputCase{name: "Lock with a cancelled context", is: isErr(context.Canceled),
			op: func(context.Context) error { return free.Lock(cancelled) }},
		badInputCase{name: "Lock cancelled while waiting", is: func(err error) bool {
			return errors.Is(err, lock.ErrLocked) && errors.Is(err, context.Canceled)
		}, want: []string{`"owner"`},
			op: func(ctx context.Context) error {
				ctx, cancel := context.WithCancel(ctx)
				defer cancel()
				w := newMutex(t, c, ns, "held", lock.WithHolder("waiter"), lock.WithWaitNotify(func(lock.Status) { cancel() }))
				return w.Lock(ctx)
			}},
	)
	runBadInputs(t, ns, cases)
}
