package cmdutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/konlease/konlease/lock"
)

func invalidStatus() lock.Status {
	return lock.Status{Namespace: "other", Name: "broken", Phase: lock.PhaseInvalid,
		Reason: `annotation konlease.io/ttl: invalid TTL "abc": not a Go duration`}
}

// parsedPrintFlags are the print flags of defaultFormat's command, parsed
// from args.
func parsedPrintFlags(t *testing.T, defaultFormat string, args []string) *PrintFlags {
	t.Helper()
	pf := NewPrintFlags(defaultFormat)
	cmd := &cobra.Command{Use: "test"}
	pf.AddFlags(cmd)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return pf
}

// printed runs the printer that -o format (and --no-headers, --template)
// chooses for defaultFormat's command on items.
func printed(t *testing.T, defaultFormat string, args []string, items []lock.Status, withNamespace, single bool) string {
	t.Helper()
	pr, err := parsedPrintFlags(t, defaultFormat, args).ToPrinter(withNamespace)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	var buf bytes.Buffer
	if err := pr.Print(&buf, items, single, t0.Add(5*time.Minute)); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return buf.String()
}

func TestPrintTable(t *testing.T) {
	items := []lock.Status{locked, noTTL, free, expired, invalidStatus()}
	for _, tc := range []struct {
		name          string
		args          []string
		withNamespace bool
		want          string
	}{
		{"default", nil, false, `
NAME               HOLDER        PHASE      TTL      LOCKED   EXPIRES
critical-section   pod-abc-123   Locked     10m0s    5m       in 5m
db-migration       worker-1      Locked     <none>   125m     <none>
idle               <none>        Unlocked   30s      <none>   <none>
stale              dead-pod      Expired    10m0s    65m      55m ago
broken             <none>        Invalid    <none>   <none>   <none>
`},
		{"wide, all namespaces", []string{"-o", "wide"}, true, `
NAMESPACE   NAME               HOLDER        PHASE      TTL      LOCKED   EXPIRES   RENEWED   TOKEN    FAIR    WAITERS   REASON
ns          critical-section   pod-abc-123   Locked     10m0s    5m       in 5m     5m        7        false   0         <none>
ns          db-migration       worker-1      Locked     <none>   125m     <none>    <none>    3        true    2         <none>
other       idle               <none>        Unlocked   30s      <none>   <none>    <none>    2        false   0         <none>
other       stale              dead-pod      Expired    10m0s    65m      55m ago   <none>    9        false   0         <none>
other       broken             <none>        Invalid    <none>   <none>   <none>    <none>    <none>   false   0         annotation konlease.io/ttl: invalid TTL "abc": not a Go duration
`},
		{"no headers", []string{"--no-headers"}, false, `
critical-section   pod-abc-123   Locked     10m0s    5m       in 5m
db-migration       worker-1      Locked     <none>   125m     <none>
idle               <none>        Unlocked   30s      <none>   <none>
stale              dead-pod      Expired    10m0s    65m      55m ago
broken             <none>        Invalid    <none>   <none>   <none>
`},
		{"names", []string{"-o", "name"}, false, "\ncritical-section\ndb-migration\nidle\nstale\nbroken\n"},
		{"qualified names", []string{"-o", "name"}, true, "\nns/critical-section\nns/db-migration\nother/idle\nother/stale\nother/broken\n"},
		{"custom columns", []string{"-o", "custom-columns=NAME:.metadata.name,HOLDER:.status.holder,TOKEN:.status.token"}, false, `
NAME               HOLDER        TOKEN
critical-section   pod-abc-123   7
db-migration       worker-1      3
idle               <none>        2
stale              dead-pod      9
broken             <none>        <none>
`},
		{"custom columns without headers", []string{"-o", "custom-columns=NAME:.metadata.name,PHASE:.status.phase", "--no-headers"}, false, `
critical-section   Locked
db-migration       Locked
idle               Unlocked
stale              Expired
broken             Invalid
`},
		{"jsonpath", []string{"-o", `jsonpath={range .items[?(@.status.phase=="Locked")]}{.status.holder}{"\n"}{end}`}, false, "\npod-abc-123\nworker-1\n"},
		{"go-template", []string{"-o", `go-template={{range .items}}{{.metadata.name}}={{.status.phase}} {{end}}`}, false, "\ncritical-section=Locked db-migration=Locked idle=Unlocked stale=Expired broken=Invalid "},
		{"--template alone is a Go template", []string{"--template", `{{len .items}}`}, false, "\n5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := printed(t, FormatTable, tc.args, items, tc.withNamespace, false), strings.TrimPrefix(tc.want, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestPrintObject: get of one NAME prints the object, of several a List;
// times are RFC 3339 UTC; keys are in the same (alphabetical) order in
// JSON and YAML; fields without a value are left out.
func TestPrintObject(t *testing.T) {
	got := printed(t, FormatYAML, nil, []lock.Status{locked}, false, true)
	want := `apiVersion: konlease.io/v1alpha1
kind: Mutex
metadata:
  name: critical-section
  namespace: ns
spec:
  ttl: 10m0s
status:
  expiresAt: "2024-01-01T12:10:00Z"
  holder: pod-abc-123
  lockedAt: "2024-01-01T12:00:00Z"
  phase: Locked
  renewedAt: "2024-01-01T12:00:00Z"
  token: 7
`
	if got != want {
		t.Errorf("get -o yaml:\n%s\nwant:\n%s", got, want)
	}
	fair := printed(t, FormatYAML, nil, []lock.Status{noTTL}, false, true)
	if !strings.Contains(fair, "spec:\n  fair: true\n") || !strings.Contains(fair, "  waiters:\n  - w1\n  - w2\n") {
		t.Errorf("get -o yaml of a fair mutex with two waiters:\n%s\nwant spec.fair: true and status.waiters [w1, w2], oldest first", fair)
	}
	gotJSON := printed(t, FormatYAML, []string{"-o", "json"}, []lock.Status{locked}, false, true)
	if order, yamlOrder := jsonKeys(t, gotJSON), yamlKeys(got); len(order) != 14 || !slices.Equal(order, yamlOrder) {
		t.Errorf("JSON key order %v differs from YAML's %v", order, yamlOrder)
	}

	gotJSON = printed(t, FormatYAML, []string{"-o", "json"}, []lock.Status{free}, false, true)
	wantJSON := `{
    "apiVersion": "konlease.io/v1alpha1",
    "kind": "Mutex",
    "metadata": {
        "name": "idle",
        "namespace": "other"
    },
    "spec": {
        "ttl": "30s"
    },
    "status": {
        "phase": "Unlocked",
        "token": 2
    }
}
`
	if gotJSON != wantJSON {
		t.Errorf("get -o json of an unlocked mutex:\n%s\nwant:\n%s", gotJSON, wantJSON)
	}

	// Local times print in UTC.
	local := locked
	local.LockedAt = t0.In(time.FixedZone("X", 3600))
	if got := printed(t, FormatYAML, []string{"-o", "jsonpath={.status.lockedAt}"}, []lock.Status{local}, false, true); got != "2024-01-01T12:00:00Z" {
		t.Errorf("lockedAt = %q, want UTC", got)
	}

	// Several NAMEs, or list: a List, also when empty (for jq).
	var list struct {
		APIVersion, Kind string
		Items            []MutexView
	}
	if err := json.Unmarshal([]byte(printed(t, FormatYAML, []string{"-o", "json"}, []lock.Status{locked, invalidStatus()}, false, false)), &list); err != nil {
		t.Fatal(err)
	}
	if list.Kind != "List" || list.APIVersion != "v1" || len(list.Items) != 2 || list.Items[1].Status.Phase != lock.PhaseInvalid || list.Items[1].Status.Reason == "" {
		t.Errorf("List = %+v", list)
	}
	if got := printed(t, FormatTable, []string{"-o", "json"}, nil, false, false); got != "{\n    \"apiVersion\": \"v1\",\n    \"items\": [],\n    \"kind\": \"List\"\n}\n" {
		t.Errorf("empty list -o json = %q", got)
	}
}

// jsonKeys is the order of the keys of a JSON document, depth first.
func jsonKeys(t *testing.T, doc string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(doc))
	var (
		keys  []string
		stack []bool // per open container: is it an object?
	)
	expectKey := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return keys
		}
		if err != nil {
			t.Fatal(err)
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				stack = append(stack, v == '{')
			} else {
				stack = stack[:len(stack)-1]
			}
		case string:
			if expectKey {
				keys = append(keys, v)
				expectKey = false
				continue
			}
		}
		expectKey = len(stack) > 0 && stack[len(stack)-1]
	}
}

