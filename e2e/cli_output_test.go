//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/konlease/konlease/lock"
)

// field is the value at path in a decoded JSON or YAML object; nil if any
// step is missing.
func field(obj map[string]any, path ...string) any {
	var v any = obj
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// labelLease adds a label to a Lease, as `kubectl label lease` would.
func labelLease(t *testing.T, ns, name, key, value string) {
	t.Helper()
	l := getLease(t, ns, name)
	l.Labels[key] = value
	if _, err := admin(t).CoordinationV1().Leases(ns).Update(t.Context(), l, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("label lease %s/%s: %v", ns, name, err)
	}
}

// TestCLIListInvalid: a labelled Lease whose annotations are garbled is
// listed as Invalid, with get's reason in -o wide and -o json, rather than
// silently left out; it stays untouched.
func TestCLIListInvalid(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	// What a hand edit or another tool may leave: a TTL that is no duration.
	garbledMutex(t, ns, "broken", map[string]string{lock.AnnotationUnlock: lock.UnlockExplicit, lock.AnnotationTTL: "ten minutes"})
	expectCLI(t, c.run("mutex", "create", "fine"), 0, "", "")
	before := leaseVersions(t, ns)

	r := c.run("mutex", "list")
	if r.code != 0 || !regexp.MustCompile(`(?m)^broken +<none> +Invalid +<none> +<none> +<none>$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^fine +<none> +Unlocked `).MatchString(r.stdout) {
		t.Errorf("list: %s\nwant broken as Invalid and fine as Unlocked", r)
	}
	reason := `annotation konlease.io/ttl: invalid TTL "ten minutes": contains white space`
	expectCLI(t, c.run("mutex", "list", "-o", "wide"), 0, reason, "")
	expectCLIError(t, c.run("mutex", "get", "broken"), 1, reason)

	r = c.run("mutex", "list", "-o", "json")
	var list struct{ Items []map[string]any }
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Items) != 2 ||
		field(list.Items[0], "status", "phase") != "Invalid" || !strings.HasPrefix(field(list.Items[0], "status", "reason").(string), reason) {
		t.Errorf("list -o json: %v\n%s", err, r)
	}
	// The table never hides it, and the tooling refuses to touch it.
	expectCLIError(t, c.run("mutex", "delete", "broken", "--force"), 1, "is not a konlease mutex")
	expectUnchanged(t, ns, before, "listing and refusing an invalid mutex")
}

