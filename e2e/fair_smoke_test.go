//go:build e2e

package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/konlease/konlease/lock"
)

func TestFairSmoke(t *testing.T) {
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	if _, _, err := c.Create(t.Context(), ns, "m", lock.CreateOptions{Fair: true}); err != nil {
		t.Fatal(err)
	}
	h := newMutex(t, c, ns, "m", lock.WithHolder("h"))
	if err := h.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	const n = 5
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range n {
		queued := make(chan struct{})
		var once sync.Once
		m := newMutex(t, c, ns, "m", lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			if err := m.Lock(ctx); err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			if err := m.Unlock(ctx); err != nil {
				t.Errorf("waiter %d unlock: %v", i, err)
			}
		}()
		<-queued
	}
	st, err := c.Get(t.Context(), ns, "m")
	t.Logf("status %+v %v", st, err)
	if err := h.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	t.Logf("order %v", order)
	for i, got := range order {
		if got != i {
			t.Errorf("order %v, want FIFO", order)
			break
		}
	}
}
