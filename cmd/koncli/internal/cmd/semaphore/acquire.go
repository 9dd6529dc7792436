package semaphore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/ttl"
)

// The variables that acquire prints and run gives CMD.
const (
	EnvSemaphore = "KONLEASE_SEMAPHORE"
	EnvSlot      = "KONLEASE_SLOT"
)

type acquireFlags struct {
	cmdutil.AcquireFlags
	limit limitFlag
}

// NewAcquireCommand returns 'koncli semaphore acquire'.
func NewAcquireCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &acquireFlags{}
	cmd := &cobra.Command{
		Use:   "acquire NAME [--holder H] [--timeout D] [--limit N] [--ttl D] [--if-busy fail|skip] [-E N]",
		Short: "Take a slot of a semaphore and exit, leaving it held",
		Long: `Take one slot of the semaphore NAME for the holder identity --holder
(default: the host name, which in a pod is the pod's name) and exit,
leaving the slot held until 'koncli semaphore release NAME --holder H'
gives it back (or, with a TTL, until the TTL runs out: koncli does not
stay behind to renew it, so the TTL counts from the acquisition).

Waiting: without --timeout, acquire waits until a slot is free (or koncli
gets SIGINT, SIGTERM or SIGHUP); --timeout 0 makes one attempt; --timeout
30s waits up to 30 seconds. While it waits longer than a second it says on
stderr who holds the slots, and again when that changes. A wait that ends
by timeout or signal leaves nothing held. Transient failures of the API
server are retried as for 'koncli mutex lock'.

--limit N is the limit the semaphore must have: a missing semaphore is
created with it (and with --ttl), an existing one with another limit is
refused with status 1 and nothing changes. Without --limit, a missing
semaphore is an error. --ttl is the TTL the semaphore must have, in the
same way.

A holder identity holds at most one slot of a semaphore: one that holds
one already gets status 5 at once. Give concurrent holders different
identities.

To run a command in a slot, prefer 'koncli semaphore run': it renews a TTL
while the command runs, stops the command if the slot is lost, and
releases however the command ends.

Output: on success, stdout gets four lines that a shell can evaluate:

  KONLEASE_SEMAPHORE=NAMESPACE/NAME
  KONLEASE_HOLDER=HOLDER
  KONLEASE_TOKEN=TOKEN
  KONLEASE_SLOT=SLOT

TOKEN is the fencing token of this acquisition of slot SLOT (0 to
LIMIT-1); tokens grow with each acquisition of a slot, so a resource that
fences by token must key them by slot. Keep the output in a variable and
check the status before evaluating it, as for 'koncli mutex lock':

  vars=$(koncli semaphore acquire NAME) || exit
  eval "$vars"

--if-busy=skip (or -E 0) makes a full semaphore a success: acquire exits
0 with nothing on stdout and says "skipped: ..." on stderr.

Exit status:
  0    acquired; or, with --if-busy=skip (-E 0), skipped: it is full, and
       stdout is empty
  1    error: it does not exist (without --limit), it has another limit
       or TTL than --limit or --ttl, the Lease is not a semaphore, RBAC
       refused, the API server could not be reached, ...
  2    usage error: invalid NAME, --holder, --timeout, --limit, --ttl,
       --if-busy or --conflict-exit-code; nothing was sent
  3    not acquired: every slot is held and --timeout ran out (or was 0);
       -E N makes this N, --if-busy=skip 0
  5    not acquired: this holder identity holds a slot already
  129  interrupted by SIGHUP while waiting; nothing was held
  130  interrupted by SIGINT while waiting; nothing was held
  143  interrupted by SIGTERM while waiting; nothing was held`,
		Example: `  # Take a slot, creating the semaphore with 3 slots if need be
  vars=$(koncli semaphore acquire crawler --limit 3 --holder worker-1) || exit
  eval "$vars"
  echo "slot $KONLEASE_SLOT, token $KONLEASE_TOKEN"
  ./crawl
  koncli semaphore release crawler --holder worker-1

  # One attempt; do nothing when every slot is taken
  vars=$(koncli semaphore acquire crawler --timeout 0 --if-busy=skip) || exit
  [ -n "$vars" ] || exit 0`,
		Args:              cmdutil.ExactArgs("NAME"),
		ValidArgsFunction: cmdutil.CompleteSemaphoreNames(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return acquireE(cmd, streams, f, flags, args[0])
		},
	}
	cmd.Flags().StringVar(&flags.Holder, "holder", "", "holder identity (default: the host name; in a pod, the pod name)")
	cmd.Flags().StringVar(&flags.Timeout, "timeout", "", `how long to wait, a Go duration ("30s"); 0: one attempt; default: wait until acquired`)
	cmd.Flags().StringVar(&flags.TTL, "ttl", "", `the TTL the semaphore must have, from 1s to 8760h: a missing one is created with it (with --limit), one with another TTL is refused; default: its own TTL`)
	flags.limit.add(cmd)
	flags.Busy.AddFlags(cmd, cmdutil.BusySemaphore)
	return cmd
}

