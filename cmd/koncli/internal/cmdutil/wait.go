package cmdutil

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/konlease/konlease/lock"
)

// WaitReportDelay is how long Lock must have waited before koncli says
// whom it waits for: a lock that is free within a second needs no message.
const WaitReportDelay = time.Second

// WaitReporter tells the user whom a blocking Lock waits for. Its Notify is
// given to lock.WithWaitNotify: the lock package calls it, on the Lock
// goroutine, when it starts to wait and whenever the holder changes, and it
// must not block, so it only records the status. A goroutine of the
// reporter prints once the wait has lasted WaitReportDelay, and at once for
// every later change. It never reads the mutex itself.
type WaitReporter struct {
	log      logr.Logger
	ref      string
	deadline time.Time // when Lock gives up; zero: never
	delay    time.Duration

	mu sync.Mutex
	// latest is the newest status notified; text says it.
	latest  any
	text    func(latest any) string
	printed bool // something was printed already
	stopped bool

	wake chan struct{}
	done chan struct{}
	exit chan struct{}
}

// NewWaitReporter returns a reporter for the mutex namespace/name; deadline
// is when the caller gives up (zero: it waits until it has the mutex).
func NewWaitReporter(log logr.Logger, namespace, name string, deadline time.Time) *WaitReporter {
	w := newWaitReporter(log, namespace, name, deadline)
	w.text = func(s any) string { st, _ := s.(lock.Status); return WaitMessage(w.ref, st, w.deadline) }
	return w
}

// NewSemaphoreWaitReporter is NewWaitReporter for a semaphore: it says who
// holds its slots.
func NewSemaphoreWaitReporter(log logr.Logger, namespace, name string, deadline time.Time) *WaitReporter {
	w := newWaitReporter(log, namespace, name, deadline)
	w.text = func(s any) string {
		st, _ := s.(lock.SemaphoreStatus)
		return SemaphoreWaitMessage(w.ref, st, w.deadline)
	}
	return w
}

func newWaitReporter(log logr.Logger, namespace, name string, deadline time.Time) *WaitReporter {
	return &WaitReporter{
		log: log, ref: Ref(namespace, name), deadline: deadline, delay: WaitReportDelay,
		wake: make(chan struct{}, 1), done: make(chan struct{}), exit: make(chan struct{}),
	}
}

// SemaphoreWaitMessage says what a waiter for a full semaphore waits for.
func SemaphoreWaitMessage(ref string, s lock.SemaphoreStatus, deadline time.Time) string {
	var holders []string
	for _, h := range s.Holders {
		holders = append(holders, fmt.Sprintf("%q (slot %d, since %s)", h.Holder, h.Slot, FormatTime(h.LockedAt)))
	}
	msg := fmt.Sprintf("waiting for semaphore %s: %d of %d slots held", ref, len(s.Holders), s.Limit)
	if len(holders) > 0 {
		msg += " by " + strings.Join(holders, ", ")
	}
	if len(s.Waiters) > 0 {
		msg += fmt.Sprintf("; %d waiters queued", len(s.Waiters))
	}
	if !deadline.IsZero() {
		msg += "; giving up at " + FormatTime(deadline)
	}
	return msg
}

// Notify records the holder waited for. It never blocks.
func (w *WaitReporter) Notify(s lock.Status) { w.notify(s) }

// NotifySemaphore records the holders of the semaphore waited for; for a
// reporter made by NewSemaphoreWaitReporter. It never blocks.
func (w *WaitReporter) NotifySemaphore(s lock.SemaphoreStatus) { w.notify(s) }

func (w *WaitReporter) notify(s any) {
	w.mu.Lock()
	w.latest = s
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default: // a wake-up is pending already; it will read the latest status
	}
}

// Start starts the reporting goroutine; Stop ends it.
func (w *WaitReporter) Start() {
	go w.loop()
}

// Stop ends reporting and waits for the goroutine, so that no message is
// printed after Lock has returned.
func (w *WaitReporter) Stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	close(w.done)
	<-w.exit
}

func (w *WaitReporter) loop() {
	defer close(w.exit)
	var timer *time.Timer
	var fire <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-w.done:
			return
		case <-w.wake:
			w.mu.Lock()
			printed := w.printed
			w.mu.Unlock()
			switch {
			case printed:
				w.print() // the holder changed after the first message
			case timer == nil:
				timer = time.NewTimer(w.delay)
				fire = timer.C
			}
		case <-fire:
			fire = nil
			w.print()
		}
	}
}

func (w *WaitReporter) print() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.printed = true
	w.log.Info(w.text(w.latest))
}

// WaitMessage says whom a waiter waits for, since when, until when the
// holder's TTL runs, and when the waiter gives up.
func WaitMessage(ref string, s lock.Status, deadline time.Time) string {
	msg := fmt.Sprintf("waiting for mutex %s: locked by %q", ref, s.Holder)
	if !s.LockedAt.IsZero() {
		msg += " since " + FormatTime(s.LockedAt)
	}
	if s.Token > 0 {
		msg += fmt.Sprintf(" (token %d)", s.Token)
	}
	switch {
	case s.Phase == lock.PhaseExpired:
		msg += "; its TTL has run out, taking it over"
	case !s.ExpiresAt.IsZero():
		msg += "; its TTL runs out at " + FormatTime(s.ExpiresAt) + " unless the holder renews it"
	default:
		msg += "; it has no TTL, so it stays locked until its holder unlocks it"
	}
	if !deadline.IsZero() {
		msg += "; giving up at " + FormatTime(deadline)
	}
	return msg
}
