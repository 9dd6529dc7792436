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
// A program without a configuration of its own calls New instead, which
// loads it as kubectl does (KUBECONFIG, ~/.kube/config, else the pod's
// in-cluster service account) and takes the kubeconfig context's
// namespace, else the pod's, as the default for NewMutex(""); the
// konductor SDK's zero-configuration shape:
//
//	c, err := lock.New()
//	m, err := c.NewMutex("", "critical-section")
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
// (WithPollInterval). On a racing mutex (the default) all waiters race for
// a released mutex, so under heavy contention acquisition order is not
// fair and conflicts grow with the number of waiters; a fair mutex queues
// them (below).
//
// # Fair mutexes
//
// A mutex whose Lease carries konlease.io/fair=true is fair: waiters get it
// in the order in which they began to wait, a release wakes only the next
// one and hands the mutex to it with the releaser's own write, and nobody
// barges past the queue. Create it with CreateOptions.Fair, `koncli mutex
// create NAME --fair`, or WithFair for a mutex that Lock creates. Fairness
// belongs to the Lease, so every konlease client honours it; it can be
// switched only while the mutex is unlocked and nobody waits.
//
// # Objects
//
// The mutex's own Lease stays the only record of who holds it. Next to it:
//
//   - a queue entry per waiter: a Lease labelled konlease.io/kind=Waiter
//     and konlease.io/mutex=<the mutex's name, or a hash of a long one>,
//     annotated konlease.io/mutex=<name> and konlease.io/session=<its
//     session>, named <name>.w-<random>, with the waiter's identity in
//     spec.holderIdentity. It is created when a wait begins and deleted when
//     it ends, and never written in between, so its resourceVersion is the
//     one it was created at: its place in the queue, given by the API
//     server, not by any clock. Resource versions compare as integers
//     (Kubernetes 1.35, KEP-5504); an API server whose versions do not
//     parse as such is refused for fair mode with ErrUnsupported.
//   - a session per process and namespace: a Lease labelled
//     konlease.io/kind=Session that the process renews every third of the
//     waiter TTL (DefaultWaiterTTL, 10s; WithWaiterTTL) while it has
//     waiters there, as etcd's concurrency.Session keeps one lease alive for
//     many locks. An entry is live while its session is: a process that
//     dies is passed over about one waiter TTL after its last renewal, and
//     its waiters cost one write per renewal between them, whatever their
//     number.
//
// Entries and sessions are not mutexes: list never shows them, decode
// refuses them, Delete of a mutex deletes its entries, and a Lease that is
// not a konlease object is never touched.
//
// # Protocol
//
// Lock on a fair mutex reads the mutex and lists its queue. With nobody
// live in the queue and the mutex free (or its holder's TTL run out), it
// takes the mutex as in racing mode, with one conditional write; TryLock
// otherwise fails, also when the mutex is free but waiters are queued.
// Otherwise Lock creates its entry and waits:
//
//   - behind another live entry, it watches that entry alone (its
//     predecessor), and reads the predecessor's session when that could
//     have expired. A deleted predecessor, or an expired one (which it then
//     deletes), makes it look at the queue again;
//   - at the head of the queue, it watches the mutex. A handoff to its own
//     entry is its acquisition. A free mutex, a holder whose TTL ran out,
//     and an unconfirmed handoff to someone else that ran out (below) are
//     taken with one conditional write, as in racing mode.
//
// A holder of a fair mutex follows the queue (entries and sessions, by
// watch). Its Unlock hands the mutex to the oldest live entry with one
// conditional write: holder := that waiter, token+1, and the annotations
// konlease.io/handoff-to (the entry), handoff-version (the resourceVersion
// of the entry's session that the releaser saw) and handoff-ttl (the
// session's TTL). With nobody live in the queue, Unlock releases as in
// racing mode. So a release costs one write and wakes one waiter; the
// waiters behind see nothing of it.
//
// # Why it is safe
//
// Every write to the mutex is conditional on the resourceVersion it was
// decided on, exactly as in racing mode; entries and sessions never make
// anyone a holder. What is new is the handoff: a holder made by someone
// else's write. Its hold must end (Done) before anyone may take the mutex
// from it, without it having written anything yet.
//
// The handoff names the version V of the new holder's session that the
// releaser read before it wrote. The new holder's process sent the write
// that made V at a local time sent(V), which it remembers; the handoff was
// written after V existed, so after sent(V). An unconfirmed handoff may be
// taken over once the session TTL has provably run out since the handoff
// was written (judged as any TTL is, by package ttl: on the observer's own
// monotonic clock from when it first saw the handoff, or against the API
// server's time of that write), or once the mutex's own TTL has. The new
// holder's Done therefore closes at sent(V) + 90% of the shorter of the
// two, as a renewal's would: before either can have run out. Its first
// act is to confirm: a conditional write (a renewal) that removes the
// handoff annotations; from then on it is an ordinary holder. A new
// holder that cannot trust the handoff (V is not one of its writes, or the
// deadline has passed) confirms before Lock returns. A process that cannot
// stay behind to confirm (WithoutRenewal, the CLI's lock command) confirms
// before Lock returns too.
//
// A waiter that stops waiting deletes its entry and then reads the mutex:
// a handoff to it that landed meanwhile is passed on to the next waiter,
// or released. A handoff that lands after that read (the releaser had not
// yet seen the deletion) goes unconfirmed and runs out after the session
// TTL: a delay for the next waiter, never a second holder. An entry whose
// deletion fails (the API server unreachable as the waiter leaves) would
// stay live with its session, and the waiters behind it would wait for it:
// the session's keeper deletes it after each renewal until that succeeds.
// A waiter whose session is lost (a renewal could not be confirmed in
// time) leaves the same way before it queues again under a new session,
// since the old one may still look live to others until it runs out.
//
// A client that knows nothing of queues (an older konlease, kubectl edit)
// writes the mutex conditionally like everyone else: it can take a free
// mutex past the queue or release it without a handoff (the head then
// takes it), which is unfair, but it cannot make two holders.
//
// # Cost
//
// When nobody waits, Lock lists the queue once (one request more than
// racing mode) and Unlock hands off from what the holder's watch already
// knows. A wait costs the entry's create and delete, the session's
// renewals (one write per waiter TTL/3 per process), one watch, and reads
// of a predecessor's session when it could expire. RBAC on leases: list,
// create and delete besides get and update, and watch (optional: without
// it waiters poll).
//
// # Semaphores
//
// A Semaphore is held by at most its limit of holders at once. It is made
// of Leases only:
//
//   - its own Lease S: label konlease.io/kind=Semaphore, annotations
//     konlease.io/limit (1 to MaxLimit), konlease.io/ttl and
//     konlease.io/fair; no holder. The limit is stored and checked, like
//     the TTL: CreateSemaphore refuses other terms (ErrLimitConflict,
//     ErrTTLConflict, ErrFairnessConflict) unless asked to update them;
//   - one Lease per slot, S.s-0 to S.s-(limit-1): label
//     konlease.io/kind=SemaphoreSlot and konlease.io/mutex=<S, or a hash of
//     a long name>, annotations konlease.io/semaphore=S, konlease.io/slot=k,
//     the TTL and fairness copied from S, and konlease.io/retired=true on a
//     slot at or beyond a lowered limit. Its spec is a mutex's exactly:
//     holder, acquire and renew times, leaseDurationSeconds, and
//     leaseTransitions, the slot's fencing token.
//
// A holder takes one free slot with one conditional write, through the very
// code of a mutex (the slot's record, keeper, renewal, Done, the refusal of
// a late confirmation), so each slot has one holder at most, by the
// argument above. A waiter watches the slots (one watch, by label) and tries
// again when one frees. An operator writes S and the slots' annotations
// (CreateSemaphore with Update, DeleteSemaphore, ForceReleaseSemaphore);
// holders and waiters never write S.
//
// Why never more than the limit: there are as many slots as the limit, each
// with one holder. Lowering the limit from N to M first marks slots M to N-1
// retired (conditional writes; a holder keeps its slot, and its renewals
// read past the change), then S. A retired slot is never taken, so it only
// ever loses its holder; and no slot is taken while a retired slot is held.
// So once the holders of retired slots are gone, at most M slots are held,
// and until then nobody joins them. (This waits a little longer than "until
// fewer than M hold", which counting holders across Leases, with no
// transaction, could not make safe.) Raising the limit creates or
// un-retires slots before it writes S. A semaphore's Lease is not a mutex
// and its slots are not mutexes: mutex calls refuse them (ErrNotMutex),
// semaphore calls refuse mutexes (ErrNotSemaphore), changing nothing.
//
// A fair semaphore queues on S's name exactly as a fair mutex does. The
// head of the queue watches the slots and takes a free one; a releaser
// hands its slot to the head (the same handoff and the same argument as
// above), and its queue view also follows the slots, so that two
// releasers at once do not hand two slots to one waiter; a waiter that
// receives a second slot anyway passes it on.
//
// Token and Slot: tokens grow per slot, not across the semaphore, whose
// holders run at the same time anyway; fence per slot.
//
// # RBAC
//
// The verbs used on leases in the mutex's namespace: get (all), update
// (lock, unlock, renew), create (locking a mutex that does not exist yet, and
// Create), watch (waiting and loss detection; optional, polling replaces
// it), list (List), delete (Delete). A fair mutex needs list, create and
// delete too (its queue), and names the missing verb when one is refused,
// before anything is written. A semaphore needs get, list (its slots) and
// update always, watch to wait without polling, and create and delete for
// CreateSemaphore, DeleteSemaphore and fair waiting.
//
// # Watching
//
// Client.Watch and Client.WatchList report a mutex (or every mutex of a
// namespace) at once and then on every change, without taking it: each
// write to its Lease, the moment its holder's TTL provably ran out (which
// no write marks), and a fair mutex's waiters joining and leaving. They
// cost one watch (two with a fair queue) and no request per change, ride
// out outages by resuming the watch, and poll without the watch verb.
// They are what koncli's get -w, list -w and wait are made of.
//
// # Observability
//
// WithMetrics gives the client a Metrics hook that it calls on every
// acquisition (by result), wait and hold (their durations), lost hold
// (by reason), renewal and 409 conflict, and for the holds and waits now
// in progress; the package depends on no metrics library, and package
// lockmetrics implements the hook for Prometheus with labels of bounded
// cardinality. WithEvents (or WithEventRecorder) records Kubernetes
// Events on the Lease (acquired with its token, released, taken over
// after a TTL naming the previous holder, force-unlocked, lost), through
// client-go's event broadcaster and its spam filter; an identity that may
// not create events records none, after one V(1) log line, and nothing
// else changes.
//
// # Logging
//
// The package logs through the logr.Logger given with WithLogger: holds lost
// at level 0, decisions at V(1), request detail at V(2).
package lock
