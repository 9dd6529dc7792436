package semaphore

import (
	"context"
	"fmt"
	"strconv"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"

	"github.com/konlease/konlease/cmd/koncli/internal/cmd/run"
	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

// Kind is 'koncli semaphore run': the run command, holding a slot.
var Kind = run.Kind{
	Noun: "semaphore", Env: EnvSemaphore,
	Short: "Run a command while holding a slot of a semaphore",
	Long:  runLong, Example: runExample,
	Complete: cmdutil.CompleteSemaphoreNames,
	AddFlags: func(cmd *cobra.Command) func() ([]lock.Option, error) {
		l := &limitFlag{}
		l.add(cmd)
		return func() ([]lock.Option, error) { return l.options(cmd) }
	},
	Busy: cmdutil.BusySemaphore, Unlocking: "releasing", Release: "koncli semaphore release",
	Acquire: func(ctx context.Context, log logr.Logger, c *lock.Client, namespace, name string, w cmdutil.Wait, opts ...lock.Option) (cmdutil.Hold, []string, error) {
		s, err := acquire(ctx, log, c, namespace, name, w, opts...)
		if err != nil {
			return nil, nil, err
		}
		log.V(1).Info(fmt.Sprintf("holding slot %d of semaphore %s", s.Slot(), cmdutil.Ref(namespace, name)))
		return s, []string{EnvSlot + "=" + strconv.Itoa(s.Slot())}, nil
	},
}

const runLong = `Take a slot of the semaphore NAME, run CMD with its arguments while
holding it, and give it back when CMD exits, however it exits. This is the
safe way to run work a few at a time from a shell, a Job, a CronJob or a
DaemonSet (see examples/daemonset).

Everything but the slot is as for 'koncli mutex run': waiting (--timeout,
--if-busy, -E), the holder identity (default: the host name, koncli's
process id and a random suffix, so that concurrent runs on one host hold
different slots), signals (forwarded to CMD; SIGTERM while waiting ends
the wait, nothing held), the TTL renewed while CMD runs, and a lost slot
(force-released, deleted, or its TTL ran out while the API server was
unreachable): CMD gets SIGTERM, then SIGKILL after --grace-period, and run
exits with status 4.

--limit N is the limit the semaphore must have: a missing semaphore is
created with it (and with --ttl), an existing one with another limit is
refused with status 1 before anything runs. Without --limit a missing
semaphore is an error.

CMD gets these variables besides koncli's environment:

  KONLEASE_SEMAPHORE  NAMESPACE/NAME
  KONLEASE_HOLDER     the holder identity
  KONLEASE_TOKEN      the fencing token of this acquisition of the slot
  KONLEASE_SLOT       the slot, 0 to LIMIT-1

Exit status:
  0      CMD exited 0; or, with --if-busy=skip (-E 0), the semaphore was
         full and CMD was not run
  1      error before CMD ran (it does not exist without --limit, another
         limit or TTL, RBAC, an unreachable API server, ...), or releasing
         the slot failed after CMD exited 0
  2      usage error; nothing was sent
  3      not acquired: every slot is held and --timeout ran out (or was
         0); CMD was not run (-E N makes this N)
  4      the slot was lost while CMD ran; CMD was stopped
  5      not acquired: this holder identity holds a slot already
  126    CMD could not be executed
  127    CMD was not found
  128+n  CMD was killed by signal n (143 for SIGTERM)
  N      CMD exited with status N
  130    interrupted by SIGINT (143: SIGTERM, 129: SIGHUP) while waiting
         for a slot; CMD was not run`

const runExample = `  # At most 3 crawlers at once, in whatever process or pod starts them
  koncli semaphore run crawler --limit 3 -- ./crawl --site "$SITE"

  # Node maintenance, two nodes at a time; a dead node's slot is free
  # again 10 minutes after its last renewal
  koncli semaphore run node-maintenance --limit 2 --ttl 10m -- maintain-node

  # Skip instead of waiting when every slot is taken
  koncli semaphore run crawler --timeout 0 --if-busy=skip -- ./crawl`
