//go:build e2e

package e2e

// These tests check, against a real kube-apiserver, the API behaviour that
// konlease builds on: optimistic concurrency on Leases, watch events, RBAC
// denials for restricted identities, and clients surviving control plane
// restarts. They also exercise the harness itself.

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

func kubeClient(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client for %s: %v", cfg.Host, err)
	}
	return c
}

func leaseFor(name, holder string) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(holder),
			LeaseDurationSeconds: ptr.To[int32](15),
			AcquireTime:          &metav1.MicroTime{Time: time.Now()},
		},
	}
}

func holderOf(l *coordinationv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return "<nil>"
	}
	return *l.Spec.HolderIdentity
}

// TestLeaseUpdateIsWatched creates a Lease, updates it, and expects a watch
// opened at the creation's resourceVersion to deliver the update.
func TestLeaseUpdateIsWatched(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	leases := kubeClient(t, env.Config()).CoordinationV1().Leases(ns)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	created, err := leases.Create(ctx, leaseFor("watched", "alice"), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create lease: %v", err)
	}
	w, err := leases.Watch(ctx, metav1.ListOptions{
		FieldSelector:   "metadata.name=watched",
		ResourceVersion: created.ResourceVersion,
	})
	if err != nil {
		t.Fatalf("watch lease: %v", err)
	}
	defer w.Stop()

	update := created.DeepCopy()
	update.Spec.HolderIdentity = ptr.To("bob")
	updated, err := leases.Update(ctx, update, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update lease: %v", err)
	}
	if got, want := holderOf(updated), "bob"; got != want {
		t.Errorf("holder after update = %q, want %q", got, want)
	}

	for {
		select {
		case <-ctx.Done():
			t.Fatalf("no MODIFIED event for resourceVersion %s: %v", updated.ResourceVersion, ctx.Err())
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed before the MODIFIED event")
			}
			if ev.Type == watch.Error {
				t.Fatalf("watch error: %v", apierrors.FromObject(ev.Object))
			}
			got, isLease := ev.Object.(*coordinationv1.Lease)
			if !isLease {
				t.Fatalf("watch event object is %T, want *Lease", ev.Object)
			}
			if ev.Type != watch.Modified {
				t.Fatalf("first event after create = %s (rv %s), want %s", ev.Type, got.ResourceVersion, watch.Modified)
			}
			if got.ResourceVersion != updated.ResourceVersion || holderOf(got) != "bob" {
				t.Fatalf("MODIFIED event = rv %s holder %q, want rv %s holder %q",
					got.ResourceVersion, holderOf(got), updated.ResourceVersion, "bob")
			}
			return
		}
	}
}

// TestStaleUpdateConflicts checks optimistic concurrency: an Update carrying
// an old resourceVersion is rejected with 409 Conflict and changes nothing.
func TestStaleUpdateConflicts(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	leases := kubeClient(t, env.Config()).CoordinationV1().Leases(ns)
	ctx := t.Context()

	created, err := leases.Create(ctx, leaseFor("contended", "alice"), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create lease: %v", err)
	}
	winner := created.DeepCopy()
	winner.Spec.HolderIdentity = ptr.To("bob")
	if _, err := leases.Update(ctx, winner, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("first update: %v", err)
	}

	stale := created.DeepCopy()
	stale.Spec.HolderIdentity = ptr.To("carol")
	_, err = leases.Update(ctx, stale, metav1.UpdateOptions{})
	if !apierrors.IsConflict(err) {
		t.Fatalf("update with stale resourceVersion %s: got error %v, want 409 Conflict", created.ResourceVersion, err)
	}

	got, err := leases.Get(ctx, "contended", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get lease: %v", err)
	}
	if holderOf(got) != "bob" {
		t.Errorf("holder after conflicting update = %q, want %q", holderOf(got), "bob")
	}
}

