// Package manifests reads the example manifests under examples/ for the e2e
// tests, creates them on a cluster as kubectl would, and states in one
// place what the examples' comments promise, so that the tests that send
// them to the API server (e2e) and those that run them on a node (e2e/node)
// expect the same.
package manifests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// SkipOutcome is what a run of an example CronJob does when another run
// holds its mutex, as examples/cronjob/cronjob.yaml says: the koncli mutex
// run form makes one attempt (--timeout 0) and, with --if-busy=skip, exits
// 0 saying on stderr that it skipped, so its Job completes; the script form
// prints that it skips and exits 0. Each form has a mutex of its own (their
// TTLs differ).
type SkipOutcome struct {
	// Mutex is the mutex the CronJob's runs lock.
	Mutex    string
	ExitCode int
	// Stdout and Stderr are printed by the run that skips, if anything is.
	Stdout, Stderr string
}

// CronJobSkips maps each example CronJob to its SkipOutcome. When the
// examples change what a skipped run does, this is the one place to change.
var CronJobSkips = map[string]SkipOutcome{
	"daily-job":             {Mutex: "daily-job", ExitCode: 0, Stderr: `skipped: not acquired in a single attempt (--timeout 0): mutex `},
	"daily-job-lock-unlock": {Mutex: "daily-job-script", ExitCode: 0, Stdout: "Job already running, skipping"},
}

// Read parses every document of a YAML file into an object, strictly (a key
// given twice is an error). The examples name no namespace: the user
// chooses it (kubectl -n, kustomize), so one that does is an error.
func Read(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var objs []*unstructured.Unstructured
	docs := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(j); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if obj.GetNamespace() != "" {
			return nil, fmt.Errorf("%s: %s %s names namespace %q; examples leave it to the user", path, obj.GetKind(), obj.GetName(), obj.GetNamespace())
		}
		objs = append(objs, obj)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%s: no objects", path)
	}
	return objs, nil
}

// Workloads returns the objects of every manifest under root/examples but
// examples/rbac.
func Workloads(root string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	err := filepath.WalkDir(filepath.Join(root, "examples"), func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && d.Name() == "rbac":
			return filepath.SkipDir
		case !d.IsDir() && strings.HasSuffix(path, ".yaml"):
			o, err := Read(path)
			objs = append(objs, o...)
			return err
		}
		return nil
	})
	return objs, err
}

// RBAC returns the objects of examples/rbac, in the order of its
// kustomization.
func RBAC(root string) ([]*unstructured.Unstructured, error) {
	dir := filepath.Join(root, "examples", "rbac")
	var k struct {
		Resources []string `json:"resources"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "kustomization.yaml"), err)
	}
	var objs []*unstructured.Unstructured
	for _, f := range k.Resources {
		o, err := Read(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		objs = append(objs, o...)
	}
	return objs, nil
}

// PodSpecPath is where a Job's or CronJob's pod spec is.
func PodSpecPath(obj *unstructured.Unstructured) []string {
	if obj.GetKind() == "CronJob" {
		return []string{"spec", "jobTemplate", "spec", "template", "spec"}
	}
	return []string{"spec", "template", "spec"}
}

// Applier creates unstructured objects of any kind, finding their resource
// through discovery as kubectl does.
type Applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// NewApplier returns an Applier acting with cfg.
func NewApplier(cfg *rest.Config) (*Applier, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapperWithContext(memory.NewMemCacheClientWithContext(dc))}, nil
}

// Create creates obj in namespace, or only validates it when dryRun is set,
// with strict field validation (unknown and duplicate fields are refused).
func (a *Applier) Create(ctx context.Context, namespace string, obj *unstructured.Unstructured, dryRun bool) (*unstructured.Unstructured, error) {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMappingWithContext(ctx, gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", gvk, obj.GetName(), err)
	}
	opts := metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	created, err := a.dyn.Resource(m.Resource).Namespace(namespace).Create(ctx, obj, opts)
	if err != nil {
		return nil, fmt.Errorf("create %s %s (dry run %v): %w", gvk.Kind, obj.GetName(), dryRun, err)
	}
	return created, nil
}
