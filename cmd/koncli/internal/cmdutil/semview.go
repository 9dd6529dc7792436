package cmdutil

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/ttl"
)

// ViewKindSemaphore is the kind of a printed semaphore.
const ViewKindSemaphore = "Semaphore"

// SemaphoreView is a semaphore as koncli prints it, in the shape of
// MutexView: spec (limit, ttl, fair) and status (phase, holders, waiters).
type SemaphoreView struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   ViewMetadata       `json:"metadata"`
	Spec       SemaphoreViewSpec  `json:"spec"`
	Status     SemaphoreViewState `json:"status"`
}

// SemaphoreViewSpec configures a semaphore.
type SemaphoreViewSpec struct {
	Limit int    `json:"limit,omitempty"`
	TTL   string `json:"ttl,omitempty"`
	Fair  bool   `json:"fair,omitempty"`
}

// SemaphoreViewState is a semaphore's state.
type SemaphoreViewState struct {
	// Phase is Locked (someone holds a slot), Unlocked or Invalid.
	Phase   lock.Phase       `json:"phase"`
	Holders []SlotViewHolder `json:"holders,omitempty"`
	// Waiters, on a fair semaphore, oldest first.
	Waiters []string `json:"waiters,omitempty"`
	Reason  string   `json:"reason,omitempty"`
}

// SlotViewHolder is one holder of a slot.
type SlotViewHolder struct {
	Holder    string       `json:"holder"`
	Slot      int          `json:"slot"`
	Phase     lock.Phase   `json:"phase"`
	LockedAt  *metav1.Time `json:"lockedAt,omitempty"`
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	Token     int64        `json:"token"`
}

// NewSemaphoreView converts a semaphore's status for printing.
func NewSemaphoreView(s lock.SemaphoreStatus) SemaphoreView {
	v := SemaphoreView{
		APIVersion: ViewAPIVersion, Kind: ViewKindSemaphore,
		Metadata: ViewMetadata{Name: s.Name, Namespace: s.Namespace},
		Spec:     SemaphoreViewSpec{Limit: s.Limit, Fair: s.Fair},
		Status:   SemaphoreViewState{Phase: s.Phase, Waiters: s.Waiters, Reason: s.Reason},
	}
	if s.TTL > 0 {
		v.Spec.TTL = ttl.Format(s.TTL)
	}
	for _, h := range s.Holders {
		v.Status.Holders = append(v.Status.Holders, SlotViewHolder{Holder: h.Holder, Slot: h.Slot, Phase: h.Phase,
			LockedAt: timeOrNil(h.LockedAt), ExpiresAt: timeOrNil(h.ExpiresAt), Token: h.Token})
	}
	return v
}

// semaphoreObject is the object the object printers print: one semaphore
// for a get of one NAME, else a List.
func semaphoreObject(items []lock.SemaphoreStatus, single bool) (runtime.Object, error) {
	conv := func(s lock.SemaphoreStatus) (map[string]any, error) {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ptrTo(NewSemaphoreView(s)))
		if err != nil {
			return nil, fmt.Errorf("converting semaphore %s for printing: %w", Ref(s.Namespace, s.Name), err)
		}
		return m, nil
	}
	if single && len(items) == 1 {
		m, err := conv(items[0])
		if err != nil {
			return nil, err
		}
		return &unstructured.Unstructured{Object: m}, nil
	}
	list := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": "v1", "kind": "List"}, Items: []unstructured.Unstructured{}}
	for _, s := range items {
		m, err := conv(s)
		if err != nil {
			return nil, err
		}
		list.Items = append(list.Items, unstructured.Unstructured{Object: m})
	}
	return list, nil
}

func ptrTo[T any](v T) *T { return &v }

// semaphoreColumns are the semaphores' table columns.
var semaphoreColumns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "the semaphore's name"},
	{Name: "Limit", Type: "integer", Description: "the most holders at once"},
	{Name: "Held", Type: "integer", Description: "how many hold a slot"},
	{Name: "Holders", Type: "string", Description: "who holds the slots"},
	{Name: "TTL", Type: "string", Description: "its TTL"},
	{Name: "Fair", Type: "boolean", Priority: 1, Description: "whether waiters queue in FIFO order"},
	{Name: "Waiters", Type: "integer", Priority: 1, Description: "how many waiters are queued on a fair semaphore"},
	{Name: "Oldest", Type: "string", Priority: 1, Description: "how long the oldest holder has held its slot"},
	{Name: "Reason", Type: "string", Priority: 1, Description: "why an Invalid Lease is not a valid semaphore"},
}

func semaphoreTable(items []lock.SemaphoreStatus, now time.Time) *metav1.Table {
	t := &metav1.Table{ColumnDefinitions: semaphoreColumns}
	for _, s := range items {
		var names []string
		var oldest time.Time
		for _, h := range s.Holders {
			names = append(names, h.Holder)
			if oldest.IsZero() || h.LockedAt.Before(oldest) {
				oldest = h.LockedAt
			}
		}
		holders := none
		if len(names) > 0 {
			holders = strings.Join(names, ",")
		}
		limit := strconv.Itoa(s.Limit)
		if s.Phase == lock.PhaseInvalid {
			limit = none
		}
		t.Rows = append(t.Rows, metav1.TableRow{
			Cells: []any{s.Name, limit, len(s.Holders), holders, ttlCell(s.TTL), s.Fair, len(s.Waiters), Age(oldest, now), orNone(s.Reason)},
			Object: runtime.RawExtension{Object: &metav1.PartialObjectMetadata{
				ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace},
			}},
		})
	}
	return t
}

// PrintSemaphores writes semaphores to w, as Print writes mutexes.
func (pr *Printer) PrintSemaphores(w io.Writer, items []lock.SemaphoreStatus, single bool, now time.Time) error {
	refs := make([][2]string, len(items))
	for i, s := range items {
		refs[i] = [2]string{s.Namespace, s.Name}
	}
	return pr.print(w, refs, func() *metav1.Table { return semaphoreTable(items, now) }, func() (runtime.Object, error) { return semaphoreObject(items, single) })
}
