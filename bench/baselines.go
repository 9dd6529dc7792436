package main

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// leTimings are the three leader-election durations.
type leTimings struct {
	name                        string
	lease, renewDeadline, retry time.Duration
}

var (
	// leDefault is what most controllers run with.
	leDefault = leTimings{"LE default", 15 * time.Second, 10 * time.Second, 2 * time.Second}
	// leTight is the shortest lease the Lease API can store (whole seconds,
	// at least 1), with the renew deadline and retry period below it that
	// NewLeaderElector accepts: a 10 Hz retry loop.
	leTight = leTimings{"LE 1s", time.Second, 800 * time.Millisecond, 100 * time.Millisecond}
)

// leCandidate runs a leader-election candidate for ns/name until ctx ends,
// releasing the Lease on cancel (ReleaseOnCancel), as a lock user would. It
// closes leading when it becomes leader.
func leCandidate(ctx context.Context, cfg *rest.Config, ns, name, id string, t leTimings, leading chan<- time.Time) (done <-chan struct{}, err error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	lk, err := resourcelock.New(resourcelock.LeasesResourceLock, ns, name, cs.CoreV1(), cs.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: id})
	if err != nil {
		return nil, err
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lk, LeaseDuration: t.lease, RenewDeadline: t.renewDeadline, RetryPeriod: t.retry,
		ReleaseOnCancel: true, Name: name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { leading <- time.Now() },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return nil, err
	}
	ch := make(chan struct{})
	go func() { defer close(ch); le.Run(ctx) }()
	return ch, nil
}

// leHandoff measures leader election used as a lock: the leader cancels
// (and so releases the Lease) at t0; a candidate that was already retrying
// becomes leader at t1.
func leHandoff(ctx context.Context, r *Results, cfg *rest.Config, ns string, t leTimings, n int) error {
	name := "le-handoff-" + map[bool]string{true: "default", false: "tight"}[t == leDefault]
	leading := make(chan time.Time, 1)
	lctx, lcancel := context.WithCancel(ctx)
	ldone, err := leCandidate(lctx, cfg, ns, name, "c0", t, leading)
	if err != nil {
		lcancel()
		return err
	}
	<-leading
	var lat []time.Duration
	for i := range n {
		wcfg, wcnt := counted(cfg)
		wctx, wcancel := context.WithCancel(ctx)
		wdone, err := leCandidate(wctx, wcfg, ns, name, fmt.Sprint("c", i+1), t, leading)
		if err != nil {
			wcancel()
			lcancel()
			return err
		}
		// The candidate is retrying once it has read the Lease once; then
		// wait a random part of its retry period so that the release lands
		// anywhere in its cycle, as it would in life.
		for {
			v, _ := wcnt.take()
			if v["GET"] > 0 {
				break
			}
			<-time.After(10 * time.Millisecond)
		}
		<-time.After(time.Duration(float64(t.retry) * jitterFraction(i)))
		t0 := time.Now()
		lcancel()
		<-ldone
		t1 := <-leading
		lat = append(lat, t1.Sub(t0))
		lcancel, ldone = wcancel, wdone
	}
	lcancel()
	<-ldone
	r.latency("le."+t.key()+".handoff", fmt.Sprintf("%s: handoff (release → next leader)", t.name), lat,
		fmt.Sprintf("lease %s, renew deadline %s, retry %s", t.lease, t.renewDeadline, t.retry))
	return nil
}

func (t leTimings) key() string {
	if t == leDefault {
		return "default"
	}
	return "tight"
}

// jitterFraction spreads sample i over [0,1) deterministically.
func jitterFraction(i int) float64 { return float64((i*7)%10) / 10 }

// leIdle measures the requests per minute of an idle leader and an idle
// candidate at timings t.
func leIdle(ctx context.Context, r *Results, cfg *rest.Config, ns string, t leTimings, window time.Duration) error {
	name := "le-idle-" + t.key()
	hcfg, hcnt := counted(cfg)
	wcfg, wcnt := counted(cfg)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	leading := make(chan time.Time, 2)
	hdone, err := leCandidate(cctx, hcfg, ns, name, "leader", t, leading)
	if err != nil {
		return err
	}
	<-leading
	wdone, err := leCandidate(cctx, wcfg, ns, name, "candidate", t, leading)
	if err != nil {
		return err
	}
	hcnt.take()
	wcnt.take()
	<-time.After(window)
	hv, _ := hcnt.take()
	wv, _ := wcnt.take()
	cancel()
	<-hdone
	<-wdone
	total := func(v map[string]int) float64 {
		n := 0
		for _, k := range v {
			n += k
		}
		return float64(n) / window.Minutes()
	}
	r.value("le."+t.key()+".idle.holder", t.name+": idle leader, requests/min", "req/min", total(hv), "")
	r.value("le."+t.key()+".idle.waiter", t.name+": idle candidate, requests/min", "req/min", total(wv), "")
	return nil
}

// etcdSettle is how long the etcd waiter is given to be fully waiting.
const etcdSettle = 250 * time.Millisecond

// etcdMutex measures etcd's own concurrency.Mutex on the etcd that backs
// the API server: the floor a Lease lock pays API-server overhead on top of.
func etcdMutex(ctx context.Context, r *Results, endpoint string, n int) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	s1, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		return err
	}
	defer s1.Close()
	s2, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		return err
	}
	defer s2.Close()
	const pfx = "/konlease-bench/mutex"
	m1 := concurrency.NewMutex(s1, pfx)
	var cycle []time.Duration
	for i := range n + warmup {
		t0 := time.Now()
		if err := m1.Lock(ctx); err != nil {
			return err
		}
		if err := m1.Unlock(ctx); err != nil {
			return err
		}
		if i >= warmup {
			cycle = append(cycle, time.Since(t0))
		}
	}
	r.latency("etcd.cycle", "etcd concurrency.Mutex: uncontended Lock+Unlock", cycle, "same etcd as the API server")

	m2 := concurrency.NewMutex(s2, pfx)
	var hand []time.Duration
	for i := range n + warmup {
		if err := m1.Lock(ctx); err != nil {
			return err
		}
		got := make(chan time.Time, 1)
		go func() {
			if err := m2.Lock(ctx); err == nil {
				got <- time.Now()
			} else {
				close(got)
			}
		}()
		// m2 is waiting once its key is there, behind m1's.
		for {
			resp, err := cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				return err
			}
			if resp.Count == 2 {
				break
			}
		}
		// Its key is there, but its watch on the key before it may not be
		// yet, and etcd delivers to a watch that starts in the past only
		// after its next sync of unsynced watchers (every 100ms). konlease's
		// waiter is measured once its watch is accepted; give etcd's the
		// same footing.
		<-time.After(etcdSettle)
		t0 := time.Now()
		if err := m1.Unlock(ctx); err != nil {
			return err
		}
		t1, ok := <-got
		if !ok {
			return fmt.Errorf("etcd mutex: waiter's Lock failed")
		}
		if i >= warmup {
			hand = append(hand, t1.Sub(t0))
		}
		if err := m2.Unlock(ctx); err != nil {
			return err
		}
	}
	r.latency("etcd.handoff", "etcd concurrency.Mutex: handoff", hand, "")
	return nil
}
