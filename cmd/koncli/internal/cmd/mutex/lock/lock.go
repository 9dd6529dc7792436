// Package lock implements `koncli mutex lock`.
package lock

import (
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/ttl"
)

type flagpole struct {
	cmdutil.AcquireFlags
}

// NewCommand returns the lock command.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &flagpole{}
	cmd := &cobra.Command{
		Use:   "lock NAME [--holder H] [--timeout D] [--ttl D] [--if-busy fail|skip] [-E N]",
		Short: "Acquire a mutex and exit, leaving it locked",
		Long: `Acquire the mutex NAME for the holder identity --holder (default: the host
name, which in a pod is the pod's name) and exit, leaving it locked until
'koncli mutex unlock NAME --holder H' releases it (or, for a mutex with a
TTL, until the TTL runs out: koncli does not stay behind to renew it, so
the TTL counts from the moment it was locked).

Waiting: without --timeout, lock waits until the mutex is free (or koncli
gets SIGINT, SIGTERM or SIGHUP). --timeout 0 makes exactly one attempt. --timeout 30s
waits up to 30 seconds. While it waits longer than a second, lock says on
stderr whom it waits for and until when that holder's TTL runs, and again
whenever the holder changes. A wait that ends by timeout or signal leaves
nothing locked.

If the API server cannot be reached, or answers that it is overloaded or
failing (connection refused or reset, timeouts, 429, 5xx), lock retries
with backoff: until --timeout runs out, or, without --timeout and with
--timeout 0, for 30 seconds without a single success. Then it fails with
status 1, naming the failure, and nothing is locked.

--ttl is the TTL the mutex must have. A missing mutex is created, locked,
with it; an existing mutex with another TTL (or none) is refused with
status 1 and nothing changes, because a lock that runs out sooner, or
never, than the script expects is worse than no lock. Without --ttl, lock
takes the mutex with whatever TTL it has (a missing one is created
without TTL). The TTL of an unlocked mutex is changed with
'koncli mutex create NAME --ttl D --update'.

A holder identity that already holds the mutex gets exit status 5 at once:
locking again would deadlock. Give concurrent lockers different identities.

To run a command under the mutex, prefer 'koncli mutex run': it renews a
TTL while the command runs, stops the command if the lock is lost, and
unlocks however the command ends.

Output: on success, stdout gets three lines that a shell can evaluate:

  KONLEASE_MUTEX=NAMESPACE/NAME
  KONLEASE_HOLDER=HOLDER
  KONLEASE_TOKEN=TOKEN

TOKEN is the fencing token of this acquisition (it grows with every
acquisition of the mutex). The holder is single-quoted for the shell when
it contains anything but letters, digits and ._-:@/+,=. Messages go to
stderr.

Keep the output in a variable and check the status before evaluating it:
when the mutex is not acquired stdout is empty, and 'eval ""' succeeds, so
'eval "$(koncli mutex lock NAME)"' walks into the critical section even
under 'set -e'. Write instead:

  vars=$(koncli mutex lock NAME) || exit
  eval "$vars"

--if-busy=skip (the readable form of -E 0) makes a mutex held by someone
else a success: lock exits 0 with nothing on stdout, saying "skipped: ..."
on stderr. Since 0 then means "locked" or "skipped", a script must tell
them apart by stdout, which is empty when nothing was locked:

  vars=$(koncli mutex lock daily-job --timeout 0 --if-busy=skip) || exit
  [ -n "$vars" ] || exit 0   # skipped: another run holds it
  eval "$vars"

Exit status:
  0    acquired; or, with --if-busy=skip (-E 0), skipped: another holder
       holds it, and stdout is empty
  1    error: the Lease is not a mutex, RBAC refused, the API server could
       not be reached, ...
  2    usage error: invalid NAME, --holder, --timeout, --ttl, --if-busy
       or --conflict-exit-code, or --if-busy=skip with -E N; nothing was
       sent
  3    not acquired: another holder holds it and --timeout ran out (or was
       0); -E N makes this N, --if-busy=skip 0
  5    not acquired: this holder identity holds it already
  129  interrupted by SIGHUP while waiting; nothing was locked
  130  interrupted by SIGINT while waiting; nothing was locked
  143  interrupted by SIGTERM while waiting; nothing was locked`,
		Example: `  # Lock with the default holder (the host name) and wait as long as it takes
  koncli mutex lock critical-section

  # Lock with a custom holder
  koncli mutex lock critical-section --holder worker-1

  # Wait up to 30s
  koncli mutex lock critical-section --timeout 30s

  # One attempt; skip the work if someone else holds the mutex
  if koncli mutex lock daily-job --holder "$HOSTNAME" --timeout 0; then
      run-daily-job
      koncli mutex unlock daily-job --holder "$HOSTNAME"
  else
      echo "Job already running, skipping"
  fi

  # Keep the fencing token; the status is checked before the eval
  vars=$(koncli mutex lock critical-section --holder worker-1) || exit
  eval "$vars"
  echo "locked with token $KONLEASE_TOKEN"`,
		Args:              cmdutil.ExactArgs("NAME"),
		ValidArgsFunction: cmdutil.CompleteMutexNames(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runE(cmd, streams, f, flags, args[0])
		},
	}
	cmd.Flags().StringVar(&flags.Holder, "holder", "", "holder identity (default: the host name; in a pod, the pod name)")
	cmd.Flags().StringVar(&flags.Timeout, "timeout", "", `how long to wait, a Go duration ("30s"); 0: one attempt; default: wait until acquired`)
	cmd.Flags().StringVar(&flags.TTL, "ttl", "", `the TTL the mutex must have, from 1s to 8760h: a missing mutex is created with it, one with another TTL is refused; default: the mutex's own TTL`)
	flags.Busy.AddFlags(cmd, cmdutil.BusyMutex)
	return cmd
}

