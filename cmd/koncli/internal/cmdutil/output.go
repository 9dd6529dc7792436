package cmdutil

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"

	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/ttl"
)

// StatusView is a mutex as `get` and `list -o json|yaml` print it: the
// status fields of the original Mutex resource (holder, phase, lockedAt,
// expiresAt) plus what identifies and configures it. Times are RFC 3339 in
// UTC; empty fields are left out, so an unlocked mutex has no holder.
type StatusView struct {
	Name      string     `json:"name"`
	Namespace string     `json:"namespace"`
	TTL       string     `json:"ttl,omitempty"`
	Holder    string     `json:"holder,omitempty"`
	Phase     lock.Phase `json:"phase"`
	LockedAt  string     `json:"lockedAt,omitempty"`
	ExpiresAt string     `json:"expiresAt,omitempty"`
	// Token is the fencing token of the current or last acquisition.
	Token int64 `json:"token,omitempty"`
}

// ListView is what `list -o json|yaml` prints: always an object, so that
// fields can be added without breaking readers.
type ListView struct {
	Items []StatusView `json:"items"`
}

// View converts a status for printing.
func View(s lock.Status) StatusView {
	v := StatusView{Name: s.Name, Namespace: s.Namespace, Holder: s.Holder, Phase: s.Phase, Token: s.Token}
	if s.TTL > 0 {
		v.TTL = ttl.Format(s.TTL)
	}
	if !s.LockedAt.IsZero() {
		v.LockedAt = FormatTime(s.LockedAt)
	}
	if !s.ExpiresAt.IsZero() {
		v.ExpiresAt = FormatTime(s.ExpiresAt)
	}
	return v
}

// WriteObject prints v as indented JSON or as YAML.
func WriteObject(w io.Writer, format string, v any) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding JSON: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding YAML: %w", err)
		}
		_, err = w.Write(b)
		return err
	}
	return fmt.Errorf("unknown output format %q", format)
}

// ValidateOutput checks an -o value against the allowed formats.
func ValidateOutput(value string, allowed ...string) error {
	for _, a := range allowed {
		if value == a {
			return nil
		}
	}
	return Usagef("invalid -o %q: want one of %s", value, strings.Join(allowed, ", "))
}

// TableOptions select the columns of WriteTable.
type TableOptions struct {
	// AllNamespaces adds NAMESPACE as the first column.
	AllNamespaces bool
	// Wide adds TOKEN.
	Wide bool
}

// none is what kubectl prints for an empty cell.
const none = "<none>"

// WriteTable prints mutexes as a table: NAME, HOLDER, PHASE, TTL,
// LOCKED-AT (how long ago), EXPIRES-AT (how long from now), with NAMESPACE
// first for all namespaces and TOKEN last for wide output. now is this
// machine's clock.
func WriteTable(w io.Writer, items []lock.Status, opts TableOptions, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	var head []string
	if opts.AllNamespaces {
		head = append(head, "NAMESPACE")
	}
	head = append(head, "NAME", "HOLDER", "PHASE", "TTL", "LOCKED-AT", "EXPIRES-AT")
	if opts.Wide {
		head = append(head, "TOKEN")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, s := range items {
		var row []string
		if opts.AllNamespaces {
			row = append(row, s.Namespace)
		}
		row = append(row, s.Name, orNone(s.Holder), string(s.Phase), ttlCell(s.TTL), Age(s.LockedAt, now), Until(s.ExpiresAt, now))
		if opts.Wide {
			row = append(row, strconv.FormatInt(s.Token, 10))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// WriteNames prints one mutex per line: its name, or namespace/name when
// qualified (all namespaces), for scripts.
func WriteNames(w io.Writer, items []lock.Status, qualified bool) error {
	for _, s := range items {
		name := s.Name
		if qualified {
			name = Ref(s.Namespace, s.Name)
		}
		if _, err := fmt.Fprintln(w, name); err != nil {
			return err
		}
	}
	return nil
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

// Until is how far from now t is: "in 4m" ahead, "30s ago" behind; <none>
// for a zero t.
func Until(t, now time.Time) string {
	if t.IsZero() {
		return none
	}
	if d := t.Sub(now); d >= 0 {
		return "in " + duration.HumanDuration(d)
	}
	return duration.HumanDuration(now.Sub(t)) + " ago"
}
