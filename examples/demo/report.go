package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// report draws the timeline, lists the acquisitions and checks what the
// demo is about. It returns false if a check failed.
func (d *demo) report(out io.Writer, sections []*sectionRecord) bool {
	slices.SortFunc(sections, func(a, b *sectionRecord) int { return a.enter.Compare(b.enter) })
	runs := slices.Clone(d.runs)
	end := d.t0
	for _, r := range runs {
		if r.end.After(end) {
			end = r.end
		}
	}
	d.timeline(out, sections, runs, end)
	fmt.Fprintln(out)
	d.acquisitions(out, sections)
	fmt.Fprintln(out)
	return d.check(out, sections, runs)
}

// timeline draws one row per worker over a common time axis, and a row for
// the mutex itself.
func (d *demo) timeline(out io.Writer, sections []*sectionRecord, runs []workerRun, end time.Time) {
	total := end.Sub(d.t0)
	step := 50 * time.Millisecond
	for _, s := range []time.Duration{100, 200, 250, 500, 1000, 2000, 5000} {
		if total/step <= 64 {
			break
		}
		step = s * time.Millisecond
	}
	cells := int(total/step) + 1
	at := func(i int) time.Time { return d.t0.Add(time.Duration(i)*step + step/2) } // a cell's midpoint
	cellOf := func(t time.Time) int { return min(int(t.Sub(d.t0)/step), cells-1) }
	const label = "%-10s"

	fmt.Fprintf(out, "Timeline (one column = %s):\n\n", step)
	var axis, ticks strings.Builder
	fmt.Fprintf(&axis, label, "")
	fmt.Fprintf(&ticks, label, "")
	for i := 0; i < cells; i += 10 {
		fmt.Fprintf(&axis, "%-10s", fmt.Sprintf("%gs", (time.Duration(i)*step).Seconds()))
		tick := "┼"
		if i == 0 {
			tick = "├"
		}
		ticks.WriteString(tick + strings.Repeat("─", min(9, cells-i-1)))
	}
	fmt.Fprintln(out, strings.TrimRight(axis.String(), " "))
	fmt.Fprintln(out, ticks.String())

	// Each column belongs to what filled most of it: a section (its
	// holder), a dead holder's lock waiting out its TTL, or nothing. So a
	// handover shows as one column changing hands, never as two holders.
	type span struct {
		from, to time.Time
		worker   int
		dead     bool
	}
	var spans []span
	for j, s := range sections {
		spans = append(spans, span{s.enter, s.leave, workerNumber(s.holder), false})
		if s.crashed && j+1 < len(sections) {
			spans = append(spans, span{s.leave, sections[j+1].enter, workerNumber(s.holder), true})
		}
	}
	owner := make([]*span, cells)
	for i := range owner {
		from := d.t0.Add(time.Duration(i) * step)
		var best time.Duration
		for k := range spans {
			sp := &spans[k]
			if o := minTime(sp.to, from.Add(step)).Sub(maxTime(sp.from, from)); o > best {
				best, owner[i] = o, sp
			}
		}
	}

	row := make([]rune, cells)
	for i, o := range owner {
		switch {
		case o == nil:
			row[i] = ' '
		case o.dead:
			row[i] = '·'
		default:
			row[i] = rune('0' + o.worker%10)
		}
	}
	fmt.Fprintf(out, label+"%s\n", "holder", strings.TrimRight(string(row), " "))

	for w := 1; w <= d.cfg.workers; w++ {
		for i := range row {
			row[i] = ' '
			if o := owner[i]; o != nil && o.worker == w && !o.dead {
				row[i] = '█'
				continue
			}
			m := at(i)
			for _, r := range runs {
				if r.worker == w && !m.Before(r.start) && m.Before(r.end) {
					row[i] = '░'
				}
			}
		}
		for _, s := range sections {
			if workerNumber(s.holder) == w && s.crashed {
				row[cellOf(s.leave)] = '✗'
			}
		}
		fmt.Fprintf(out, label+"%s\n", fmt.Sprintf("worker-%d", w), strings.TrimRight(string(row), " "))
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "█ holds the mutex, its command running   ░ waiting (koncli mutex run started)")
	if d.cfg.killNth > 0 {
		fmt.Fprintln(out, "✗ killed while holding it                · locked by the dead holder until its TTL runs out")
	}
}

