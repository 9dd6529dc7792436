package lock

import (
	"errors"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// labelledLease is a Lease with the mutex label, the given extra labels
// and annotations.
func labelledLease(ns, name string, extra, annotations map[string]string) *coordinationv1.Lease {
	l := map[string]string{LabelKind: KindMutex}
	for k, v := range extra {
		l[k] = v
	}
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l, Annotations: annotations},
		Spec:       coordinationv1.LeaseSpec{LeaseTransitions: ptr.To[int32](0)},
	}
}

// TestListInvalid: a labelled Lease that is not a valid mutex is listed as
// Invalid with the reason get gives, not left out; a Lease without the
// label is not listed at all.
func TestListInvalid(t *testing.T) {
	mutex := map[string]string{AnnotationUnlock: UnlockExplicit}
	cs := fake.NewClientset(
		labelledLease("ns", "good", nil, mutex),
		labelledLease("ns", "bad-ttl", nil, map[string]string{AnnotationUnlock: UnlockExplicit, AnnotationTTL: "abc"}),
		labelledLease("ns", "no-annotation", nil, nil),
		labelledLease("other", "elsewhere", nil, mutex),
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "leader"}},
	)
	c, err := NewClient(cs.CoordinationV1())
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.List(t.Context(), "ns")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name   string
		phase  Phase
		reason string
	}{
		{"bad-ttl", PhaseInvalid, `annotation konlease.io/ttl: invalid TTL "abc": not a Go duration`},
		{"good", PhaseUnlocked, ""},
		{"no-annotation", PhaseInvalid, "it has no konlease.io/unlock annotation"},
	}
	if len(got) != len(want) {
		t.Fatalf("List = %+v, want %d items", got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Phase != w.phase || !strings.Contains(g.Reason, w.reason) || (w.reason == "") != (g.Reason == "") {
			t.Errorf("item %d = %+v, want %s with phase %s and reason ~%q", i, g, w.name, w.phase, w.reason)
		}
		// The reason is the one get refuses the Lease with.
		if w.phase == PhaseInvalid {
			_, gerr := c.Get(t.Context(), "ns", w.name)
			var nm *NotMutexError
			if !errors.As(gerr, &nm) || nm.Reason != g.Reason {
				t.Errorf("Get(%s) = %v, want a NotMutexError with reason %q", w.name, gerr, g.Reason)
			}
		}
	}
}

func TestListLabelSelector(t *testing.T) {
	mutex := map[string]string{AnnotationUnlock: UnlockExplicit}
	cs := fake.NewClientset(
		labelledLease("ns", "a", map[string]string{"team": "payments"}, mutex),
		labelledLease("ns", "b", map[string]string{"team": "search"}, mutex),
		labelledLease("ns", "c", nil, mutex),
	)
	c, err := NewClient(cs.CoordinationV1())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		selector string
		want     []string
	}{
		{"", []string{"a", "b", "c"}},
		{"team=payments", []string{"a"}},
		{"team", []string{"a", "b"}},
		{"!team", []string{"c"}},
		{"team notin (payments)", []string{"b", "c"}},
		// The mutex label is always required, whatever the selector says.
		{LabelKind + "!=" + KindMutex, nil},
	} {
		t.Run(tc.selector, func(t *testing.T) {
			sel, err := labels.Parse(tc.selector)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.List(t.Context(), "ns", WithLabelSelector(sel))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, s := range got {
				names = append(names, s.Name)
			}
			if strings.Join(names, ",") != strings.Join(tc.want, ",") {
				t.Errorf("List -l %q = %v, want %v", tc.selector, names, tc.want)
			}
		})
	}
	got, err := c.List(t.Context(), "ns", WithLabelSelector(labels.Nothing()))
	if err != nil || got == nil || len(got) != 0 {
		t.Errorf("List with labels.Nothing() = %v, %v; want an empty list", got, err)
	}
}

func TestListErrorAllNamespaces(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "", errors.New("RBAC: nope"))
	all := listError("", forbidden)
	for _, want := range []string{"in all namespaces", "ClusterRole", "ClusterRoleBinding", "a Role grants verbs in its own namespace only"} {
		if !strings.Contains(all.Error(), want) {
			t.Errorf("all-namespaces error %q lacks %q", all, want)
		}
	}
	if !apierrors.IsForbidden(all) {
		t.Errorf("all-namespaces error no longer IsForbidden: %v", all)
	}
	one := listError("ns", forbidden)
	if strings.Contains(one.Error(), "ClusterRole") || !strings.Contains(one.Error(), `grant the "list" verb`) {
		t.Errorf("one-namespace error %q: want the Role hint, not the ClusterRole one", one)
	}
}

func TestNotFoundError(t *testing.T) {
	c := fakeClient(t)
	_, err := c.Get(t.Context(), "default", "x")
	if !errors.Is(err, ErrNotFound) || err.Error() != "mutex default/x not found" {
		t.Errorf("Get of a missing mutex = %q, want %q matching ErrNotFound", err, "mutex default/x not found")
	}
	_, err = c.Delete(t.Context(), "default", "x", DeleteOptions{})
	if !errors.Is(err, ErrNotFound) || strings.Count(err.Error(), "not found") != 1 {
		t.Errorf("Delete of a missing mutex = %q", err)
	}
}

// TestDeleteReportsStatus: Delete says what it deleted, so that a forced
// delete can name whom it evicted.
func TestDeleteReportsStatus(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	held := labelledLease("ns", "held", nil, map[string]string{AnnotationUnlock: UnlockExplicit})
	held.Spec = leaseSpec("w1", 0, t0, t0, 4)
	c, err := NewClient(fake.NewClientset(held, labelledLease("ns", "free", nil, map[string]string{AnnotationUnlock: UnlockExplicit})).CoordinationV1())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(t.Context(), "ns", "held", DeleteOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("Delete of a held mutex without force = %v, want ErrLocked", err)
	}
	st, err := c.Delete(t.Context(), "ns", "held", DeleteOptions{Force: true})
	if err != nil || st.Holder != "w1" || st.Token != 4 || st.Phase != PhaseLocked || !st.LockedAt.Equal(t0) {
		t.Errorf("forced Delete = %+v, %v; want the holder w1 it evicted, token 4", st, err)
	}
	st, err = c.Delete(t.Context(), "ns", "free", DeleteOptions{})
	if err != nil || st.Holder != "" || st.Phase != PhaseUnlocked || st.Name != "free" {
		t.Errorf("Delete of a free mutex = %+v, %v", st, err)
	}
}
