package lock

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
// TTL: a delay for the next waiter, never a second holder.
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
