package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/konlease/konlease/lock"
)

// The semaphore rows: uncontended Acquire+Release against the mutex's
// cycle, a limit of 4 under 32 waiters over four clients, and an idle
// holder's writes per TTL.

// semCycle measures uncontended Acquire+Release and its requests.
func semCycle(ctx context.Context, r *Results, cfg *rest.Config, ns string, n int) error {
	c, cnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	if _, _, err := c.CreateSemaphore(ctx, ns, "sem-cycle", lock.SemaphoreOptions{Limit: 4}); err != nil {
		return err
	}
	s, err := c.NewSemaphore(ns, "sem-cycle", lock.WithHolder("bench"))
	if err != nil {
		return err
	}
	var lat []time.Duration
	var acq, rel int
	for i := range n + warmup {
		if i == warmup {
			cnt.take()
		}
		t0 := time.Now()
		if err := s.Acquire(ctx); err != nil {
			return err
		}
		if i >= warmup {
			v, _ := cnt.take()
			acq += syncRequests(v)
		}
		if err := s.Release(ctx); err != nil {
			return err
		}
		if i >= warmup {
			lat = append(lat, time.Since(t0))
			v, _ := cnt.take()
			rel += syncRequests(v)
		}
	}
	r.latency("sem.cycle", "semaphore: uncontended Acquire+Release", lat, "")
	r.value("sem.req.acquire", "semaphore: API requests per Acquire", "req", float64(acq)/float64(n), "the semaphore's GET, the slots' LIST, the take")
	r.value("sem.req.release", "semaphore: API requests per Release", "req", float64(rel)/float64(n), "")
	return nil
}

// semContention runs workers over fairProcesses clients on a semaphore of
// limit, each acquiring and releasing as fast as it can for d.
func semContention(ctx context.Context, r *Results, cfg *rest.Config, ns string, limit, workers int, d time.Duration) error {
	name := fmt.Sprintf("sem-%d-%d", limit, workers)
	clients := make([]*lock.Client, fairProcesses)
	counters := make([]*counter, fairProcesses)
	for i := range clients {
		c, cnt, err := newLockClient(cfg)
		if err != nil {
			return err
		}
		clients[i], counters[i] = c, cnt
	}
	if _, _, err := clients[0].CreateSemaphore(ctx, ns, name, lock.SemaphoreOptions{Limit: limit}); err != nil {
		return err
	}
	var mu sync.Mutex
	acqs := 0
	var inside, most int
	start := make(chan struct{})
	deadline := time.Now().Add(d + 2*time.Second)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := clients[w%fairProcesses].NewSemaphore(ns, name, lock.WithHolder(fmt.Sprint("w", w)))
			if err != nil {
				errs <- err
				return
			}
			<-start
			for time.Now().Before(deadline) {
				if err := s.Acquire(ctx); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				acqs++
				inside++
				most = max(most, inside)
				inside--
				mu.Unlock()
				if err := s.Release(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	<-time.After(time.Second)
	close(start)
	<-time.After(time.Second) // warm-up, as for the fair rows
	mu.Lock()
	base := acqs
	mu.Unlock()
	for _, c := range counters {
		c.take()
	}
	warm := time.Now()
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	verbs := map[string]int{}
	conflicts := 0
	for _, c := range counters {
		v, k := c.take()
		conflicts += k
		for key, n := range v {
			verbs[key] += n
		}
	}
	n := float64(acqs - base)
	key := fmt.Sprintf("sem.contention.%d.%d", limit, workers)
	title := fmt.Sprintf("semaphore, limit %d: %d waiters over %d clients", limit, workers, fairProcesses)
	r.value(key+".rate", title+", acquisitions/s", "acq/s", n/time.Since(warm).Seconds(), "after a second of warm-up")
	r.value(key+".conflicts", title+", 409 conflicts per acquisition", "409/acq", float64(conflicts)/n, "")
	r.value(key+".requests", title+", API requests per Acquire+Release", "req/acq", float64(syncRequests(verbs))/n, byVerb(verbs, "GET", "LIST", "PUT", "WATCH"))
	return nil
}

// semIdle measures an idle holder's writes per TTL.
func semIdle(ctx context.Context, r *Results, cfg *rest.Config, ns string, ttlD, window time.Duration) error {
	c, cnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	if _, _, err := c.CreateSemaphore(ctx, ns, "sem-idle", lock.SemaphoreOptions{Limit: 2, TTL: ttlD}); err != nil {
		return err
	}
	s, err := c.NewSemaphore(ns, "sem-idle", lock.WithHolder("idle"))
	if err != nil {
		return err
	}
	if err := s.Acquire(ctx); err != nil {
		return err
	}
	defer s.Release(context.WithoutCancel(ctx))
	cnt.take()
	<-time.After(window)
	v, _ := cnt.take()
	writes := v["PUT"] + v["POST"] + v["DELETE"]
	r.value("sem.idle.holder", fmt.Sprintf("semaphore: idle holder, TTL %s, writes per TTL", ttlD), "req/TTL", float64(writes)/(window.Seconds()/ttlD.Seconds()), "")
	return nil
}
