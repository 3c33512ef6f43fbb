// running-total in Go: a per-key running count and sum of one numeric field.
//
//	{"field": "/amount"}
//
// emits, with the record's key, headers and timestamp, {"count": 3, "sum": 42}; with
// "into": "/totals" it emits the record itself with the totals put there. The sum stays an exact
// integer while every value is one. A record without a number at `field` fails (the totals are
// left alone); a tombstone forgets the key's totals and passes through. The state is the Rust
// `running-total`'s, byte for byte, so either build can take over from the other.
package main

import (
	"fmt"
	"math"

	"weir"
)

// Config is the stage's configuration: the number to add up, and where in the record to put
// the totals instead of replacing the record.
type Config struct {
	Field string `json:"field"`
	Into  string `json:"into"`
}

var config Config

var field, into weir.Pointer

// Check reads the pointers once, when the plugin starts.
func (c *Config) Check() (err error) {
	if field, err = weir.ParsePointer(c.Field); err != nil {
		return err
	}
	into, err = weir.ParsePointer(c.Into)
	return err
}

func init() {
	weir.Config(&config)
	weir.Transform(func(r *weir.Record, state *weir.State) ([]weir.Record, error) {
		if r.Value == nil {
			state.Delete("totals")
			return []weir.Record{*r}, nil
		}
		value, err := r.JSON()
		if err != nil {
			return nil, err
		}
		n, ok := field.Get(value)
		if _, isNumber := weir.Number(n); !ok || !isNumber {
			return nil, fmt.Errorf("no number at %s", field)
		}
		totals, err := state.JSON("totals")
		if err != nil {
			return nil, err
		}
		totals = add(totals, n)
		if err := state.PutJSON("totals", totals); err != nil {
			return nil, err
		}
		if config.Into == "" {
			return []weir.Record{r.WithJSON(totals)}, nil
		}
		if err := into.Put(value, totals); err != nil {
			return nil, fmt.Errorf("cannot put totals at %s: a parent is not an object", into)
		}
		return []weir.Record{r.WithJSON(value)}, nil
	})
}

func main() {}

// add is the totals after n: the sum an int64 while every value is one (and it fits), a float
// after.
func add(totals any, n any) *weir.Object {
	count, sum := int64(0), any(int64(0))
	if t, ok := totals.(*weir.Object); ok {
		c, _ := t.Get("count")
		count, _ = c.(int64)
		sum, _ = t.Get("sum")
	}
	s, sumInt := sum.(int64)
	i, nInt := n.(int64)
	if sumInt && nInt && !overflows(s, i) {
		sum = s + i
	} else {
		x, _ := weir.Number(sum)
		y, _ := weir.Number(n)
		sum = x + y
	}
	return weir.NewObject().Set("count", count+1).Set("sum", sum)
}

func overflows(a, b int64) bool {
	return (b > 0 && a > math.MaxInt64-b) || (b < 0 && a < math.MinInt64-b)
}
