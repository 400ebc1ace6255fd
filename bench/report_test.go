package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/tenancyhq/tenancy"
)

// markdown formats the comparison: the median ratio to the limit of the same
// model (min–max over the rounds), and the limit's own median µs/op.
func (res *result) markdown(rounds, ops int, elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Ratio of each side's median time per transaction to that of raw pgx on the same model's table in the same round;\n")
	fmt.Fprintf(&b, "median over %d rounds of %d transactions per side and statement, interleaved one transaction at a time (min–max over the rounds in brackets; the limit's median µs in brackets). ", rounds, ops)
	fmt.Fprintf(&b, "Lower is better; 1.00 is the limit. One client, one transaction at a time; %d CPUs, Go %s; %v in all.\n\n",
		runtime.NumCPU(), strings.TrimPrefix(runtime.Version(), "go"), elapsed.Round(time.Second))
	b.WriteString("| model | side |")
	for _, s := range statements {
		fmt.Fprintf(&b, " %s |", s)
	}
	b.WriteString("\n|---|---|")
	for range statements {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, s := range res.sides {
		fmt.Fprintf(&b, "| %s | %s |", s.model, s.name)
		for _, stmt := range statements {
			if s.limit {
				fmt.Fprintf(&b, " 1.00 (%.0f µs) |", median(res.nsOp[s][stmt])/1e3)
				continue
			}
			rs := res.ratios[s][stmt]
			lo, hi := rs[0], rs[0]
			for _, r := range rs {
				lo, hi = min(lo, r), max(hi, r)
			}
			fmt.Fprintf(&b, " %.2f (%.2f–%.2f) |", median(rs), lo, hi)
		}
		b.WriteString("\n")
	}
	b.WriteString(`
What each side enforces in PostgreSQL, beside the application's own WHERE tenant_id:
- raw pgx and GORM: nothing; they connect as the superuser (the limit, and the usual home-made
  schema-per-tenant setup: one role that reaches every schema, search_path switched per request and
  left on the pooled connection).
- database/sql: a plain RLS policy on app.tenant_id, forced, for a role that owns nothing; the setting is
  session-level, so it stays on the pooled connection after the request. No audit triggers on its copies
  of the tables (the other sides' inserts and updates fire them).
- tenancy: RLS forced with a signed, transaction-local tenant, a per-tenant role in the schema and
  database models, soft delete and the audit triggers; nothing outlives the transaction.
`)
	return b.String()
}

// writeRatiosPNG draws the median ratios as grouped bars: one group per side
// (but the limits), one bar per statement, and a line at 1.0.
func writeRatiosPNG(path string, res *result) error {
	var sides []*side
	for _, s := range res.sides {
		if !s.limit {
			sides = append(sides, s)
		}
	}
	const (
		w, h          = 900, 420
		left, right   = 60, 20
		top, bottom   = 40, 110
		maxRatio      = 3.0
		barsPerGroup  = 4
		groupPadding  = 14
		gridlineCount = 6
	)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	plotH := float64(h - top - bottom)
	y := func(r float64) int { return h - bottom - int(min(r, maxRatio)/maxRatio*plotH) }
	grey := color.RGBA{220, 220, 220, 255}
	for i := 0; i <= gridlineCount; i++ {
		r := maxRatio * float64(i) / gridlineCount
		fill(img, left, y(r), w-right, y(r)+1, grey)
		label(img, 8, y(r)+4, fmt.Sprintf("%.1fx", r))
	}
	fill(img, left, y(1)-1, w-right, y(1)+1, color.RGBA{200, 0, 0, 255}) // the limit
	colors := []color.RGBA{{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {148, 103, 189, 255}}
	groupW := (w - left - right) / max(len(sides), 1)
	barW := (groupW - 2*groupPadding) / barsPerGroup
	for g, s := range sides {
		x0 := left + g*groupW + groupPadding
		for i, stmt := range statements {
			r := median(res.ratios[s][stmt])
			fill(img, x0+i*barW, y(r), x0+(i+1)*barW-2, h-bottom, colors[i])
		}
		name := strings.TrimPrefix(s.name, "tenancy ")
		label(img, x0, h-bottom+16, string(s.model))
		for i, line := range wrap(name, groupW/7-2) {
			label(img, x0, h-bottom+32+i*14, line)
		}
	}
	label(img, left, 20, "time per transaction / raw pgx (red line = 1.0, the limit); bars: ")
	x := left + 7*len("time per transaction / raw pgx (red line = 1.0, the limit); bars: ")
	for i, stmt := range statements {
		fill(img, x, 10, x+10, 20, colors[i])
		label(img, x+14, 20, stmt)
		x += 14 + 7*len(stmt) + 12
	}
	return savePNG(path, img)
}

// writeScalePNG draws how the scale run grew: on the left each model's p50
// (solid) and p99 (light) latency per level, on the right the throughput per
// level with the most server connections PostgreSQL counted.
func writeScalePNG(path string, results []levelResult) error {
	const (
		w, h        = 900, 440
		top, bottom = 50, 90
		split       = 560 // the latency panel ends here
	)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	plotH := float64(h - top - bottom)
	grey := color.RGBA{220, 220, 220, 255}
	solid := []color.RGBA{{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}}
	light := []color.RGBA{{174, 199, 232, 255}, {255, 187, 120, 255}, {152, 223, 138, 255}}
	levelName := func(r levelResult) string {
		return fmt.Sprintf("%d/%d/%d", r.level.shared, r.level.schema, r.level.database)
	}

	// Latency, milliseconds, linear up to the largest p99.
	var most float64
	for _, r := range results {
		for _, m := range tenancy.Models {
			most = max(most, float64(r.p99[m])/1e6)
		}
	}
	most = niceCeil(most)
	left, right := 60, split-20
	y := func(v, top0 float64) int { return h - bottom - int(min(v, top0)/top0*plotH) }
	for i := 0; i <= 5; i++ {
		v := most * float64(i) / 5
		fill(img, left, y(v, most), right, y(v, most)+1, grey)
		label(img, 8, y(v, most)+4, fmt.Sprintf("%.0f ms", v))
	}
	groupW := (right - left) / max(len(results), 1)
	barW := (groupW - 24) / len(tenancy.Models)
	for g, r := range results {
		x0 := left + g*groupW + 12
		for i, m := range tenancy.Models {
			x := x0 + i*barW
			fill(img, x, y(float64(r.p99[m])/1e6, most), x+barW-2, h-bottom, light[i])
			fill(img, x, y(float64(r.p50[m])/1e6, most), x+barW-2, h-bottom, solid[i])
		}
		label(img, x0, h-bottom+16, levelName(r))
	}
	label(img, left, h-bottom+36, "tenants: shared/schema/database")
	label(img, left, 20, "latency per transaction: p50 (solid), p99 (light)")
	x := left
	for i, m := range tenancy.Models {
		fill(img, x, 30, x+10, 40, solid[i])
		label(img, x+14, 40, string(m))
		x += 14 + 7*len(m) + 16
	}

	// Throughput, transactions a second.
	var mostTx float64
	for _, r := range results {
		mostTx = max(mostTx, r.throughput)
	}
	mostTx = niceCeil(mostTx)
	left, right = split+50, w-20
	for i := 0; i <= 5; i++ {
		v := mostTx * float64(i) / 5
		fill(img, left, y(v, mostTx), right, y(v, mostTx)+1, grey)
		label(img, split, y(v, mostTx)+4, fmt.Sprintf("%.0f", v))
	}
	groupW = (right - left) / max(len(results), 1)
	for g, r := range results {
		x0 := left + g*groupW + 8
		fill(img, x0, y(r.throughput, mostTx), x0+groupW-16, h-bottom, color.RGBA{127, 127, 127, 255})
		label(img, x0, h-bottom+16, levelName(r))
		label(img, x0, h-bottom+32, fmt.Sprintf("%d conns", r.maxConns))
	}
	label(img, split, 20, "transactions/s, all models")
	label(img, split, 40, fmt.Sprintf("(max server conns; budget %d)", scaleConns))
	return savePNG(path, img)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func savePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fill(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	draw.Draw(img, image.Rect(x0, y0, x1, y1), image.NewUniform(c), image.Point{}, draw.Src)
}

func label(img *image.RGBA, x, y int, s string) {
	d := font.Drawer{Dst: img, Src: image.Black, Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// wrap splits s into lines of at most n characters at spaces.
func wrap(s string, n int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		if line != "" && len(line)+1+len(word) > n {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(lines, line)
}
