package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The fenced resource of a mutex is the ConfigMap fence-<mutex>, data
// token, value and writer. A write carries the writer's fencing token and is
// accepted only if that token is at least the stored one; it is applied with
// the resourceVersion it was decided on, so a concurrent write makes it
// decide again rather than overwrite.
func fenceName(mutex string) string { return "fence-" + mutex }

func createFence(ctx context.Context, cs kubernetes.Interface, ns, mutex string) error {
	_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: fenceName(mutex)},
		Data:       map[string]string{"token": "0", "value": "", "writer": ""},
	}, metav1.CreateOptions{})
	return err
}

func storedToken(cm *corev1.ConfigMap) int64 {
	t, _ := strconv.ParseInt(cm.Data["token"], 10, 64)
	return t
}

// fencedWrite writes value with token and logs the outcome: accepted (with
// the resulting resourceVersion), rejected (a larger token is stored) or
// unknown (the update's answer was lost: it may or may not have applied).
func fencedWrite(ctx context.Context, cs kubernetes.Interface, h *history, ns, mutex, holder string, token int64, value string) {
	// Each write gets 4s from when it starts (after a SIGSTOP too), within
	// koncli's --grace-period of 5s.
	ctx, cancelAll := context.WithTimeout(ctx, 4*time.Second)
	defer cancelAll()
	r := record{Kind: "write", Mutex: mutex, Holder: holder, Token: token, Value: value}
	defer func() { r.At = now(); h.add(r) }()
	cms := cs.CoreV1().ConfigMaps(ns)
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil || attempt == 20 {
			// Every update sent so far was refused with a conflict.
			r.Outcome, r.Error = "notsent", "gave up"
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		cm, err := cms.Get(rctx, fenceName(mutex), metav1.GetOptions{})
		cancel()
		if err != nil {
			continue // not written: try again
		}
		r.Stored = storedToken(cm)
		if token < r.Stored {
			r.Outcome = "rejected"
			return
		}
		cm.Data = map[string]string{"token": strconv.FormatInt(token, 10), "value": value, "writer": holder}
		rctx, cancel = context.WithTimeout(ctx, 3*time.Second)
		upd, err := cms.Update(rctx, cm, metav1.UpdateOptions{})
		cancel()
		switch {
		case err == nil:
			r.Outcome = "accepted"
			r.RV, _ = strconv.ParseInt(upd.ResourceVersion, 10, 64)
			return
		case apierrors.IsConflict(err):
			continue // decide again on the new version
		case apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsNotFound(err):
			r.Outcome, r.Error = "error", err.Error()
			return
		default:
			// Timeout, connection reset: the update may have applied.
			r.Outcome, r.Error = "unknown", fmt.Sprint(err)
			return
		}
	}
}
