package cmdutil

import (
	"github.com/spf13/cobra"

	"github.com/konlease/konlease/lock"
)

// AcquireFlags are the flags that every acquiring command (mutex lock and
// run, semaphore acquire and run) reads alike: --holder, --timeout, --ttl,
// --if-busy and -E. Each command registers them with help text of its own
// (Holder, Timeout and TTL are the flag values); what they mean, which
// must not differ from one command to another, is Parse.
type AcquireFlags struct {
	Holder, Timeout, TTL string
	Busy                 BusyFlags
}

// Acquisition is what AcquireFlags ask for.
type Acquisition struct {
	Holder   string
	Wait     Wait
	BusyCode int
	// Options are WithHolder and, for an explicit --ttl, WithRequiredTTL:
	// a TTL given is the TTL the mutex or semaphore must have.
	Options []lock.Option
}

// Parse checks the flags of cmd; holderSuffix goes after the default
// holder identity (see Holder).
func (a *AcquireFlags) Parse(cmd *cobra.Command, holderSuffix string) (Acquisition, error) {
	holder, err := Holder(a.Holder, cmd.Flags().Changed("holder"), holderSuffix)
	if err != nil {
		return Acquisition{}, err
	}
	wait, err := WaitFromFlag(a.Timeout, cmd.Flags().Changed("timeout"))
	if err != nil {
		return Acquisition{}, err
	}
	busyCode, err := a.Busy.ExitCode(cmd)
	if err != nil {
		return Acquisition{}, err
	}
	opts := []lock.Option{lock.WithHolder(holder)}
	if cmd.Flags().Changed("ttl") {
		d, err := ParseTTL(a.TTL)
		if err != nil {
			return Acquisition{}, err
		}
		opts = append(opts, lock.WithRequiredTTL(d))
	}
	return Acquisition{Holder: holder, Wait: wait, BusyCode: busyCode, Options: opts}, nil
}
