package replay

import (
	"fmt"
	"io"
	"strings"
	"time"
)

const (
	defaultInterval = 2 * time.Second
	plainEvery      = 1000                   // messages between plain lines
	redrawEvery     = 100 * time.Millisecond // terminal bar refresh
	barWidth        = 24
)

// progress renders replay progress: a bar redrawn in place on a terminal,
// periodic plain lines otherwise. Totals come from the plan: the message
// count when known, else bytes (mbox: file size against bytes read).
type progress struct {
	w        io.Writer
	term     bool
	interval time.Duration
	total    int   // messages, -1 unknown
	bytes    int64 // total bytes on disk
	start    time.Time
	last     time.Time
	lastN    int
	n, ok    int
	nread    int64 // bytes read from disk
}

func newProgress(w io.Writer, term bool, interval time.Duration, plan *Plan) *progress {
	if interval <= 0 {
		interval = defaultInterval
	}
	now := time.Now()
	return &progress{w: w, term: term, interval: interval, total: plan.Messages,
		bytes: plan.Bytes, start: now, last: now}
}

// read records n more bytes consumed from disk.
func (p *progress) read(n int64) {
	p.nread += n
	if p.total < 0 {
		p.maybeRender() // mbox: show progress within a file too
	}
}

func (p *progress) message(ok bool) {
	p.n++
	if ok {
		p.ok++
	}
	p.maybeRender()
}

func (p *progress) maybeRender() {
	if p.w == nil {
		return
	}
	now := time.Now()
	if p.term {
		if now.Sub(p.last) < redrawEvery {
			return
		}
	} else if now.Sub(p.last) < p.interval && p.n-p.lastN < plainEvery {
		return
	}
	p.last, p.lastN = now, p.n
	p.render(now)
}

func (p *progress) done() {
	if p.w == nil {
		return
	}
	p.render(time.Now())
	if p.term {
		fmt.Fprintln(p.w)
	}
}

func (p *progress) render(now time.Time) {
	el := now.Sub(p.start)
	mb := float64(p.nread) / 1e6
	rate := 0.0
	if s := el.Seconds(); s > 0 {
		rate = mb / s
	}
	frac := -1.0
	switch {
	case p.total > 0:
		frac = float64(p.n) / float64(p.total)
	case p.bytes > 0:
		frac = float64(p.nread) / float64(p.bytes)
	}
	frac = min(frac, 1)
	var b strings.Builder
	if p.term {
		b.WriteString("\r")
		if frac >= 0 {
			full := int(frac * barWidth)
			b.WriteString("[" + strings.Repeat("#", full) + strings.Repeat(".", barWidth-full) + "] ")
		}
	} else {
		b.WriteString("replay: ")
	}
	if p.total >= 0 {
		fmt.Fprintf(&b, "%d/%d messages", p.n, p.total)
	} else {
		fmt.Fprintf(&b, "%d messages", p.n)
	}
	if failed := p.n - p.ok; failed > 0 {
		fmt.Fprintf(&b, " (%d failed)", failed)
	}
	fmt.Fprintf(&b, ", %s/%s, %s/s", formatBytes(p.nread), formatBytes(p.bytes), formatBytes(int64(rate*1e6)))
	if frac > 0 && frac < 1 {
		eta := time.Duration(float64(el) * (1 - frac) / frac).Round(time.Second)
		fmt.Fprintf(&b, ", ETA %s", eta)
	}
	if p.term {
		b.WriteString("\x1b[K") // clear the rest of the line
	} else {
		b.WriteString("\n")
	}
	io.WriteString(p.w, b.String())
}

// formatBytes renders n in B, kB, MB or GB (SI units, as the rate).
func formatBytes(n int64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1e6:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	case n < 1e9:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.2f GB", float64(n)/1e9)
}
