// Package record is the overlap detector of the node tests: a fenced log of
// critical sections kept in a Lease, written with conditional updates by
// the workload (e2e/node/workload) that stands in for the examples'
// ./migrate and run-daily-job, and read by the tests.
//
// Each entry is written before the work starts and closed after it ends,
// each by one Update conditional on the resourceVersion that was read. So
// if two holders were ever inside at once, the second one's entry finds
// the first one's open entry, whatever the timing, and a violation is
// recorded. The record is a plain Lease (not a mutex: package lock never
// touches it), so the workload needs no rights beyond the Role of
// examples/rbac (get and update on leases).
package record

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Annotation holds the record, as JSON, on the Lease.
const Annotation = "e2e.konlease.io/record"

// LeaseName is the record of a workload invoked as prog (./migrate,
// run-daily-job): every copy of one example shares it.
func LeaseName(prog string) string { return "record-" + prog }

// Record is the log and the test's instructions to the workload.
type Record struct {
	// Hold is how long each holder stays inside, unless UntilReleased.
	Hold Duration `json:"hold"`
	// UntilReleased makes each holder stay inside until Released is set
	// (or it is stopped by a signal).
	UntilReleased bool `json:"untilReleased,omitempty"`
	Released      bool `json:"released,omitempty"`

	// Inside is the open entry of the holder inside, if any.
	Inside *Entry `json:"inside,omitempty"`
	// Entries are all entries, in the order they entered.
	Entries []Entry `json:"entries,omitempty"`
	// Violations describe overlaps and fencing tokens that did not rise.
	Violations []string `json:"violations,omitempty"`
}

// Entry is one critical section.
type Entry struct {
	Pod    string `json:"pod"`
	Holder string `json:"holder"`
	// Token is the fencing token that koncli mutex run passed
	// (KONLEASE_TOKEN); 0 when the workload runs without it (the
	// lock/unlock script).
	Token   int64      `json:"token"`
	Entered time.Time  `json:"entered"`
	Exited  *time.Time `json:"exited,omitempty"`
	// Outcome is "ok", "signal: NAME" (stopped by a signal), or what the
	// test recorded (a holder it killed).
	Outcome string `json:"outcome,omitempty"`
}

// Same reports whether two entries are the same critical section.
func (e Entry) Same(o Entry) bool {
	return e.Pod == o.Pod && e.Holder == o.Holder && e.Token == o.Token && e.Entered.Equal(o.Entered)
}

// Duration is a time.Duration written as a Go duration string.
type Duration struct{ time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Create creates the record name in namespace with the instructions of r.
func Create(ctx context.Context, c kubernetes.Interface, namespace, name string, r Record) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = c.CoordinationV1().Leases(namespace).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{Annotation: string(raw)}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create record %s/%s: %w", namespace, name, err)
	}
	return nil
}

// Get reads the record.
func Get(ctx context.Context, c kubernetes.Interface, namespace, name string) (*Record, error) {
	l, err := c.CoordinationV1().Leases(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get record %s/%s: %w", namespace, name, err)
	}
	return decode(l)
}

func decode(l *coordinationv1.Lease) (*Record, error) {
	var r Record
	if err := json.Unmarshal([]byte(l.Annotations[Annotation]), &r); err != nil {
		return nil, fmt.Errorf("record %s/%s: %w", l.Namespace, l.Name, err)
	}
	return &r, nil
}

// Update applies change to the record with a read and an Update
// conditional on what was read, again on a conflict.
func Update(ctx context.Context, c kubernetes.Interface, namespace, name string, change func(*Record) error) error {
	leases := c.CoordinationV1().Leases(namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := leases.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		r, err := decode(l)
		if err != nil {
			return err
		}
		if err := change(r); err != nil {
			return err
		}
		raw, err := json.Marshal(r)
		if err != nil {
			return err
		}
		l.Annotations[Annotation] = string(raw)
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("update record %s/%s: %w", namespace, name, err)
	}
	return nil
}

// Enter opens e, recording a violation if another entry is open or the
// token does not rise above every earlier one.
func (r *Record) Enter(e Entry) {
	if r.Inside != nil {
		r.Violations = append(r.Violations, fmt.Sprintf("%s (holder %s, token %d) entered while %s (holder %s, token %d) was inside",
			e.Pod, e.Holder, e.Token, r.Inside.Pod, r.Inside.Holder, r.Inside.Token))
	}
	if e.Token != 0 {
		for _, prev := range r.Entries {
			if prev.Token >= e.Token {
				r.Violations = append(r.Violations, fmt.Sprintf("%s entered with token %d, not above the earlier %d of %s", e.Pod, e.Token, prev.Token, prev.Pod))
			}
		}
	}
	r.Inside = &e
	r.Entries = append(r.Entries, e)
}

// Exit closes e with outcome at t.
func (r *Record) Exit(e Entry, outcome string, t time.Time) {
	if r.Inside != nil && r.Inside.Same(e) {
		r.Inside = nil
	}
	for i := range r.Entries {
		if r.Entries[i].Same(e) && r.Entries[i].Exited == nil {
			r.Entries[i].Exited, r.Entries[i].Outcome = &t, outcome
		}
	}
}
