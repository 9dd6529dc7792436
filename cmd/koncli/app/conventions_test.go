package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"
)

// TestCommandsOnFakeClientsetConventions walks through the kubectl-like
// conventions that are pure logic: several NAMEs, --ignore-not-found,
// --update needing --ttl, whom a forced delete evicted.
func TestCommandsOnFakeClientsetConventions(t *testing.T) {
	cs := fake.NewClientset()
	kc := kubeconfig(t, "unit")
	steps := []struct {
		args   []string
		code   int
		stdout string // exact when wantExact
		stderr string // substring
		exact  bool
	}{
		{[]string{"mutex", "create", "a", "--ttl", "5m"}, 0, "", "mutex unit/a created (TTL 5m0s, Unlocked)", false},
		{[]string{"mutex", "create", "b"}, 0, "", "", false},
		// --update without --ttl would drop the TTL: refused.
		{[]string{"mutex", "create", "a", "--update"}, 2, "", "pass --ttl DURATION (--ttl none removes the TTL), or --fair", false},
		{[]string{"mutex", "get", "a", "-o", "jsonpath={.spec.ttl}"}, 0, "5m0s", "", true},
		// --ttl none removes it on purpose.
		{[]string{"mutex", "create", "a", "--ttl", "none"}, 1, "", "exists with TTL 5m0s, not none", false},
		{[]string{"mutex", "create", "a", "--ttl", "none", "--update"}, 0, "", "(no TTL, Unlocked)", false},
		{[]string{"mutex", "get", "a", "-o", "jsonpath={.spec}"}, 0, "{}", "", true},
		// Several NAMEs: a List; the missing one is reported after.
		{[]string{"mutex", "get", "a", "b", "-o", "name"}, 0, "a\nb\n", "", true},
		{[]string{"mutex", "get", "a", "missing", "b", "-o", "jsonpath={.items[*].metadata.name}"}, 1, "a b", "error: mutex unit/missing not found\n", true},
		// One failure does not stop the others.
		{[]string{"mutex", "delete", "a", "missing", "b"}, 1, "", "error: mutex unit/missing not found\n", false},
		{[]string{"mutex", "get", "a"}, 1, "", "mutex unit/a not found", false},
		{[]string{"mutex", "delete", "a", "b"}, 1, "", "error: mutex unit/a not found; mutex unit/b not found\n", false},
		// The fake's watch ignores field selectors: a holder must be alone
		// in its namespace, or it takes other Leases' events for its own.
		{[]string{"mutex", "lock", "solo", "-n", "solo", "--holder", "w1", "--timeout", "0"}, 0, "", "", false},
		{[]string{"mutex", "delete", "solo", "-n", "solo"}, 1, "", "refusing to delete a locked mutex", false},
		{[]string{"mutex", "delete", "solo", "-n", "solo", "--force"}, 0, "", `deleted mutex solo/solo; evicted "w1" (token 1, locked at `, false},
		{[]string{"mutex", "delete", "a", "b", "--ignore-not-found"}, 0, "", "", true},
	}
	for _, s := range steps {
		r := koncli(t, cs, append(s.args, "--kubeconfig", kc)...)
		okOut := strings.Contains(r.stdout, s.stdout)
		if s.exact {
			okOut = r.stdout == s.stdout
		}
		if r.code != s.code || !okOut || !strings.Contains(r.stderr, s.stderr) || (s.exact && s.code == 0 && r.stderr != s.stderr) {
			t.Fatalf("koncli %s:\n got code %d stdout %q stderr %q\nwant code %d stdout %q stderr ~%q",
				strings.Join(s.args, " "), r.code, r.stdout, r.stderr, s.code, s.stdout, s.stderr)
		}
	}
}