// acquisitions lists every critical section with its fencing token.
func (d *demo) acquisitions(out io.Writer, sections []*sectionRecord) {
	fmt.Fprintln(out, "Acquisitions, in order:")
	fmt.Fprintf(out, "  %5s  %-9s  %8s  %8s  %6s\n", "token", "holder", "locked", "unlocked", "held")
	for j, s := range sections {
		note := ""
		switch {
		case s.overlapWith != "":
			note = "  OVERLAP with " + s.overlapWith
		case s.crashed:
			note = "  killed holding it: never unlocked"
		case j > 0 && sections[j-1].crashed:
			note = fmt.Sprintf("  took over %.1fs after the kill (TTL %s)", s.enter.Sub(sections[j-1].leave).Seconds(), d.cfg.ttl)
		}
		released := "-"
		if s.left && !s.crashed {
			released = fmt.Sprintf("%.2fs", s.leave.Sub(d.t0).Seconds())
		}
		held := "-"
		if s.left {
			held = fmt.Sprintf("%.2fs", s.leave.Sub(s.enter).Seconds())
		}
		fmt.Fprintf(out, "  %5d  %-9s  %7.2fs  %8s  %6s%s\n", s.token, s.holder, s.enter.Sub(d.t0).Seconds(), released, held, note)
	}
}

// check verifies mutual exclusion, the fencing tokens and the exit codes,
// and prints one line per check.
func (d *demo) check(out io.Writer, sections []*sectionRecord, runs []workerRun) bool {
	ok := true
	result := func(pass bool, format string, args ...any) {
		mark := "✓"
		if !pass {
			mark, ok = "✗ FAILED:", false
		}
		fmt.Fprintf(out, "%s %s\n", mark, fmt.Sprintf(format, args...))
	}

	want := d.cfg.workers * d.cfg.rounds
	if d.cfg.killNth > 0 {
		want -= d.cfg.rounds - 1 // the killed worker runs no more rounds
	}
	result(len(sections) == want, "%d critical sections ran (want %d)", len(sections), want)

	overlaps := 0
	for j, s := range sections {
		if s.overlapWith != "" || !s.left || (j > 0 && s.enter.Before(sections[j-1].leave)) {
			overlaps++
		}
	}
	result(overlaps == 0, "no two critical sections overlapped: each entered only after the previous one had left (%d overlaps)", overlaps)

	tokens := make([]string, len(sections))
	rising := true
	for j, s := range sections {
		tokens[j] = fmt.Sprint(s.token)
		if j > 0 && s.token != sections[j-1].token+1 {
			rising = false
		}
	}
	result(rising, "fencing tokens rose by one with every acquisition: %s", strings.Join(tokens, " "))

	var bad []string
	killed := 0
	for _, r := range runs {
		switch {
		case r.outcome == "killed":
			killed++
		case r.outcome != "exit 0":
			bad = append(bad, fmt.Sprintf("worker-%d: %s: %s", r.worker, r.outcome, strings.TrimSpace(r.output)))
		}
	}
	wantKilled := 0
	if d.cfg.killNth > 0 {
		wantKilled = 1
	}
	result(len(bad) == 0 && killed == wantKilled, "every koncli mutex run exited 0 with its command, except the %d killed on purpose%s",
		wantKilled, strings.Join(append([]string{""}, bad...), "\n    "))

	for j, s := range sections {
		if s.crashed {
			if j+1 < len(sections) {
				next := sections[j+1]
				result(true, "%s was killed holding the lock; %s took over %.1fs later, when the TTL (%s) from its last renewal ran out",
					s.holder, next.holder, next.enter.Sub(s.leave).Seconds(), d.cfg.ttl)
			}
		}
	}
	return ok
}

// workerNumber returns N of "worker-N".
func workerNumber(holder string) int {
	var n int
	_, _ = fmt.Sscanf(holder, "worker-%d", &n)
	return n
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
