package lock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/konlease/konlease/lock"
)

// The examples run against client-go's fake clientset so that they can run
// anywhere; with a real cluster, build the client with lock.NewForConfig.

func ExampleMutex_Lock() {
	ctx := context.Background()
	c, _ := lock.NewClient(fake.NewClientset().CoordinationV1())

	m, err := c.NewMutex("default", "db-migration", lock.WithHolder("migrator-1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	// A deadline on ctx is the lock timeout.
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := m.Lock(lctx); err != nil {
		fmt.Println("not acquired:", err)
		return
	}
	fmt.Println("locked, fencing token", m.Token())
	if err := m.Unlock(ctx); err != nil {
		fmt.Println(err)
	}
	// Output: locked, fencing token 1
}

func ExampleMutex_TryLock() {
	ctx := context.Background()
	c, _ := lock.NewClient(fake.NewClientset().CoordinationV1())
	a, _ := c.NewMutex("default", "daily-job", lock.WithHolder("cron-a"))
	b, _ := c.NewMutex("default", "daily-job", lock.WithHolder("cron-b"))
	if err := a.TryLock(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer a.Unlock(ctx)

	err := b.TryLock(ctx)
	var locked *lock.LockedError
	if errors.As(err, &locked) {
		fmt.Println("skipping: already running under", locked.Holder)
	}
	// Output: skipping: already running under cron-a
}

func ExampleMutex_With() {
	ctx := context.Background()
	c, _ := lock.NewClient(fake.NewClientset().CoordinationV1())
	m, _ := c.NewMutex("default", "shared-file", lock.WithTTL(30*time.Second))

	err := m.With(ctx, func(ctx context.Context) error {
		// ctx is cancelled if the lock is lost; pass m.Token() to
		// resources that can refuse stale holders.
		fmt.Println("writing with token", m.Token())
		return nil
	})
	fmt.Println("err:", err)
	// Output:
	// writing with token 1
	// err: <nil>
}

func ExampleClient_List() {
	ctx := context.Background()
	c, _ := lock.NewClient(fake.NewClientset().CoordinationV1())
	_, _, _ = c.Create(ctx, "default", "a", lock.CreateOptions{TTL: 5 * time.Minute})
	m, _ := c.NewMutex("default", "b", lock.WithHolder("worker-1"))
	_ = m.Lock(ctx)
	defer m.Unlock(ctx)

	list, _ := c.List(ctx, "default")
	for _, s := range list {
		fmt.Printf("%s %s %q ttl=%s\n", s.Name, s.Phase, s.Holder, s.TTL)
	}
	// Output:
	// a Unlocked "" ttl=5m0s
	// b Locked "worker-1" ttl=0s
}

func ExampleSemaphore_With() {
	ctx := context.Background()
	c, _ := lock.NewClient(fake.NewClientset().CoordinationV1())

	// At most two nodes in maintenance at once (kured's --concurrency 2).
	if _, _, err := c.CreateSemaphore(ctx, "default", "node-maintenance", lock.SemaphoreOptions{Limit: 2, TTL: 10 * time.Minute}); err != nil {
		fmt.Println(err)
		return
	}
	s, err := c.NewSemaphore("default", "node-maintenance", lock.WithHolder("node-a"))
	if err != nil {
		fmt.Println(err)
		return
	}
	err = s.With(ctx, func(ctx context.Context) error {
		// ctx is cancelled if the slot is lost.
		// Free slots are tried in a random order, which spreads contenders.
		fmt.Printf("in maintenance, token %d, on one of the 2 slots: %v\n", s.Token(), s.Slot() == 0 || s.Slot() == 1)
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// in maintenance, token 1, on one of the 2 slots: true
	// done: <nil>
}

func ExampleSemaphore_TryAcquire() {
	ctx := context.Background()
	c, _ := lock.NewClient(fake.NewClientset().CoordinationV1())
	_, _, _ = c.CreateSemaphore(ctx, "default", "builds", lock.SemaphoreOptions{Limit: 1})

	a, _ := c.NewSemaphore("default", "builds", lock.WithHolder("ci-1"))
	_ = a.TryAcquire(ctx)
	defer a.Release(ctx) // stops the renewal of ci-1's hold
	b, _ := c.NewSemaphore("default", "builds", lock.WithHolder("ci-2"))
	err := b.TryAcquire(ctx)
	fmt.Println(errors.Is(err, lock.ErrLocked))
	fmt.Println(err)
	// Output:
	// true
	// semaphore default/builds is full: 1 of 1 held by "ci-1"
}