// TestCLIOutputFormats: kubectl's output flags on list and get.
func TestCLIOutputFormats(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	createLeaderLease(t, ns, "leader")
	expectCLI(t, c.run("mutex", "lock", "held", "--holder", "w1", "--ttl", "10m"), 0, "", "")
	expectCLI(t, c.run("mutex", "create", "idle"), 0, "", "")
	expectCLI(t, c.run("mutex", "create", "payments"), 0, "", "")
	labelLease(t, ns, "payments", "team", "payments")

	for _, tc := range []struct {
		args   []string
		stdout string // exact
	}{
		{[]string{"list", "-o", "jsonpath={.items[*].metadata.name}"}, "held idle payments"},
		{[]string{"list", "-o", `jsonpath={range .items[?(@.status.phase=="Locked")]}{.status.holder}{"\n"}{end}`}, "w1\n"},
		{[]string{"list", "-o", "custom-columns=NAME:.metadata.name,HOLDER:.status.holder,TTL:.spec.ttl"},
			"NAME       HOLDER   TTL\nheld       w1       10m0s\nidle       <none>   <none>\npayments   <none>   <none>\n"},
		{[]string{"list", "-o", "custom-columns=NAME:.metadata.name", "--no-headers"}, "held\nidle\npayments\n"},
		{[]string{"list", "-l", "team=payments", "-o", "name"}, "payments\n"},
		{[]string{"list", "-l", "!team", "-o", "name"}, "held\nidle\n"},
		{[]string{"list", "-l", "team=nobody", "-o", "name"}, ""},
		{[]string{"get", "held", "-o", "jsonpath={.status.holder}"}, "w1"},
		{[]string{"get", "held", "idle", "-o", "name"}, "held\nidle\n"},
		{[]string{"get", "idle", "held", "-o", "jsonpath={.items[*].metadata.name}"}, "idle held"},
		{[]string{"get", "held", "-o", "go-template={{.status.phase}} {{.status.token}}"}, "Locked 1"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := c.run(append([]string{"mutex"}, tc.args...)...)
			if r.code != 0 || r.stdout != tc.stdout || r.stderr != "" {
				t.Errorf("got %s\nwant exit 0, stdout %q, nothing on stderr", r, tc.stdout)
			}
		})
	}

	// --no-headers on the table; get -o wide is list's wide table.
	r := c.run("mutex", "list", "--no-headers")
	if r.code != 0 || strings.Contains(r.stdout, "NAME") || !regexp.MustCompile(`(?m)^held +w1 +Locked +10m0s `).MatchString(r.stdout) {
		t.Errorf("list --no-headers: %s", r)
	}
	r = c.run("mutex", "get", "held", "-o", "wide")
	if r.code != 0 || !regexp.MustCompile(`^NAME +HOLDER +PHASE +TTL +LOCKED +EXPIRES +RENEWED +TOKEN +FAIR +WAITERS +REASON\nheld +w1 +Locked +10m0s +\S+ +in \S+ +\S+ +1 +false +0 +<none>\n$`).MatchString(r.stdout) {
		t.Errorf("get -o wide: %s", r)
	}

	// Several NAMEs: the ones found are printed, the missing one reported
	// once, "mutex" said once.
	r = c.run("mutex", "get", "held", "missing", "-o", "name")
	if r.code != 1 || r.stdout != "held\n" || r.stderr != "error: mutex "+ns+"/missing not found\n" {
		t.Errorf("get held missing: %s\nwant held printed, then exactly the not-found error", r)
	}

	// Bad output flags are usage errors, refused before anything is sent.
	bad, _ := unreachableKubeconfig(t)
	for _, args := range [][]string{
		{"mutex", "list", "-o", "jsonpath={.items"},
		{"mutex", "list", "-o", "custom-columns="},
		{"mutex", "list", "-l", "team in (a"},
		{"mutex", "get", "held", "-o", "table"},
	} {
		for _, k := range []*cli{c, newCLI(t, bad)} {
			r := k.run(args...)
			expectCLIError(t, r, 2, "invalid -")
			if strings.Contains(r.stderr, "of ,") {
				t.Errorf("%s: empty format in the list", r)
			}
		}
	}
}

// TestCLIDeleteConventions: several NAMEs, --ignore-not-found, and a forced
// delete that names whom it evicted.
func TestCLIDeleteConventions(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("mutex", "create", "a"), 0, "", "")
	expectCLI(t, c.run("mutex", "lock", "b", "--holder", "w1"), 0, "", "")
	expectCLI(t, c.run("mutex", "create", "c"), 0, "", "")

	// One refusal does not stop the others.
	r := c.run("mutex", "delete", "a", "b", "c")
	expectCLIError(t, r, 1, "refusing to delete a locked mutex", `"w1"`)
	expectCLI(t, r, 1, "", "deleted mutex "+ns+"/a\n")
	expectCLI(t, r, 1, "", "deleted mutex "+ns+"/c\n")
	if got := leaseVersions(t, ns); len(got) != 1 || got["b"] == "" {
		t.Errorf("Leases left: %v, want only the locked b", got)
	}

	st := mutexStatus(t, ns, "b")
	expectCLI(t, c.run("mutex", "delete", "b", "--force"), 0, "",
		`deleted mutex `+ns+`/b; evicted "w1" (token 1, locked at `+st.LockedAt.UTC().Format("2006-01-02T15:04:05Z")+`)`)

	expectCLIError(t, c.run("mutex", "delete", "a"), 1, "mutex "+ns+"/a not found")
	r = c.run("mutex", "delete", "a", "b", "--ignore-not-found")
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Errorf("delete --ignore-not-found of missing mutexes: %s\nwant silent success, as kubectl", r)
	}
}

