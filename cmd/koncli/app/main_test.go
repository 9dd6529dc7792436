package app

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

// result is one run of koncli in process.
type result struct {
	code           int
	stdout, stderr string
}

// kubeconfig writes a kubeconfig whose context uses namespace ns and a
// server that must never be contacted (the fake clientset answers).
func kubeconfig(t *testing.T, ns string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	data := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://unused.invalid:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: ctx
  context: {cluster: c, user: u, namespace: ` + ns + `}
current-context: ctx
`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// koncli runs koncli in process; with cs set, the lock client uses it.
func koncli(t *testing.T, cs *fake.Clientset, args ...string) result {
	t.Helper()
	return invoke(t, cs, "koncli", args...)
}

func invoke(t *testing.T, cs *fake.Clientset, argv0 string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	f := cmdutil.NewFactory(streams)
	if cs != nil {
		f.NewClient = func(log logr.Logger) (*lock.Client, error) {
			return lock.NewClient(cs.CoordinationV1(), lock.WithLogger(log))
		}
	} else {
		f.NewClient = func(logr.Logger) (*lock.Client, error) {
			t.Errorf("koncli %q contacted the API server; want it refused before", args)
			return nil, context.Canceled
		}
	}
	code := run(t.Context(), append([]string{argv0}, args...), streams, f)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// commands lists every command of a tree.
func commands(c *cobra.Command) []*cobra.Command {
	all := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		all = append(all, commands(sub)...)
	}
	return all
}

func TestHelpOfEveryCommand(t *testing.T) {
	streams := genericiooptions.NewTestIOStreamsDiscard()
	root := NewRootCommand(streams, cmdutil.NewFactory(streams))
	for _, c := range commands(root) {
		if c.Hidden || c.Name() == "help" {
			continue
		}
		path := strings.Fields(c.CommandPath())[1:]
		t.Run(strings.Join(append([]string{"koncli"}, path...), " "), func(t *testing.T) {
			r := koncli(t, nil, append(path, "--help")...)
			if r.code != 0 {
				t.Fatalf("exit code %d, want 0; stderr %q", r.code, r.stderr)
			}
			for _, want := range []string{"Usage:", "Exit status:\n  0 "} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("help does not contain %q:\n%s", want, r.stdout)
				}
			}
			if c.Runnable() && c.HasParent() && c.Parent().HasParent() && c.Example == "" {
				t.Errorf("no Example block")
			}
			// The exit status section comes last, after the flags.
			if i, j := strings.Index(r.stdout, "Flags:"), strings.Index(r.stdout, "Exit status:"); i > j {
				t.Errorf("Exit status section before the flags")
			}
		})
	}
}

func TestRootHelpListsEveryExitCode(t *testing.T) {
	r := koncli(t, nil, "--help")
	for _, code := range []string{"\n  0 ", "\n  1 ", "\n  2 ", "\n  3 ", "\n  4 ", "\n  126 ", "\n  127 ", "\n  128+n ", "130 SIGINT", "143 SIGTERM"} {
		if !strings.Contains(r.stdout, code) {
			t.Errorf("root help lacks exit code %q", strings.TrimSpace(code))
		}
	}
}

func TestPluginMode(t *testing.T) {
	for _, argv0 := range []string{"kubectl-mutex", "/usr/local/bin/kubectl-mutex"} {
		if !IsPlugin(argv0) {
			t.Errorf("IsPlugin(%q) = false", argv0)
		}
	}
	if IsPlugin("/usr/local/bin/koncli") {
		t.Errorf("IsPlugin(koncli) = true")
	}
	r := invoke(t, nil, "/usr/local/bin/kubectl-mutex", "lock", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "kubectl mutex lock NAME") || strings.Contains(r.stdout, "koncli mutex") {
		t.Errorf("kubectl-mutex lock --help: code %d, want usage naming \"kubectl mutex lock\" only:\n%s", r.code, r.stdout)
	}
	r = invoke(t, nil, "kubectl-mutex", "mutex", "lock", "x")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "Run 'kubectl mutex --help' for usage.") {
		t.Errorf("kubectl-mutex mutex: code %d stderr %q, want usage error", r.code, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
		help string
	}{
		{[]string{"frob"}, `unknown command "frob" for "koncli"`, "koncli"},
		{[]string{"mutex", "lok", "x"}, `did you mean "lock"?`, "koncli mutex"},
		{[]string{"mutex", "lock"}, `needs NAME`, "koncli mutex lock"},
		{[]string{"mutex", "lock", "a", "b"}, `unexpected "b"`, "koncli mutex lock"},
		{[]string{"mutex", "lock", "x", "--bogus"}, `unknown flag: --bogus`, "koncli mutex lock"},
		{[]string{"mutex", "lock", "Bad_Name"}, `invalid mutex name "Bad_Name"`, "koncli mutex lock"},
		{[]string{"mutex", "lock", "x", "--timeout", "abc"}, `invalid --timeout "abc": not a Go duration`, "koncli mutex lock"},
		{[]string{"mutex", "lock", "x", "--timeout", "-1s"}, `must not be negative`, "koncli mutex lock"},
		{[]string{"mutex", "lock", "x", "--ttl", "500ms"}, `invalid --ttl "500ms": below the minimum of 1s`, "koncli mutex lock"},
		{[]string{"mutex", "create", "x", "--ttl", "0"}, `invalid --ttl "0": is zero`, "koncli mutex create"},
		{[]string{"mutex", "create", "x", "--ttl", "-1s"}, `invalid --ttl "-1s": is negative`, "koncli mutex create"},
		{[]string{"mutex", "create", "x", "--ttl", "abc"}, `invalid --ttl "abc": not a Go duration`, "koncli mutex create"},
		{[]string{"mutex", "create", "x", "--ttl", "100000h"}, `above the maximum`, "koncli mutex create"},
		{[]string{"mutex", "lock", "x", "--holder", " padded"}, `leading or trailing white space`, "koncli mutex lock"},
		{[]string{"mutex", "unlock", "x", "--holder", "h", "--force"}, `takes no --holder`, "koncli mutex unlock"},
		{[]string{"mutex", "run", "x", "true"}, `needs -- between NAME and the command`, "koncli mutex run"},
		{[]string{"mutex", "run", "x", "--timeout", "5m", "echo", "hi there"}, `as in: koncli mutex run x --kubeconfig `, "koncli mutex run"},
		{[]string{"mutex", "run", "x", "--timeout", "5m", "echo", "hi there"}, ` --timeout 5m -- echo 'hi there'`, "koncli mutex run"},
		{[]string{"mutex", "lock", "x", "-E", "300"}, `invalid --conflict-exit-code 300`, "koncli mutex lock"},
		{[]string{"mutex", "run", "x", "--"}, `needs a command after --`, "koncli mutex run"},
		{[]string{"mutex", "run", "--", "true"}, `needs NAME before --`, "koncli mutex run"},
		{[]string{"mutex", "run", "x", "--grace-period", "soon", "--", "true"}, `invalid --grace-period "soon"`, "koncli mutex run"},
		{[]string{"mutex", "list", "-o", "xml"}, `invalid -o "xml"`, "koncli mutex list"},
		{[]string{"mutex", "get", "x", "-o", "table"}, `invalid -o "table": want one of json, yaml`, "koncli mutex get"},
		{[]string{"mutex", "get", "x", "-o", "jsonpath={.status"}, `invalid -o "jsonpath={.status": error parsing jsonpath`, "koncli mutex get"},
		{[]string{"mutex", "list", "-l", "a=b=c"}, `invalid -l "a=b=c"`, "koncli mutex list"},
		{[]string{"mutex", "get"}, `needs NAME`, "koncli mutex get"},
		{[]string{"mutex", "delete", "ok", "Bad_Name"}, `invalid mutex name "Bad_Name"`, "koncli mutex delete"},
		{[]string{"mutex", "create", "x", "--update"}, `--update changes the TTL to the one --ttl gives`, "koncli mutex create"},
		{[]string{"mutex", "list", "-n", "Bad_NS"}, `invalid namespace "Bad_NS"`, "koncli mutex list"},
		{[]string{"completion", "tcsh"}, `unknown shell "tcsh"`, "koncli completion"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			// Global flags first: after run's -- they would be the command's.
			r := koncli(t, nil, append([]string{"--kubeconfig", kubeconfig(t, "unit")}, tc.args...)...)
			if r.code != ExitUsage {
				t.Errorf("exit code %d, want %d; stderr %q", r.code, ExitUsage, r.stderr)
			}
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "error: ") || !strings.Contains(lines[0], tc.want) {
				t.Errorf("stderr %q: want \"error: ...%s...\" and the --help line", r.stderr, tc.want)
			}
			if want := "Run '" + tc.help + " --help' for usage."; len(lines) != 2 || lines[1] != want {
				t.Errorf("stderr %q: want last line %q", r.stderr, want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

func TestCommandsOnFakeClientset(t *testing.T) {
	// The leader-election Lease lives in another namespace: the fake's
	// watch ignores field selectors, so a mutex holder's keeper would take
	// any Lease event in its namespace for its own mutex.
	cs := fake.NewClientset(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "leader"}})
	kc := kubeconfig(t, "unit")
	k := func(args ...string) result {
		t.Helper()
		return koncli(t, cs, append(args, "--kubeconfig", kc)...)
	}
	steps := []struct {
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{[]string{"mutex", "create", "m", "--ttl", "5m"}, 0, "", "mutex unit/m created (TTL 5m0s, Unlocked)"},
		{[]string{"mutex", "create", "m", "--ttl", "5m"}, 0, "", "exists"},
		{[]string{"mutex", "create", "m", "--ttl", "1m"}, 1, "", "pass --update"},
		{[]string{"mutex", "lock", "m", "--holder", "w1", "--timeout", "0"}, 0, "KONLEASE_MUTEX=unit/m\nKONLEASE_HOLDER=w1\nKONLEASE_TOKEN=1\n", `locked mutex unit/m as "w1" (token 1)`},
		{[]string{"mutex", "lock", "m", "--holder", "w2", "--timeout", "0"}, 3, "", `not acquired in a single attempt (--timeout 0): mutex unit/m is locked by "w1"`},
		{[]string{"mutex", "lock", "m", "--holder", "w1", "--timeout", "0"}, 5, "", "holds it already"},
		{[]string{"mutex", "create", "m", "--ttl", "1m", "--update"}, 1, "", "unlock it first"},
		{[]string{"mutex", "delete", "m"}, 1, "", "refusing to delete a locked mutex"},
		{[]string{"mutex", "get", "m", "-o", "json"}, 0, `"holder": "w1"`, ""},
		{[]string{"mutex", "get", "m"}, 0, "holder: w1\n", ""},
		{[]string{"mutex", "list"}, 0, "NAME   HOLDER   PHASE    TTL    LOCKED   EXPIRES\nm      w1       Locked   5m0s   ", ""},
		{[]string{"mutex", "list", "-o", "name"}, 0, "m\n", ""},
		{[]string{"mutex", "list", "-A", "-o", "name"}, 0, "unit/m\n", ""},
		{[]string{"mutex", "unlock", "m", "--holder", "w2"}, 1, "", `(it is held by "w1")`},
		{[]string{"mutex", "unlock", "m", "--holder", "w1"}, 0, "", `unlocked mutex unit/m (holder "w1")`},
		{[]string{"mutex", "unlock", "m", "--force"}, 0, "", "was not locked; nothing changed"},
		{[]string{"mutex", "get", "leader", "-n", "other"}, 1, "", "is not a konlease mutex"},
		{[]string{"mutex", "delete", "leader", "--force", "-n", "other"}, 1, "", "is not a konlease mutex"},
		{[]string{"mutex", "lock", "leader", "--timeout", "0", "-n", "other"}, 1, "", "is not a konlease mutex"},
		{[]string{"mutex", "get", "missing"}, 1, "", "not found"},
		{[]string{"mutex", "delete", "m"}, 0, "", "deleted mutex unit/m"},
		{[]string{"mutex", "list"}, 0, "", "No mutexes found in namespace unit."},
	}
	for _, s := range steps {
		r := k(s.args...)
		if r.code != s.code || !strings.Contains(r.stdout, s.stdout) || !strings.Contains(r.stderr, s.stderr) {
			t.Fatalf("koncli %s:\n got code %d stdout %q stderr %q\nwant code %d stdout ~%q stderr ~%q",
				strings.Join(s.args, " "), r.code, r.stdout, r.stderr, s.code, s.stdout, s.stderr)
		}
	}
}

func TestListJSONShape(t *testing.T) {
	cs := fake.NewClientset()
	kc := kubeconfig(t, "unit")
	if r := koncli(t, cs, "mutex", "create", "a", "--kubeconfig", kc); r.code != 0 {
		t.Fatalf("create: %+v", r)
	}
	r := koncli(t, cs, "mutex", "list", "-o", "json", "--kubeconfig", kc)
	var got struct {
		APIVersion string           `json:"apiVersion"`
		Kind       string           `json:"kind"`
		Items      []map[string]any `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, r.stdout)
	}
	want := map[string]any{
		"apiVersion": "konlease.io/v1alpha1",
		"kind":       "Mutex",
		"metadata":   map[string]any{"name": "a", "namespace": "unit"},
		"spec":       map[string]any{},
		"status":     map[string]any{"phase": "Unlocked"},
	}
	if got.APIVersion != "v1" || got.Kind != "List" || len(got.Items) != 1 || !reflect.DeepEqual(got.Items[0], want) {
		t.Fatalf("list -o json = %s, want a List of exactly %v", r.stdout, want)
	}
	// No mutexes: still a List with an empty items, for jq.
	r = koncli(t, fake.NewClientset(), "mutex", "list", "-o", "json", "--kubeconfig", kc)
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Items == nil || len(got.Items) != 0 {
		t.Errorf("empty list -o json = %q", r.stdout)
	}
}
