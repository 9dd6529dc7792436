package cmdutil

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"k8s.io/cli-runtime/pkg/printers"

	"github.com/konlease/konlease/lock"
)

// PhaseDeleted is the phase that get -w and list -w print for a mutex
// whose Lease was deleted while they watched. No mutex has it otherwise.
const PhaseDeleted lock.Phase = "Deleted"

// WatchHelp describes -w for the help of get and list.
const WatchHelp = `-w (--watch) prints the mutexes as they are, then a line (a table row,
or with -o json one JSON object per line) on every change, until koncli is
interrupted: a lock, renewal, unlock, handoff, force-unlock or deletion
(phase Deleted; a mutex created again under the name prints again), and
the moment a holder's TTL has provably run out (phase Expired), which no
write marks. Without -o, -w prints the wide table, so that every line says
the holder, phase, token and waiters. The waiters of a fair mutex live in
Leases of their own (its queue): they are read again whenever the mutex or
its queue changes, so a waiter that joins or leaves prints a line at once,
and one whose process died is shown until the waiters behind it pass it
over (about 10 seconds); reading them needs the list verb, without which
they are left out. Ages in the table are those at the time of the
line. Watching needs the watch verb on leases; without it koncli polls
every 2 seconds. An outage of the API server is ridden out: the watch
resumes where it stopped, and a change made meanwhile prints when it is
seen.`

// WatchPrinter prints the mutexes of a watch, one event at a time.
type WatchPrinter struct {
	pr *Printer
	w  io.Writer
	// table is the table printer, kept across events so that the header
	// is printed once, and tw the tab writer that aligns its rows.
	table printers.ResourcePrinter
	tw    flusher
}

type flusher interface {
	io.Writer
	Flush() error
}

// NewWatchPrinter returns a printer of watch events to w in pr's format.
func NewWatchPrinter(pr *Printer, w io.Writer) *WatchPrinter {
	wp := &WatchPrinter{pr: pr, w: w}
	if pr.IsTable() {
		wp.tw = printers.GetNewTabWriter(w)
		wp.table = printers.NewTablePrinter(printers.PrintOptions{
			NoHeaders: pr.noHeaders, Wide: pr.format == FormatWide, WithNamespace: pr.withNamespace,
		})
	}
	return wp
}

// Print prints one event; now is this machine's clock, for the table's
// ages.
func (wp *WatchPrinter) Print(ev lock.WatchEvent, now time.Time) error {
	st := ev.Status
	if ev.Deleted {
		st.Phase = PhaseDeleted
	}
	switch {
	case wp.table != nil:
		if err := wp.table.PrintObj(mutexTable([]lock.Status{st}, now), wp.tw); err != nil {
			return err
		}
		return wp.tw.Flush()
	case wp.pr.format == "json":
		// One object per line, so that a reader can take each line as it
		// comes (jq, a log shipper).
		m, err := toUnstructured(NewMutexView(st))
		if err != nil {
			return err
		}
		b, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("encoding mutex %s: %w", Ref(st.Namespace, st.Name), err)
		}
		_, err = fmt.Fprintf(wp.w, "%s\n", b)
		return err
	}
	// The YAML printer separates the documents of one stream itself.
	return wp.pr.Print(wp.w, []lock.Status{st}, true, now)
}

// Watch runs a watch (lock.Client.Watch or WatchList, given as start) and
// prints every event with wp until ctx ends; a signal that ended it is
// returned as the *SignalError.
func Watch(ctx context.Context, wp *WatchPrinter, start func(ctx context.Context, fn func(lock.WatchEvent) error) error) error {
	err := start(ctx, func(ev lock.WatchEvent) error { return wp.Print(ev, time.Now()) })
	if se := Interrupted(ctx); se != nil {
		return se
	}
	return err
}

// TimeoutError says that what koncli waited for did not happen within
// --timeout; it ends koncli with the "not acquired" exit status.
type TimeoutError struct{ Err error }

func (e *TimeoutError) Error() string { return e.Err.Error() }
func (e *TimeoutError) Unwrap() error { return e.Err }

// ToWatchPrinter is ToPrinter for -w: without -o (or a template), the wide
// table.
func (p *PrintFlags) ToWatchPrinter(withNamespace bool) (*Printer, error) {
	if (p.outputChanged == nil || !p.outputChanged()) && *p.template.TemplateArgument == "" {
		saved := p.OutputFormat
		p.OutputFormat = FormatWide
		defer func() { p.OutputFormat = saved }()
	}
	return p.ToPrinter(withNamespace)
}
