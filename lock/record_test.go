package lock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"
)

func lease(annotations map[string]string, spec coordinationv1.LeaseSpec) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "m", Annotations: annotations, ResourceVersion: "7"},
		Spec:       spec,
	}
}

func TestDecode(t *testing.T) {
	mutex := map[string]string{AnnotationUnlock: UnlockExplicit}
	withTTL := map[string]string{AnnotationUnlock: UnlockExplicit, AnnotationTTL: "1m30s"}
	t1 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	t2 := t1.Add(time.Minute)
	for _, tc := range []struct {
		name       string
		lease      *coordinationv1.Lease
		wantReason string // empty: decodes
		holder     string
		ttl        time.Duration
		token      int32
	}{
		{"leader-election lease", lease(nil, coordinationv1.LeaseSpec{HolderIdentity: ptr.To("x")}), "no konlease.io/unlock annotation", "", 0, 0},
		{"other unlock mode", lease(map[string]string{AnnotationUnlock: "auto"}, coordinationv1.LeaseSpec{}), `is "auto", want "explicit"`, "", 0, 0},
		{"garbled ttl", lease(map[string]string{AnnotationUnlock: UnlockExplicit, AnnotationTTL: "abc"}, coordinationv1.LeaseSpec{}), "konlease.io/ttl", "", 0, 0},
		{"ttl too short", lease(map[string]string{AnnotationUnlock: UnlockExplicit, AnnotationTTL: "10ms"}, coordinationv1.LeaseSpec{}), "konlease.io/ttl", "", 0, 0},
		{"negative token", lease(mutex, coordinationv1.LeaseSpec{LeaseTransitions: ptr.To[int32](-1)}), "negative", "", 0, 0},
		{"fresh", lease(mutex, coordinationv1.LeaseSpec{}), "", "", 0, 0},
		{"held with ttl", lease(withTTL, coordinationv1.LeaseSpec{HolderIdentity: ptr.To("alice"), LeaseTransitions: ptr.To[int32](4)}), "", "alice", 90 * time.Second, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decode(tc.lease)
			if tc.wantReason != "" {
				var nm *NotMutexError
				if !errors.Is(err, ErrNotMutex) || !errors.As(err, &nm) || !strings.Contains(nm.Reason, tc.wantReason) {
					t.Fatalf("decode: got %v, want ErrNotMutex with reason containing %q", err, tc.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if r.holder != tc.holder || r.ttl != tc.ttl || r.token != tc.token {
				t.Errorf("decode: got holder %q ttl %s token %d, want %q %s %d", r.holder, r.ttl, r.token, tc.holder, tc.ttl, tc.token)
			}
		})
	}

	t.Run("last write is the newest managed-fields time", func(t *testing.T) {
		l := lease(mutex, coordinationv1.LeaseSpec{})
		l.ManagedFields = []metav1.ManagedFieldsEntry{
			{Manager: "a", Time: &metav1.Time{Time: t2}},
			{Manager: "b", Time: &metav1.Time{Time: t1}},
			{Manager: "c"},
		}
		r, err := decode(l)
		if err != nil {
			t.Fatal(err)
		}
		if !r.lastWrite.Equal(t2) {
			t.Errorf("lastWrite: got %v, want %v", r.lastWrite, t2)
		}
	})
}

func TestLeaseSpecTransitions(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 123456000, time.UTC)
	r, err := decode(newLease("ns", "m", 90*time.Second, false))
	if err != nil {
		t.Fatal(err)
	}
	l, token, err := r.acquire("alice", now)
	if err != nil {
		t.Fatal(err)
	}
	if token != 1 || ptr.Deref(l.Spec.HolderIdentity, "") != "alice" || ptr.Deref(l.Spec.LeaseDurationSeconds, 0) != 90 ||
		!l.Spec.AcquireTime.Time.Equal(now) || !l.Spec.RenewTime.Time.Equal(now) {
		t.Errorf("acquire: got token %d spec %+v", token, l.Spec)
	}
	// The leader-election view of a held mutex.
	if rec := resourcelock.LeaseSpecToLeaderElectionRecord(&l.Spec); rec.HolderIdentity != "alice" || rec.LeaderTransitions != 1 {
		t.Errorf("leader-election view: got %+v", rec)
	}
	held, err := decode(l)
	if err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Second)
	if got := held.renew(later).Spec; !got.RenewTime.Time.Equal(later) || !got.AcquireTime.Time.Equal(now) || *got.LeaseTransitions != 1 {
		t.Errorf("renew: got %+v", got)
	}
	rel := held.release(later).Spec
	if rel.HolderIdentity != nil || rel.AcquireTime != nil || *rel.LeaseTransitions != 1 || *rel.LeaseDurationSeconds != 90 {
		t.Errorf("release: got %+v, want no holder, no acquireTime, token and duration kept", rel)
	}

	noTTL, _ := decode(newLease("ns", "m", 0, false))
	if l, _, _ := noTTL.acquire("bob", now); l.Spec.LeaseDurationSeconds != nil {
		t.Errorf("acquire without TTL: leaseDurationSeconds %d, want unset", *l.Spec.LeaseDurationSeconds)
	}
	exhausted := &record{lease: newLease("ns", "m", 0, false), token: 1<<31 - 1}
	if _, _, err := exhausted.acquire("bob", now); !errors.Is(err, ErrTokenExhausted) {
		t.Errorf("acquire at the largest token: got %v, want ErrTokenExhausted", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		what string
		err  error
		want string // empty: valid
	}{
		{"name", ValidateName("db-migration"), ""},
		{"dotted name", ValidateName("a.b-c"), ""},
		{"empty name", ValidateName(""), "empty"},
		{"upper", ValidateName("Upper"), "lower case"},
		{"slash", ValidateName("a/b"), "invalid mutex name"},
		{"too long", ValidateName(strings.Repeat("a", 254)), "no more than 253"},
		{"namespace", ValidateNamespace("team-a"), ""},
		{"empty namespace", ValidateNamespace(""), "empty"},
		{"dotted namespace", ValidateNamespace("a.b"), "invalid namespace"},
		{"holder", ValidateHolder("pod-abc-123"), ""},
		{"unicode holder", ValidateHolder("wörker 1"), ""},
		{"empty holder", ValidateHolder(""), "empty"},
		{"padded holder", ValidateHolder("x "), "white space"},
		{"newline holder", ValidateHolder("a\nb"), "control character"},
		{"bad utf8 holder", ValidateHolder("\xff"), "UTF-8"},
		{"long holder", ValidateHolder(strings.Repeat("h", 254)), "254 bytes"},
	} {
		switch {
		case tc.want == "" && tc.err != nil:
			t.Errorf("%s: got %v, want valid", tc.what, tc.err)
		case tc.want != "" && (!errors.Is(tc.err, ErrInvalid) || !strings.Contains(tc.err.Error(), tc.want)):
			t.Errorf("%s: got %v, want ErrInvalid containing %q", tc.what, tc.err, tc.want)
		}
	}
}

func TestIsDefinite(t *testing.T) {
	gr := schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"conflict", apierrors.NewConflict(gr, "m", errors.New("x")), true},
		{"forbidden", apierrors.NewForbidden(gr, "m", errors.New("x")), true},
		{"invalid", apierrors.NewBadRequest("x"), true},
		{"wrapped forbidden", fmt.Errorf("ctx: %w", apierrors.NewForbidden(gr, "m", errors.New("x"))), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "update", 1), false},
		{"timeout", apierrors.NewTimeoutError("x", 1), false},
		{"internal", apierrors.NewInternalError(errors.New("x")), false},
		{"unavailable", apierrors.NewServiceUnavailable("x"), false},
		{"cancelled", context.Canceled, false},
		{"connection", &net.OpError{Op: "dial", Err: errors.New("refused")}, false},
	} {
		if got := isDefinite(tc.err); got != tc.want {
			t.Errorf("isDefinite(%s): got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLockedError(t *testing.T) {
	exp := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	err := error(&LockedError{Namespace: "ns", Name: "m", Holder: "alice", ExpiresAt: exp, cause: context.DeadlineExceeded})
	if !errors.Is(err, ErrLocked) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNotHeld) {
		t.Errorf("errors.Is on %v: wrong matches", err)
	}
	want := `mutex ns/m is locked by "alice" until 2026-01-01T00:00:00Z unless renewed: context deadline exceeded`
	if got := err.Error(); got != want {
		t.Errorf("Error():\ngot  %s\nwant %s", got, want)
	}
}

func TestOptionsValidated(t *testing.T) {
	if _, err := NewClient(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewClient(nil): got %v, want ErrInvalid", err)
	}
	c := fakeClient(t)
	for _, tc := range []struct {
		name string
		opts []Option
		want string
	}{
		{"ttl below minimum", []Option{WithTTL(time.Millisecond)}, "1ms"},
		{"cleanup timeout", []Option{WithCleanupTimeout(-time.Second)}, "cleanup timeout"},
		{"required ttl above maximum", []Option{WithRequiredTTL(10 * 365 * 24 * time.Hour)}, "87600h"},
		{"retry timeout", []Option{WithRetryTimeout(0)}, "retry timeout"},
		{"holder", []Option{WithHolder("a\tb")}, "control character"},
	} {
		if _, err := c.NewMutex("ns", "m", tc.opts...); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ErrInvalid containing %q", tc.name, err, tc.want)
		}
	}
	m, err := c.NewMutex("ns", "m")
	if err != nil {
		t.Fatal(err)
	}
	if h := m.Holder(); ValidateHolder(h) != nil || !strings.Contains(h, "-") {
		t.Errorf("default holder %q: want a valid host-name-plus-suffix identity", h)
	}
	if other, _ := c.NewMutex("ns", "m"); other.Holder() == m.Holder() {
		t.Errorf("two handles share the default identity %q", m.Holder())
	}
}