// TestNoDoubledWords: the messages koncli prints say each thing once.
func TestNoDoubledWords(t *testing.T) {
	kc := kubeconfig(t, "unit")
	for _, tc := range []struct {
		args  []string
		want  string
		twice string
	}{
		{[]string{"mutex", "get", "x"}, "error: mutex unit/x not found\n", "mutex"},
		{[]string{"mutex", "create", "x", "--ttl", "0"}, `error: invalid --ttl "0": is zero; a TTL must be at least 1s`, "invalid"},
	} {
		var cs *fake.Clientset
		if !strings.Contains(tc.want, "invalid") {
			cs = fake.NewClientset()
		}
		r := koncli(t, cs, append(tc.args, "--kubeconfig", kc)...)
		first, _, _ := strings.Cut(r.stderr, "\n")
		if !strings.Contains(r.stderr, tc.want) || strings.Count(first, tc.twice) != 1 {
			t.Errorf("koncli %s: stderr %q, want %q saying %q once", strings.Join(tc.args, " "), r.stderr, tc.want, tc.twice)
		}
	}
}

// TestPluginCompletion: invoked as kubectl_complete-mutex, koncli answers
// kubectl's plugin completion protocol: the plugin's arguments (the last
// one being the word to complete) in, candidates and a ":directive" line
// out.
func TestPluginCompletion(t *testing.T) {
	if !IsPluginCompletion("/usr/local/bin/kubectl_complete-mutex") || IsPluginCompletion("kubectl-mutex") || IsPlugin("kubectl_complete-mutex") {
		t.Fatal("IsPluginCompletion/IsPlugin confuse the two names")
	}
	for _, tc := range []struct {
		args []string
		want []string // lines, before the directive
	}{
		{[]string{""}, []string{"create\t", "delete\t", "get\t", "help\t", "list\t", "lock\t", "run\t", "unlock\t", "version\t", "wait\t"}},
		{[]string{"li"}, []string{"list\tList mutexes"}},
		{[]string{"list", "-o", "js"}, []string{"json", "jsonpath", "jsonpath-as-json", "jsonpath-file"}},
	} {
		r := invoke(t, nil, "/usr/local/bin/"+PluginCompletionName, tc.args...)
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if r.code != 0 || len(lines) < 1 || !strings.HasPrefix(lines[len(lines)-1], ":") {
			t.Fatalf("kubectl_complete-mutex %q: code %d stdout %q", tc.args, r.code, r.stdout)
		}
		got := lines[:len(lines)-1]
		if len(got) != len(tc.want) {
			t.Errorf("kubectl_complete-mutex %q = %q, want %q", tc.args, got, tc.want)
			continue
		}
		for i := range got {
			if !strings.HasPrefix(got[i], tc.want[i]) {
				t.Errorf("kubectl_complete-mutex %q line %d = %q, want %q...", tc.args, i, got[i], tc.want[i])
			}
		}
	}
}

// TestContextCompletion: --context, --cluster and --user complete from the
// kubeconfig, as kubectl's do.
func TestContextCompletion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	data := `apiVersion: v1
kind: Config
clusters:
- {name: prod, cluster: {server: "https://unused.invalid:6443"}}
- {name: staging, cluster: {server: "https://unused.invalid:6443"}}
users:
- {name: alice, user: {token: t}}
contexts:
- {name: prod-admin, context: {cluster: prod, user: alice}}
- {name: staging-admin, context: {cluster: staging, user: alice}}
- {name: prod-ro, context: {cluster: prod, user: alice}}
current-context: prod-admin
`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mutex", "list", "--context", ""}, "prod-admin\nprod-ro\nstaging-admin\n:4\n"},
		{[]string{"mutex", "list", "--context", "prod"}, "prod-admin\nprod-ro\n:4\n"},
		{[]string{"mutex", "get", "x", "--cluster", "s"}, "staging\n:4\n"},
		{[]string{"mutex", "get", "x", "--user", ""}, "alice\n:4\n"},
	} {
		r := koncli(t, nil, append([]string{"__complete", "--kubeconfig", path}, tc.args...)...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, tc.want) {
			t.Errorf("completing %q: code %d stdout %q, want %q", tc.args, r.code, r.stdout, tc.want)
		}
	}
}
