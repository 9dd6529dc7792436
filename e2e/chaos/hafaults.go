package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/konlease/konlease/lock"
)

// The topologies of the control plane (-topology).
const (
	topologySingle = "single"
	topologyHA     = "ha"
)

// haFault injects one of the HA topology's faults; each ends once the
// component it broke is healthy again, so that the fault's end is when
// the cluster was whole again (the start of the liveness figure).
func (o *orchestrator) haFault(ctx context.Context, kind string, r *record) error {
	switch kind {
	case "etcd-leader", "etcd-follower":
		leader, err := o.env.EtcdLeader(ctx)
		if err != nil {
			return err
		}
		i := leader
		if kind == "etcd-follower" {
			i = (leader + 1 + o.rng.IntN(o.env.EtcdMemberCount()-1)) % o.env.EtcdMemberCount()
		}
		r.Worker = fmt.Sprintf("etcd-%d", i)
		if err := o.env.KillEtcdMember(ctx, i); err != nil {
			return err
		}
		// Down for a while: the others elect a leader (or go on with
		// theirs) and the API servers' clients fail over.
		sleep(ctx, time.Duration(1000+o.rng.IntN(2000))*time.Millisecond)
		return o.env.StartEtcdMember(ctx, i)
	case "etcd-partition":
		// Cut off for longer than etcd's election timeout (1s by default),
		// the leader as often as a follower.
		i := o.rng.IntN(o.env.EtcdMemberCount())
		if o.rng.IntN(2) == 0 {
			if leader, err := o.env.EtcdLeader(ctx); err == nil {
				i = leader
			}
		}
		d := time.Duration(3000+o.rng.IntN(3000)) * time.Millisecond
		r.Worker = fmt.Sprintf("etcd-%d", i)
		r.Holder = fmt.Sprintf("for %s", d)
		if err := o.env.PartitionEtcdMember(i); err != nil {
			return err
		}
		sleep(ctx, d)
		if err := o.env.HealEtcdMember(i); err != nil {
			return err
		}
		return o.env.WaitEtcdMember(ctx, i)
	case "apiserver-one":
		// Each API server in turn.
		i := o.nextAPIServer % o.env.APIServerCount()
		o.nextAPIServer++
		r.Worker = fmt.Sprintf("kube-apiserver-%d", i)
		if err := o.env.KillAPIServerN(ctx, i); err != nil {
			return err
		}
		return o.env.StartAPIServerN(ctx, i)
	case "move":
		// The clients of one API server move to the others, in the middle
		// of whatever they do: the record says which holds and waits.
		b := o.env.Balancer()
		i := o.rng.IntN(b.Backends())
		busy := o.busy(ctx)
		n := b.Disable(i)
		r.Worker = fmt.Sprintf("kube-apiserver-%d", i)
		r.Holder = fmt.Sprintf("%d connections moved; %s", n, busy)
		sleep(ctx, time.Duration(1000+o.rng.IntN(2000))*time.Millisecond)
		b.Enable(i)
		return nil
	}
	return fmt.Errorf("unknown fault %q", kind)
}

// busy says which mutexes are held and how many wait on the fair ones.
func (o *orchestrator) busy(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var held []string
	waiting := 0
	for _, m := range slices.Sorted(maps.Keys(mutexTTLs)) {
		st, err := o.locks.Get(ctx, namespace, m)
		if err != nil {
			continue
		}
		if st.Phase == lock.PhaseLocked {
			held = append(held, m)
		}
		waiting += len(st.Waiters)
	}
	return fmt.Sprintf("held: %s; fair waiters: %d", strings.Join(held, ","), waiting)
}
