//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/lock"
)

// haRecover bounds how long the API may take to answer again after one
// member or API server of the HA topology fails: a new etcd election, the
// API servers' etcd clients failing over, a client reconnecting.
const haRecover = 30 * time.Second

// TestHATopology starts the HA topology of package harness (three etcd
// members, two API servers behind the balancer) and checks each fault
// control on it: the API stays up through the loss of one member or one
// API server, a partitioned member loses its leader and regains it once
// healed, and a mutex stays held, and a waiter waits on, while their
// connections move between API servers.
func TestHATopology(t *testing.T) {
	if !env.Local() {
		t.Skip("the HA topology is a local control plane")
	}
	ha, err := harness.Start(t.Context(), harness.Options{HA: &harness.HAOptions{}, Logf: t.Logf})
	if err != nil {
		t.Fatalf("start the HA topology: %v", err)
	}
	t.Cleanup(func() {
		if err := ha.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	if got := ha.APIServerCount(); got != 2 {
		t.Fatalf("APIServerCount() = %d, want 2", got)
	}
	ns := ha.Namespace(t)
	// write creates a ConfigMap through the balancer, retrying while the
	// API recovers; it fails the test if the API does not answer in time.
	write := func(t *testing.T, name string) {
		t.Helper()
		cs := ha.Client()
		var last error
		err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, haRecover, true, func(ctx context.Context) (bool, error) {
			_, last = cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
			return last == nil, nil
		})
		if err != nil {
			t.Fatalf("create %s through the balancer: %v (last: %v)", name, err, last)
		}
	}

	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"a token minted on one API server works on the other", func(t *testing.T) {
			cfg := ha.Identity(t, ns, "get", "create")
			for i := range ha.APIServerCount() {
				direct, err := ha.APIServerConfig(i)
				if err != nil {
					t.Fatal(err)
				}
				direct.BearerToken = cfg.BearerToken
				direct.BearerTokenFile = ""
				cs, err := kubernetes.NewForConfig(direct)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := cs.CoordinationV1().Leases(ns).List(t.Context(), metav1.ListOptions{}); err == nil {
					t.Errorf("kube-apiserver-%d: list allowed without the list verb", i)
				}
				if _, err := cs.CoordinationV1().Leases(ns).Get(t.Context(), "absent", metav1.GetOptions{}); err == nil || !apierrors.IsNotFound(err) {
					t.Errorf("kube-apiserver-%d: get with the minted token: %v, want NotFound", i, err)
				}
			}
		}},
		{"the etcd leader's crash", func(t *testing.T) {
			leader, err := ha.EtcdLeader(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if err := ha.KillEtcdMember(t.Context(), leader); err != nil {
				t.Fatal(err)
			}
			write(t, "after-leader-crash")
			next, err := ha.EtcdLeader(t.Context())
			if err != nil || next == leader {
				t.Errorf("leader after etcd-%d's crash: %d, %v; want another", leader, next, err)
			}
			if err := ha.StartEtcdMember(t.Context(), leader); err != nil {
				t.Fatal(err)
			}
		}},
		{"a partitioned member loses its leader until healed", func(t *testing.T) {
			leader, err := ha.EtcdLeader(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			i := (leader + 1) % ha.EtcdMemberCount()
			if err := ha.PartitionEtcdMember(i); err != nil {
				t.Fatal(err)
			}
			err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, haRecover, true, func(ctx context.Context) (bool, error) {
				return ha.CheckEtcdMember(ctx, i) != nil, nil
			})
			if err != nil {
				t.Errorf("etcd-%d still healthy while partitioned: %v", i, err)
			}
			write(t, "during-partition")
			if err := ha.HealEtcdMember(i); err != nil {
				t.Fatal(err)
			}
			if err := ha.WaitEtcdMember(t.Context(), i); err != nil {
				t.Errorf("etcd-%d after the partition healed: %v", i, err)
			}
		}},
		{"each API server's crash in turn", func(t *testing.T) {
			for i := range ha.APIServerCount() {
				if err := ha.KillAPIServerN(t.Context(), i); err != nil {
					t.Fatal(err)
				}
				write(t, fmt.Sprintf("after-apiserver-%d-crash", i))
				if err := ha.StartAPIServerN(t.Context(), i); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"a hold and a wait move between API servers", func(t *testing.T) {
			c := newClient(t, ha.Config())
			holder := newMutex(t, c, ns, "moved", lock.WithTTL(3*time.Second), lock.WithHolder("holder"))
			if err := holder.Lock(t.Context()); err != nil {
				t.Fatal(err)
			}
			waiter := newMutex(t, c, ns, "moved", lock.WithTTL(3*time.Second), lock.WithHolder("waiter"))
			waited := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				waited <- waiter.Lock(ctx)
			}()
			b := ha.Balancer()
			// Each API server's clients move to the other, twice, for
			// longer than the TTL altogether: the hold is renewed
			// throughout, and the waiter does not take it.
			for round := range 2 * b.Backends() {
				i := round % b.Backends()
				token := holder.Token()
				b.Disable(i)
				moved := time.Now()
				err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, haRecover, true, func(ctx context.Context) (bool, error) {
					st, err := c.Get(ctx, ns, "moved")
					return err == nil && st.Holder == "holder" && st.RenewedAt.After(moved), nil
				})
				b.Enable(i)
				if err != nil {
					t.Fatalf("round %d: the hold was not renewed after its clients moved off kube-apiserver-%d: %v", round, i, err)
				}
				if got := holder.Token(); got != token {
					t.Fatalf("round %d: token %d, want %d (the same hold)", round, got, token)
				}
			}
			select {
			case <-holder.Done():
				t.Fatalf("the hold ended while its connections moved: %v", holder.Err())
			case err := <-waited:
				t.Fatalf("the waiter returned while the mutex was held: %v", err)
			default:
			}
			if err := holder.Unlock(t.Context()); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-waited:
				if err != nil {
					t.Fatalf("the waiter after the unlock: %v", err)
				}
			case <-time.After(haRecover):
				t.Fatal("the waiter did not acquire after the unlock")
			}
		}},
	} {
		if !t.Run(tc.name, tc.run) {
			return // the next one needs the topology whole
		}
	}
}