func runE(cmd *cobra.Command, streams genericiooptions.IOStreams, f *cmdutil.Factory, flags *flagpole, name string) error {
	if err := cmdutil.ValidateName(name); err != nil {
		return err
	}
	a, err := flags.Parse(cmd, "")
	if err != nil {
		return err
	}
	holder := a.Holder
	// The process exits right after locking, so nobody is left to renew:
	// a TTL counts from the acquisition.
	opts := append(a.Options, lock.WithoutRenewal())
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	ctx, stop := cmdutil.SignalContext(cmd.Context())
	defer stop()
	log := f.Logger()
	m, err := cmdutil.Acquire(ctx, log, c, ns, name, a.Wait, opts...)
	if err != nil {
		return cmdutil.Busy(err, a.BusyCode)
	}
	token := m.Token()
	if token == 0 {
		// The hold ended between acquiring and now: someone force-unlocked
		// or deleted the mutex at once. Saying "locked" would be false.
		return &cmdutil.RuntimeError{Err: fmt.Errorf("mutex %s was acquired and lost again at once: %w", cmdutil.Ref(ns, name), m.Err())}
	}
	// From here on the mutex is held: nothing may turn this into a failure,
	// or a script would skip its unlock and leave the mutex locked.
	if err := WriteAcquired(streams.Out, ns, name, holder, token); err != nil {
		log.Error(err, "writing the acquisition to stdout failed; the mutex is locked", "mutex", cmdutil.Ref(ns, name), "holder", holder, "token", token)
	}
	msg := fmt.Sprintf("locked mutex %s as %q (token %d)", cmdutil.Ref(ns, name), holder, token)
	if st, held := m.Status(); held {
		if st.TookOverFrom != "" {
			msg += fmt.Sprintf(", taking it over from %q, whose TTL had run out", st.TookOverFrom)
		}
		if st.TTL > 0 {
			msg += fmt.Sprintf("; TTL %s: it expires at %s unless unlocked before", ttl.Format(st.TTL), cmdutil.FormatTime(st.ExpiresAt))
		}
	}
	log.Info(msg)
	return nil
}

// WriteAcquired prints an acquisition as shell assignments, one per line.
func WriteAcquired(w io.Writer, namespace, name, holder string, token int64) error {
	_, err := fmt.Fprintf(w, "KONLEASE_MUTEX=%s\nKONLEASE_HOLDER=%s\nKONLEASE_TOKEN=%s\n",
		cmdutil.Ref(namespace, name), cmdutil.ShellQuote(holder), strconv.FormatInt(token, 10))
	return err
}
