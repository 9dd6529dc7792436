package lock

import (
	"testing"

	"k8s.io/client-go/kubernetes/fake"
)

// fakeClient is a Client on client-go's fake clientset: enough for pure
// logic (validation, decoding), never evidence that locking works, since
// the fake does not enforce resourceVersion preconditions.
func fakeClient(t *testing.T) *Client {
	t.Helper()
	c, err := NewClient(fake.NewClientset().CoordinationV1())
	if err != nil {
		t.Fatal(err)
	}
	return c
}
