// Count records per key per window.
package main

import "weir"

// Count keeps a count per window: its accumulator, written as JSON between calls.
type Count struct{}

func (Count) Create(weir.Window) int64 { return 0 }

func (Count) Add(count int64, _ *weir.Record) (int64, error) { return count + 1, nil }

func (Count) Merge(a, b int64, _ weir.Window) (int64, error) { return a + b, nil }

func (Count) Emit(w weir.Window, count int64) ([]weir.Record, error) {
	var key any
	if w.Key != nil {
		key = string(w.Key)
	}
	out := weir.NewObject().Set("key", key).Set("start", w.Start).Set("end", w.End).
		Set("count", count)
	return []weir.Record{{Value: weir.Marshal(out)}}, nil
}

func init() {
	weir.Aggregate[int64](Count{})
}

// weir calls the plugin through weir.Aggregate; main is not run.
func main() {}