// TestRestrictedIdentity checks that a minted identity gets exactly the verbs
// its Role grants: reads succeed, writes are 403 Forbidden. It also checks
// the identity through a kubeconfig written for CLI tests.
func TestRestrictedIdentity(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	ctx := t.Context()
	if _, err := kubeClient(t, env.Config()).CoordinationV1().Leases(ns).Create(ctx, leaseFor("guarded", "alice"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create lease as admin: %v", err)
	}
	reader := env.Identity(t, ns, "get", "list", "watch")

	kc, err := clientcmd.BuildConfigFromFlags("", env.WriteKubeconfig(t, reader, ns))
	if err != nil {
		t.Fatalf("load written kubeconfig: %v", err)
	}
	clients := map[string]*rest.Config{"rest.Config": reader, "kubeconfig": kc}

	tests := []struct {
		name          string
		op            func(ctx context.Context, c kubernetes.Interface) error
		wantForbidden bool
	}{
		{"get", func(ctx context.Context, c kubernetes.Interface) error {
			_, err := c.CoordinationV1().Leases(ns).Get(ctx, "guarded", metav1.GetOptions{})
			return err
		}, false},
		{"list", func(ctx context.Context, c kubernetes.Interface) error {
			_, err := c.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{})
			return err
		}, false},
		{"update", func(ctx context.Context, c kubernetes.Interface) error {
			l, err := c.CoordinationV1().Leases(ns).Get(ctx, "guarded", metav1.GetOptions{})
			if err != nil {
				return err
			}
			l.Spec.HolderIdentity = ptr.To("mallory")
			_, err = c.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{})
			return err
		}, true},
		{"create", func(ctx context.Context, c kubernetes.Interface) error {
			_, err := c.CoordinationV1().Leases(ns).Create(ctx, leaseFor("other", "mallory"), metav1.CreateOptions{})
			return err
		}, true},
		{"delete", func(ctx context.Context, c kubernetes.Interface) error {
			return c.CoordinationV1().Leases(ns).Delete(ctx, "guarded", metav1.DeleteOptions{})
		}, true},
		{"list in another namespace", func(ctx context.Context, c kubernetes.Interface) error {
			_, err := c.CoordinationV1().Leases("default").List(ctx, metav1.ListOptions{})
			return err
		}, true},
	}
	for via, cfg := range clients {
		client := kubeClient(t, cfg)
		for _, tt := range tests {
			t.Run(via+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				err := tt.op(t.Context(), client)
				switch {
				case tt.wantForbidden && !apierrors.IsForbidden(err):
					t.Errorf("got error %v, want 403 Forbidden", err)
				case !tt.wantForbidden && err != nil:
					t.Errorf("got error %v, want success", err)
				}
			})
		}
	}
}

// TestControlPlaneRestart restarts each local component and expects a client
// built before the restart to update a Lease afterwards, with the data kept.
// Not parallel: restarts disturb every test sharing the control plane, and
// Go runs all sequential top-level tests before releasing parallel ones.
func TestControlPlaneRestart(t *testing.T) {
	if !env.Local() {
		t.Skip("restarts need the local control plane; using an external cluster")
	}
	ns := env.Namespace(t)
	leases := kubeClient(t, env.Config()).CoordinationV1().Leases(ns)

	tests := []struct {
		name    string
		restart func(context.Context) error
	}{
		{"kube-apiserver", env.RestartAPIServer},
		{"etcd", env.RestartEtcd},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			before, err := leases.Create(ctx, leaseFor("restart-"+tt.name, "alice"), metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create lease: %v", err)
			}
			if err := tt.restart(ctx); err != nil {
				t.Fatalf("restart %s: %v", tt.name, err)
			}
			got, err := leases.Get(ctx, before.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get lease after restart: %v", err)
			}
			if got.ResourceVersion != before.ResourceVersion || holderOf(got) != "alice" {
				t.Errorf("lease after restart = rv %s holder %q, want rv %s holder %q",
					got.ResourceVersion, holderOf(got), before.ResourceVersion, "alice")
			}
			got.Spec.HolderIdentity = ptr.To("bob")
			updated, err := leases.Update(ctx, got, metav1.UpdateOptions{})
			if err != nil {
				t.Fatalf("update lease after restart: %v", err)
			}
			if holderOf(updated) != "bob" {
				t.Errorf("holder after update = %q, want %q", holderOf(updated), "bob")
			}
		})
	}
}