// TestCLICreateUpdateKeepsTTL: create --update without --ttl would drop a
// TTL by omission: it is refused and changes nothing; --ttl none removes it
// on purpose.
func TestCLICreateUpdateKeepsTTL(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("mutex", "create", "m", "--ttl", "30s"), 0, "", "")
	before := leaseVersions(t, ns)
	expectCLIError(t, c.run("mutex", "create", "m", "--update"), 2, "--update changes the TTL to the one --ttl gives", "--ttl none")
	expectUnchanged(t, ns, before, "create --update without --ttl")
	if st := mutexStatus(t, ns, "m"); st.TTL.String() != "30s" {
		t.Errorf("TTL after a refused --update: %s, want 30s", st.TTL)
	}
	expectCLI(t, c.run("mutex", "create", "m", "--ttl", "none", "--update"), 0, "", "(no TTL, Unlocked)")
	if st := mutexStatus(t, ns, "m"); st.TTL != 0 {
		t.Errorf("TTL after --ttl none --update: %s, want none", st.TTL)
	}
}

// TestCLIFlagCompletion: -n completes with the cluster's namespaces,
// --context with the kubeconfig's, -o with the formats; and
// kubectl_complete-mutex answers kubectl's plugin completion protocol, so
// that `kubectl mutex <TAB>` completes.
func TestCLIFlagCompletion(t *testing.T) {
	t.Parallel()
	nsA, nsB := env.Namespace(t), env.Namespace(t)
	kc := twoContextKubeconfig(t, nsA, nsB)
	c := newCLI(t, kc)
	expectCLI(t, c.run("mutex", "create", "alpha"), 0, "", "")
	expectCLI(t, c.run("mutex", "create", "beta", "-n", nsB), 0, "", "")

	r := c.run("__complete", "mutex", "list", "-n", "konlease-e2e-")
	if r.code != 0 || !strings.Contains(r.stdout, nsA+"\n") || !strings.Contains(r.stdout, nsB+"\n") || strings.Contains(r.stdout, "kube-system") || !strings.HasSuffix(r.stdout, ":4\n") {
		t.Errorf("completing -n: %s\nwant the test namespaces, directive 4", r)
	}
	expectCLI(t, c.run("__complete", "mutex", "get", "--context", "ctx-"), 0, "ctx-a\nctx-b\n:4\n", "")
	expectCLI(t, c.run("__complete", "mutex", "get", "-o", "custom"), 0, "custom-columns\ncustom-columns-file\n:4\n", "")
	// Mutex names follow -n and --context; get and delete take several.
	expectCLI(t, c.run("__complete", "mutex", "get", "--context", "ctx-b", ""), 0, "beta\tUnlocked\n:4\n", "")
	expectCLI(t, c.run("__complete", "mutex", "delete", "-n", nsB, "beta", ""), 0, ":4\n", "")

	// kubectl runs kubectl_complete-mutex with the plugin's arguments, the
	// last being the word to complete.
	dir := t.TempDir()
	link := filepath.Join(dir, "kubectl_complete-mutex")
	if err := os.Symlink(koncliBinary(t), link); err != nil {
		t.Fatal(err)
	}
	p := newCLI(t, "")
	p.bin = link
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--kubeconfig", kc, "lock", ""}, "alpha\tUnlocked\n:4\n"},
		{[]string{"--kubeconfig", kc, "get", "-n", nsB, "b"}, "beta\tUnlocked\n:4\n"},
		{[]string{"--kubeconfig", kc, "--context", "ctx-"}, "ctx-a\nctx-b\n:4\n"},
		{[]string{"un"}, "unlock\tRelease a mutex"},
	} {
		r := p.run(tc.args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, tc.want) {
			t.Errorf("kubectl_complete-mutex %q: %s\nwant stdout starting %q", tc.args, r, tc.want)
		}
	}
}
