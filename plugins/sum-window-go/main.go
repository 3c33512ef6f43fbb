// sum-window in Go: the sum of one numeric field per key per window, with the count beside it.
//
//	{"field": "/amount"}
//
// A fired window becomes one record with the window's key and
// {"key": "…", "start": …, "end": …, "count": 3, "sum": 42}. The sum stays an exact integer
// while every value is one. A record without a number at `field` fails (the window is left
// alone). The accumulator is the Rust `sum-window`'s, byte for byte.
package main

import (
	"fmt"
	"math"
	"strings"

	"weir"
)

// Config is the stage's configuration: the number to add up.
type Config struct {
	Field string `json:"field"`
}

var config Config

var field weir.Pointer

// Check reads the pointer once, when the plugin starts.
func (c *Config) Check() (err error) {
	field, err = weir.ParsePointer(c.Field)
	return err
}

func init() {
	weir.Config(&config)
	weir.Aggregate[any](SumWindow{})
}

func main() {}

// SumWindow keeps {"count": …, "sum": …} per window.
type SumWindow struct{}

func (SumWindow) Create(weir.Window) any {
	return totals(int64(0), int64(0))
}

func (SumWindow) Add(acc any, r *weir.Record) (any, error) {
	doc, err := r.JSON()
	if err != nil {
		return nil, err
	}
	n, ok := field.Get(doc)
	if !ok {
		return nil, fmt.Errorf("no `%s` in the record", field)
	}
	if _, isNumber := weir.Number(n); !isNumber {
		return nil, fmt.Errorf("`%s` is %s, not a number", field, weir.Marshal(n))
	}
	count, sum := parts(acc)
	return totals(count.(int64)+1, plus(sum, n)), nil
}

func (SumWindow) Merge(a, b any, _ weir.Window) (any, error) {
	countA, sumA := parts(a)
	countB, sumB := parts(b)
	return totals(countA.(int64)+countB.(int64), plus(sumA, sumB)), nil
}

func (SumWindow) Emit(w weir.Window, acc any) ([]weir.Record, error) {
	count, sum := parts(acc)
	var key any
	if w.Key != nil {
		key = strings.ToValidUTF8(string(w.Key), "\uFFFD")
	}
	out := weir.NewObject().Set("key", key).Set("start", w.Start).Set("end", w.End).
		Set("count", count).Set("sum", sum)
	return []weir.Record{{Value: weir.Marshal(out)}}, nil
}

func totals(count, sum any) *weir.Object {
	return weir.NewObject().Set("count", count).Set("sum", sum)
}

func parts(acc any) (count, sum any) {
	o := acc.(*weir.Object)
	count, _ = o.Get("count")
	sum, _ = o.Get("sum")
	return count, sum
}

// plus adds as integers while both are (and the sum fits in 64 bits), as floats after.
func plus(a, b any) any {
	x, aInt := a.(int64)
	y, bInt := b.(int64)
	if aInt && bInt && !((y > 0 && x > math.MaxInt64-y) || (y < 0 && x < math.MinInt64-y)) {
		return x + y
	}
	f, _ := weir.Number(a)
	g, _ := weir.Number(b)
	return f + g
}
