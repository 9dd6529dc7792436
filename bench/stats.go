package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Figure is one measured quantity: either latency samples or a plain value.
type Figure struct {
	Key   string `json:"key"`
	Title string `json:"title"`
	// Unit is "duration" for latency samples (reported in ms), or the unit
	// of Value ("req", "req/min", "acq/s", "bytes", "409/acq").
	Unit  string  `json:"unit"`
	N     int     `json:"n"`
	P50   float64 `json:"p50,omitempty"`
	P90   float64 `json:"p90,omitempty"`
	P99   float64 `json:"p99,omitempty"`
	Mean  float64 `json:"mean,omitempty"`
	Max   float64 `json:"max,omitempty"`
	Value float64 `json:"value,omitempty"`
	// Ratios of this figure (p50, or Value) to the named figures.
	Ratios map[string]float64 `json:"ratios,omitempty"`
	Note   string             `json:"note,omitempty"`
}

// Results collects figures in the order they were measured.
type Results struct {
	Machine string    `json:"machine"`
	Command string    `json:"command"`
	Started time.Time `json:"started"`
	Quick   bool      `json:"quick"`
	Figures []*Figure `json:"figures"`
	byKey   map[string]*Figure
}

func newResults(machine, command string, quick bool) *Results {
	return &Results{Machine: machine, Command: command, Started: time.Now().UTC(), Quick: quick, byKey: map[string]*Figure{}}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// latency records duration samples under key.
func (r *Results) latency(key, title string, samples []time.Duration, note string) *Figure {
	f := &Figure{Key: key, Title: title, Unit: "duration", N: len(samples), Note: note}
	if len(samples) > 0 {
		s := slices.Clone(samples)
		slices.Sort(s)
		pct := func(p float64) float64 { return ms(s[int(math.Round(p*float64(len(s)-1)))]) }
		f.P50, f.P90, f.P99, f.Max = pct(0.5), pct(0.9), pct(0.99), ms(s[len(s)-1])
		var sum time.Duration
		for _, d := range s {
			sum += d
		}
		f.Mean = ms(sum / time.Duration(len(s)))
	}
	r.add(f)
	return f
}

// value records a single number under key.
func (r *Results) value(key, title, unit string, v float64, note string) *Figure {
	f := &Figure{Key: key, Title: title, Unit: unit, N: 1, Value: v, Note: note}
	r.add(f)
	return f
}

func (r *Results) add(f *Figure) {
	r.Figures = append(r.Figures, f)
	r.byKey[f.Key] = f
	fmt.Fprintf(progress, "  %-44s %s\n", f.Title, f.short())
}

// ratio sets f's ratio to the figure with key ref (p50 against p50, value
// against value), or to a sum of references' p50s when refs has several.
func (r *Results) ratio(key, label string, refs ...string) {
	f := r.byKey[key]
	if f == nil {
		return
	}
	var den float64
	for _, ref := range refs {
		g := r.byKey[ref]
		if g == nil {
			return
		}
		den += g.center()
	}
	if den == 0 {
		return
	}
	if f.Ratios == nil {
		f.Ratios = map[string]float64{}
	}
	f.Ratios[label] = f.center() / den
}

func (f *Figure) center() float64 {
	if f.Unit == "duration" {
		return f.P50
	}
	return f.Value
}

func (f *Figure) short() string {
	if f.Unit == "duration" {
		return fmt.Sprintf("p50 %s  p90 %s  p99 %s  (n=%d)", fmtMs(f.P50), fmtMs(f.P90), fmtMs(f.P99), f.N)
	}
	return fmt.Sprintf("%s %s", fmtNum(f.Value), f.Unit)
}

func fmtMs(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

func fmtNum(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// table writes the human-readable table.
func (r *Results) table(w io.Writer, markdown bool) {
	var labels []string
	for _, f := range r.Figures {
		for l := range f.Ratios {
			if !slices.Contains(labels, l) {
				labels = append(labels, l)
			}
		}
	}
	slices.Sort(labels)
	head := append([]string{"figure", "p50 / value", "p90", "p99", "n"}, labels...)
	rows := [][]string{head}
	for _, f := range r.Figures {
		row := []string{f.Title}
		if f.Unit == "duration" {
			row = append(row, fmtMs(f.P50), fmtMs(f.P90), fmtMs(f.P99), fmt.Sprint(f.N))
		} else {
			row = append(row, fmtNum(f.Value)+" "+f.Unit, "", "", "")
		}
		for _, l := range labels {
			if v, ok := f.Ratios[l]; ok {
				row = append(row, fmt.Sprintf("%.2f×", v))
			} else {
				row = append(row, "")
			}
		}
		rows = append(rows, row)
	}
	if markdown {
		for i, row := range rows {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
			if i == 0 {
				fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(row)))
			}
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range rows {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
}

func (r *Results) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