func acquireE(cmd *cobra.Command, streams genericiooptions.IOStreams, f *cmdutil.Factory, flags *acquireFlags, name string) error {
	if err := cmdutil.ValidateName(name); err != nil {
		return err
	}
	a, err := flags.Parse(cmd, "")
	if err != nil {
		return err
	}
	holder := a.Holder
	// The process exits right after acquiring: nobody is left to renew.
	opts := append(a.Options, lock.WithoutRenewal())
	more, err := flags.limit.options(cmd)
	if err != nil {
		return err
	}
	opts = append(opts, more...)
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	ctx, stop := cmdutil.SignalContext(cmd.Context())
	defer stop()
	log := f.Logger()
	s, err := acquire(ctx, log, c, ns, name, a.Wait, opts...)
	if err != nil {
		return cmdutil.Busy(err, a.BusyCode)
	}
	token, slot := s.Token(), s.Slot()
	if token == 0 {
		return &cmdutil.RuntimeError{Err: fmt.Errorf("semaphore %s: the slot was acquired and lost again at once: %w", cmdutil.Ref(ns, name), s.Err())}
	}
	// From here on the slot is held: nothing may turn this into a failure.
	if err := WriteAcquired(streams.Out, ns, name, holder, token, slot); err != nil {
		log.Error(err, "writing the acquisition to stdout failed; the slot is held", "semaphore", cmdutil.Ref(ns, name), "holder", holder, "slot", slot, "token", token)
	}
	msg := fmt.Sprintf("acquired slot %d of semaphore %s as %q (token %d)", slot, cmdutil.Ref(ns, name), holder, token)
	// One read for the message; the slot is held whatever it says.
	if st, err := c.GetSemaphore(ctx, ns, name); err == nil && st.TTL > 0 {
		for _, h := range st.Holders {
			if h.Slot == slot && h.Holder == holder && !h.ExpiresAt.IsZero() {
				msg += fmt.Sprintf("; TTL %s: it expires at %s unless released before", ttl.Format(st.TTL), cmdutil.FormatTime(h.ExpiresAt))
			}
		}
	}
	log.Info(msg)
	return nil
}

// acquire is cmdutil.AcquireSemaphore with the hint for a semaphore that
// does not exist.
func acquire(ctx context.Context, log logr.Logger, c *lock.Client, ns, name string, w cmdutil.Wait, opts ...lock.Option) (*lock.Semaphore, error) {
	s, err := cmdutil.AcquireSemaphore(ctx, log, c, ns, name, w, opts...)
	var nf *lock.NotFoundError
	if errors.As(err, &nf) {
		// The library's own hint names its options; say the flags.
		return nil, &cmdutil.RuntimeError{Err: fmt.Errorf("%w; %s", nf, notExistHint)}
	}
	if errors.Is(err, lock.ErrLimitConflict) {
		return nil, &cmdutil.RuntimeError{Err: fmt.Errorf("not acquired: %w; acquire it without --limit to take it with its own limit, or change its limit: koncli semaphore create %s --limit N --update", err, name)}
	}
	return s, err
}

// WriteAcquired prints a semaphore acquisition as shell assignments.
func WriteAcquired(w io.Writer, namespace, name, holder string, token int64, slot int) error {
	_, err := fmt.Fprintf(w, "%s=%s\nKONLEASE_HOLDER=%s\nKONLEASE_TOKEN=%s\n%s=%d\n",
		EnvSemaphore, cmdutil.Ref(namespace, name), cmdutil.ShellQuote(holder), strconv.FormatInt(token, 10), EnvSlot, slot)
	return err
}
