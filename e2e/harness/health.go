package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
)

// readyz checks once that the API server of client answers /readyz with
// 200. The error names the failing checks rather than quoting the whole
// report.
func readyz(ctx context.Context, client kubernetes.Interface) error {
	body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err == nil {
		return nil
	}
	var failed []string
	for line := range strings.Lines(string(body)) {
		if check, ok := strings.CutPrefix(strings.TrimSpace(line), "[-]"); ok {
			failed = append(failed, check)
		}
	}
	if len(failed) == 0 {
		return fmt.Errorf("readyz: %w", err)
	}
	return fmt.Errorf("readyz: %s", strings.Join(failed, "; "))
}

// etcdHealth checks that the etcd member at clientURL is healthy: it
// answers and, in a cluster, has a leader.
func etcdHealth(clientURL string) func(context.Context) error {
	httpClient := &http.Client{Timeout: 2 * time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, clientURL+"/health", nil)
		if err != nil {
			return err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var health struct {
			Health string `json:"health"`
			Reason string `json:"reason"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&health); err != nil {
			return fmt.Errorf("decode /health: %w", err)
		}
		if resp.StatusCode != http.StatusOK || health.Health != "true" {
			return fmt.Errorf("/health: %s %q %s", resp.Status, health.Health, health.Reason)
		}
		return nil
	}
}
