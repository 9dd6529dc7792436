package cmdutil

import (
	"fmt"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/ttl"
)

// The views are what `list` and `get` print with -o json, yaml, jsonpath,
// go-template and custom-columns. They are shaped as Kubernetes objects
// (apiVersion, kind, metadata, spec, status, and a List of items), the
// shape of the original Mutex resource, so that kubectl habits work:
// '-o jsonpath={.status.holder}', 'custom-columns=NAME:.metadata.name'.
// What configures a mutex goes in spec, what it is now in status; new
// kinds of lock add their own fields there (a fair mutex spec.fair and
// status.waiters, a semaphore spec.limit and status.holders) without
// moving any. No API server serves this schema: koncli computes it from
// the Lease, and apiVersion names the schema's version.
const (
	// ViewAPIVersion is the apiVersion of every printed mutex.
	ViewAPIVersion = "konlease.io/v1alpha1"
	// ViewKindMutex is the kind of a printed mutex.
	ViewKindMutex = "Mutex"
)

// MutexView is a mutex as koncli prints it. Fields without a value are left
// out (an unlocked mutex has no holder, one without TTL no spec.ttl).
// Objects are printed through unstructured maps, so keys come out in
// alphabetical order at every level, the same in JSON and in YAML, as
// kubectl prints objects it has no Go type for.
type MutexView struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   ViewMetadata   `json:"metadata"`
	Spec       MutexViewSpec  `json:"spec"`
	Status     MutexViewState `json:"status"`
}

// ViewMetadata identifies a printed object.
type ViewMetadata struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// MutexViewSpec is what configures a mutex.
type MutexViewSpec struct {
	// TTL is a Go duration ("5m0s"); absent: no TTL.
	TTL string `json:"ttl,omitempty"`
	// Fair: waiters queue in FIFO order; absent: they race.
	Fair bool `json:"fair,omitempty"`
}

// MutexViewState is a mutex's state. Times are RFC 3339 in UTC, as
// kubectl prints metav1.Time.
type MutexViewState struct {
	// Phase is Locked, Unlocked, Expired or Invalid.
	Phase lock.Phase `json:"phase"`
	// Holder is the current holder (for Expired, the last one).
	Holder    string       `json:"holder,omitempty"`
	LockedAt  *metav1.Time `json:"lockedAt,omitempty"`
	RenewedAt *metav1.Time `json:"renewedAt,omitempty"`
	// ExpiresAt is when the holder's TTL runs out unless renewed.
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// Token is the fencing token of the current or last acquisition;
	// absent: never locked.
	Token int64 `json:"token,omitempty"`
	// Reason says why an Invalid Lease is not a valid mutex.
	Reason string `json:"reason,omitempty"`
	// Waiters are the holder identities queued on a fair mutex, oldest
	// first.
	Waiters []string `json:"waiters,omitempty"`
}

// NewMutexView converts a status for printing.
func NewMutexView(s lock.Status) MutexView {
	v := MutexView{
		APIVersion: ViewAPIVersion,
		Kind:       ViewKindMutex,
		Metadata:   ViewMetadata{Name: s.Name, Namespace: s.Namespace},
		Spec:       MutexViewSpec{Fair: s.Fair},
		Status:     MutexViewState{Phase: s.Phase, Holder: s.Holder, Token: s.Token, Reason: s.Reason, Waiters: s.Waiters},
	}
	if s.TTL > 0 {
		v.Spec.TTL = ttl.Format(s.TTL)
	}
	if s.Holder != "" {
		v.Status.LockedAt = timeOrNil(s.LockedAt)
		v.Status.RenewedAt = timeOrNil(s.RenewedAt)
		v.Status.ExpiresAt = timeOrNil(s.ExpiresAt)
	}
	return v
}

func timeOrNil(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	return &metav1.Time{Time: t}
}