// yamlKeys is the order of the keys of a block-style YAML document.
func yamlKeys(doc string) []string {
	var keys []string
	for _, m := range regexp.MustCompile(`(?m)^\s*([A-Za-z]+):`).FindAllStringSubmatch(doc, -1) {
		keys = append(keys, m[1])
	}
	return keys
}

func TestPrintFlagsInvalid(t *testing.T) {
	for _, tc := range []struct {
		defaultFormat string
		output        string
		want          string
	}{
		{FormatTable, "xml", `invalid -o "xml": want one of json, yaml, kyaml, wide, name, jsonpath=TEMPLATE`},
		{FormatYAML, "", `invalid -o "": want one of json, yaml`},
		{FormatTable, "jsonpath={.x", `invalid -o "jsonpath={.x": error parsing jsonpath {.x, unclosed action`},
		{FormatTable, "jsonpath=", `invalid -o "jsonpath=": template format specified but no template given`},
		{FormatTable, "custom-columns=", `invalid -o "custom-columns=": custom-columns format specified but no custom columns given`},
		{FormatTable, "custom-columns=NAME", `invalid -o "custom-columns=NAME"`},
		{FormatTable, "go-template={{.x", `invalid -o "go-template={{.x"`},
	} {
		t.Run(tc.output, func(t *testing.T) {
			pf := NewPrintFlags(tc.defaultFormat)
			pf.OutputFormat = tc.output
			_, err := pf.ToPrinter(false)
			if !IsUsage(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ToPrinter(-o %q) = %v, want a usage error containing %q", tc.output, err, tc.want)
			}
			// No empty item in the list of formats.
			if err != nil && (strings.Contains(err.Error(), "of ,") || strings.Contains(err.Error(), ", ,")) {
				t.Errorf("empty format in %q", err)
			}
		})
	}
}

func TestOutputCompletion(t *testing.T) {
	pf := NewPrintFlags(FormatTable)
	cmd := &cobra.Command{Use: "test"}
	pf.AddFlags(cmd)
	fn, ok := cmd.GetFlagCompletionFunc("output")
	if !ok {
		t.Fatal("-o has no completion")
	}
	all, _ := fn(cmd, nil, "")
	for _, want := range []string{"json", "yaml", "wide", "name", "jsonpath", "custom-columns", "go-template"} {
		if !slices.Contains(all, want) {
			t.Errorf("-o completions %v lack %q", all, want)
		}
	}
	if slices.Contains(all, "") {
		t.Errorf("-o completions %v contain an empty format", all)
	}
	got, directive := fn(cmd, nil, "js")
	slices.Sort(got)
	if !slices.Equal(got, []string{"json", "jsonpath", "jsonpath-as-json", "jsonpath-file"}) || directive != cobra.ShellCompDirectiveNoFileComp {
		t.Errorf("-o js<TAB> = %v, %v", got, directive)
	}
}
