// Package lock is a distributed mutex on native Kubernetes Lease objects
// (coordination.k8s.io/v1). It needs no CRD and no controller: every rule is
// enforced by this client library through the API server's optimistic
// concurrency, so it works in clusters where nobody may install anything.
//
//	c, err := lock.NewForConfig(cfg)
//	m, err := c.NewMutex("default", "db-migration", lock.WithTTL(30*time.Second))
//	if err := m.Lock(ctx); err != nil { ... }   // ctx deadline = timeout
//	defer m.Unlock(context.WithoutCancel(ctx))
//	// or: err := m.With(ctx, func(ctx context.Context) error { ... })
//
// # The mapping
//
// A mutex named N in namespace S is the Lease S/N:
//
//   - label konlease.io/kind=Mutex, so that listing is a label query;
//   - annotation konlease.io/unlock=explicit marks the Lease as a mutex: it
//     is released only by its holder's Unlock, by TTL expiry when a TTL is
//     set, or by a deliberate ForceUnlock. A Lease without this annotation
//     (a leader-election Lease, say) is never modified: every operation on it
//     fails with ErrNotMutex;
//   - annotation konlease.io/ttl=<Go duration> when the mutex has a TTL;
//   - spec.holderIdentity is the holder, unset when unlocked;
//     spec.acquireTime is when it was locked; spec.renewTime its last
//     renewal; spec.leaseDurationSeconds the TTL rounded up to whole seconds
//     (unset without TTL); spec.leaseTransitions grows by one on every
//     acquisition and is the mutex's fencing token (Mutex.Token).
//
// The spec is written through client-go's resourcelock record helpers, so a
// mutex Lease also reads as a leader-election record. Unlock clears the
// holder and keeps the Lease and its token; only Delete removes it.
//
// # Guarantees
//
// Every write is a Create or an Update that carries the resourceVersion it
// was decided on; a 409 Conflict means read again and decide again, never
// overwrite. So two clients can never both acquire from the same state, and
// Unlock never clears a lock that someone else acquired in the meantime.
//
// Without a TTL a mutex is held until its holder unlocks it or an operator
// force-unlocks it: a crashed holder keeps it locked. That is the mode's
// meaning.
//
// With a TTL, a holder renews the Lease about every third of the TTL, and a
// waiter takes the mutex over once it can prove the TTL has run out since
// the holder's last write. Proving that never compares two machines' wall
// clocks (see package ttl): a waiter either counts the TTL on its own
// monotonic clock from when it first saw the holder's last write, or, when
// it can bound the API server's clock from the Date headers of its
// responses (NewForConfig arranges that), compares with the time the API
// server itself stamped on that write (metadata.managedFields). A client
// whose clock is an hour off therefore neither steals a live lock nor waits
// forever for a dead one.
//
// An acquisition whose confirmation arrives after that safe deadline (a
// write held up by a stalled network) is not reported as acquired: the
// TTL may have run out meanwhile. It is released again and Lock decides
// anew.
//
// A holder cannot stop a process that has lost the lock from running on,
// but it is told: Done closes as soon as the holder can no longer be sure it
// holds the lock (its renewals failed until shortly before the TTL could
// have run out, or the Lease shows another holder, a force-unlock or a
// deletion), and before anyone else may take the mutex over, assuming the
// clocks involved run at rates within 100 ppm of each other. A paused
// process (SIGSTOP, a long GC pause, a frozen VM) notices only when it runs
// again. Resources that must never see a stale holder's write should check
// the fencing token: it strictly increases with every acquisition over the
// mutex's life (deleting and re-creating a mutex starts it again at 1).
//
// # Outages
//
// Lock, TryLock and Unlock retry transient failures (connection refused or
// reset, timeouts, 429, 5xx) with exponential backoff, until their
// context's deadline or, without one, for the retry timeout
// (DefaultRetryTimeout) of consecutive failures. An acquiring write whose
// answer was lost is settled by reading the Lease back; if Lock gives up
// first, what that write may have taken is released again. While Unlock
// retries, the hold's keeper goes on renewing it, so Done still closes in
// time if the outage outlasts the TTL.
//
// # Waiting
//
// Lock waits by watching the single Lease from the version it read, so an
// Unlock wakes a waiter within one watch event and the waiter takes the
// mutex with one write. A waiter also wakes by timer when the holder's TTL
// runs out. If RBAC forbids watching leases, waiters poll with jitter
// (WithPollInterval). All waiters race for a released mutex; there is no
// queue, so under heavy contention acquisition order is not fair.
//
// # RBAC
//
// The verbs used on leases in the mutex's namespace: get (all), update
// (lock, unlock, renew), create (locking a mutex that does not exist yet, and
// Create), watch (waiting and loss detection; optional, polling replaces
// it), list (List), delete (Delete).
//
// # Logging
//
// The package logs through the logr.Logger given with WithLogger: holds lost
// at level 0, decisions at V(1), request detail at V(2).
package lock