// viewObject is what the object printers print: one mutex for a get of one
// NAME, else a List, as kubectl prints a get of several names.
func viewObject(items []lock.Status, single bool) (runtime.Object, error) {
	if single && len(items) == 1 {
		m, err := toUnstructured(NewMutexView(items[0]))
		if err != nil {
			return nil, err
		}
		return &unstructured.Unstructured{Object: m}, nil
	}
	list := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": "v1", "kind": "List"}}
	list.Items = []unstructured.Unstructured{}
	for _, s := range items {
		m, err := toUnstructured(NewMutexView(s))
		if err != nil {
			return nil, err
		}
		list.Items = append(list.Items, unstructured.Unstructured{Object: m})
	}
	return list, nil
}

func toUnstructured(v MutexView) (map[string]any, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&v)
	if err != nil {
		return nil, fmt.Errorf("converting mutex %s for printing: %w", Ref(v.Metadata.Namespace, v.Metadata.Name), err)
	}
	return m, nil
}

// none is what kubectl prints for an empty cell.
const none = "<none>"

// mutexColumns are the table's columns; Priority 1 ones only with -o wide.
// The printer writes their names in upper case.
var mutexColumns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "the mutex's name"},
	{Name: "Holder", Type: "string", Description: "who holds it"},
	{Name: "Phase", Type: "string", Description: "Locked, Unlocked, Expired or Invalid"},
	{Name: "TTL", Type: "string", Description: "its TTL"},
	{Name: "Locked", Type: "string", Description: "how long ago the holder locked it"},
	{Name: "Expires", Type: "string", Description: "when the holder's TTL runs out unless renewed"},
	{Name: "Renewed", Type: "string", Priority: 1, Description: "how long ago the holder last renewed it"},
	{Name: "Token", Type: "integer", Priority: 1, Description: "the fencing token of the current or last acquisition"},
	{Name: "Fair", Type: "boolean", Priority: 1, Description: "whether waiters queue in FIFO order"},
	{Name: "Waiters", Type: "integer", Priority: 1, Description: "how many waiters are queued on a fair mutex"},
	{Name: "Reason", Type: "string", Priority: 1, Description: "why an Invalid Lease is not a valid mutex"},
}

// mutexTable is the table of items, as a server-side Table, for the
// cli-runtime table printer. Its rows carry the object's metadata, from
// which the printer takes the NAMESPACE column. now is this machine's
// clock, for the relative times.
func mutexTable(items []lock.Status, now time.Time) *metav1.Table {
	t := &metav1.Table{ColumnDefinitions: mutexColumns}
	for _, s := range items {
		held := s.Holder != ""
		locked, renewed, expires, token := none, none, none, strconv.FormatInt(s.Token, 10)
		if held {
			locked, renewed, expires = Age(s.LockedAt, now), Age(s.RenewedAt, now), Until(s.ExpiresAt, now)
		}
		if s.Phase == lock.PhaseInvalid {
			token = none // unreadable, not zero
		}
		t.Rows = append(t.Rows, metav1.TableRow{
			Cells: []any{s.Name, orNone(s.Holder), string(s.Phase), ttlCell(s.TTL), locked, expires, renewed, token, s.Fair, len(s.Waiters), orNone(s.Reason)},
			Object: runtime.RawExtension{Object: &metav1.PartialObjectMetadata{
				ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace},
			}},
		})
	}
	return t
}

func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

func ttlCell(d time.Duration) string {
	if d == 0 {
		return none
	}
	return ttl.Format(d)
}

// Age is how long ago t was, as kubectl prints ages ("5m", "3h"); <none>
// for a zero t. A t in the future (clock skew) counts as now.
func Age(t, now time.Time) string {
	if t.IsZero() {
		return none
	}
	return duration.HumanDuration(max(now.Sub(t), 0))
}

// Until is how far from now t is, in kubectl's duration format: "in 4m"
// ahead, "30s ago" behind; <none> for a zero t.
func Until(t, now time.Time) string {
	if t.IsZero() {
		return none
	}
	if d := t.Sub(now); d >= 0 {
		return "in " + duration.HumanDuration(d)
	}
	return duration.HumanDuration(now.Sub(t)) + " ago"
}
