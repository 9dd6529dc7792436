// Package lockmetrics exports what package lock measures as Prometheus
// metrics. Register a Recorder and give it to the lock client:
//
//	rec := lockmetrics.New()
//	prometheus.MustRegister(rec)
//	c, err := lock.NewForConfig(cfg, lock.WithMetrics(rec))
//
// # Metrics
//
// All are labelled namespace and name (the mutex's or semaphore's):
//
//	konlease_acquisitions_total{result}        Lock/TryLock/Acquire/TryAcquire calls, by result: acquired, busy, error
//	konlease_acquire_duration_seconds{result}  how long those calls took (for a blocking call: the wait)
//	konlease_holds_ended_total{end}            holds that ended, by how: released, ttl, taken-over, force-unlocked, deleted, invalid, abandoned
//	konlease_hold_duration_seconds             how long holds lasted
//	konlease_renewals_total{result}            renewal writes: ok, failed
//	konlease_conflicts_total                   writes refused with 409 Conflict
//	konlease_holds                             holds of this process now
//	konlease_waits                             calls of this process waiting now
//
// # Cardinality
//
// One series per label set and mutex that this process has used: the
// number of distinct mutexes a program locks bounds it. A program that
// makes up mutex names without bound (one per request ID, say) should use
// WithoutNames, which drops the name label (namespace stays).
package lockmetrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/konlease/konlease/lock"
)

// Recorder implements lock.Metrics on Prometheus collectors. It is a
// prometheus.Collector: register it once.
type Recorder struct {
	names bool

	acquisitions  *prometheus.CounterVec
	acquireTime   *prometheus.HistogramVec
	holdsEnded    *prometheus.CounterVec
	holdTime      *prometheus.HistogramVec
	renewals      *prometheus.CounterVec
	conflicts     *prometheus.CounterVec
	holds, waits  *prometheus.GaugeVec
	collectorList []prometheus.Collector
}

// Option configures a Recorder.
type Option func(*Recorder)

// WithoutNames drops the name label: series per namespace only.
func WithoutNames() Option { return func(r *Recorder) { r.names = false } }

// New returns a Recorder.
func New(opts ...Option) *Recorder {
	r := &Recorder{names: true}
	for _, o := range opts {
		o(r)
	}
	base := []string{"namespace", "name"}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	// Buckets from 1ms (an uncontended lock) to about 1h (a long queue).
	waitBuckets := prometheus.ExponentialBuckets(0.001, 4, 12)
	holdBuckets := prometheus.ExponentialBuckets(0.01, 4, 12)
	r.acquisitions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konlease_acquisitions_total",
		Help: "Lock, TryLock, Acquire and TryAcquire calls, by result (acquired, busy, error)."}, with("result"))
	r.acquireTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "konlease_acquire_duration_seconds",
		Help: "How long acquisition calls took, by result; for a blocking call, its wait.", Buckets: waitBuckets}, with("result"))
	r.holdsEnded = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konlease_holds_ended_total",
		Help: "Holds that ended, by how: released, or lost (ttl, taken-over, force-unlocked, deleted, invalid)."}, with("end"))
	r.holdTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "konlease_hold_duration_seconds",
		Help: "How long holds lasted.", Buckets: holdBuckets}, with())
	r.renewals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konlease_renewals_total",
		Help: "Renewal writes of TTL holds, by result (ok, failed)."}, with("result"))
	r.conflicts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "konlease_conflicts_total",
		Help: "Writes refused with 409 Conflict: someone wrote the Lease first."}, with())
	r.holds = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "konlease_holds",
		Help: "Holds of this process now."}, with())
	r.waits = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "konlease_waits",
		Help: "Acquisition calls of this process waiting now."}, with())
	r.collectorList = []prometheus.Collector{r.acquisitions, r.acquireTime, r.holdsEnded, r.holdTime, r.renewals, r.conflicts, r.holds, r.waits}
	return r
}

var _ lock.Metrics = (*Recorder)(nil)

// Describe implements prometheus.Collector.
func (r *Recorder) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range r.collectorList {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (r *Recorder) Collect(ch chan<- prometheus.Metric) {
	for _, c := range r.collectorList {
		c.Collect(ch)
	}
}

func (r *Recorder) name(name string) string {
	if !r.names {
		return ""
	}
	return name
}

// Acquire implements lock.Metrics.
func (r *Recorder) Acquire(namespace, name string, result lock.AcquireResult, took time.Duration) {
	r.acquisitions.WithLabelValues(namespace, r.name(name), string(result)).Inc()
	r.acquireTime.WithLabelValues(namespace, r.name(name), string(result)).Observe(took.Seconds())
}

// HoldEnded implements lock.Metrics.
func (r *Recorder) HoldEnded(namespace, name string, end lock.HoldEnd, held time.Duration) {
	r.holdsEnded.WithLabelValues(namespace, r.name(name), string(end)).Inc()
	r.holdTime.WithLabelValues(namespace, r.name(name)).Observe(held.Seconds())
}

// Renewal implements lock.Metrics.
func (r *Recorder) Renewal(namespace, name string, ok bool) {
	result := "ok"
	if !ok {
		result = "failed"
	}
	r.renewals.WithLabelValues(namespace, r.name(name), result).Inc()
}

// Conflict implements lock.Metrics.
func (r *Recorder) Conflict(namespace, name string) {
	r.conflicts.WithLabelValues(namespace, r.name(name)).Inc()
}

// Holding implements lock.Metrics.
func (r *Recorder) Holding(namespace, name string, delta int) {
	r.holds.WithLabelValues(namespace, r.name(name)).Add(float64(delta))
}

// Waiting implements lock.Metrics.
func (r *Recorder) Waiting(namespace, name string, delta int) {
	r.waits.WithLabelValues(namespace, r.name(name)).Add(float64(delta))
}
