package weir

import (
	"encoding/json"
	"fmt"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"weir/wit/imports/weir_plugin_types"
)

// A Window is one window of one key: [Start, End) in event-time milliseconds.
type Window struct {
	Key        []byte
	Start, End int64
}

// An Aggregator folds the records of one key in one event-time window into an accumulator of
// type A (the pipeline says which windows; weir assigns records to them, keeps the
// accumulators, written as JSON, and fires windows on the watermark).
type Aggregator[A any] interface {
	// Create is a fresh accumulator.
	Create(w Window) A
	// Add folds a record in; its error fails that record alone.
	Add(acc A, r *Record) (A, error)
	// Merge joins the accumulators of two session windows that came to touch.
	Merge(a, b A, w Window) (A, error)
	// Emit is what a fired window becomes. A record without a key gets the window's, one
	// without a timestamp the window's last millisecond.
	Emit(w Window, acc A) ([]Record, error)
}

// Aggregate makes agg the plugin, a window plugin.
func Aggregate[A any](agg Aggregator[A]) {
	register("window")
	registered.window = windowHooks{
		accumulate: func(panes []weir_plugin_types.Pane) []witTypes.Result[weir_plugin_types.PaneResult, string] {
			out := make([]witTypes.Result[weir_plugin_types.PaneResult, string], len(panes))
			for i, p := range panes {
				out[i] = result(fold(agg, p))
			}
			return out
		},
		merge: func(w weir_plugin_types.KeyedWindow, a, b []byte) ([]byte, error) {
			return merge(agg, window(w), a, b)
		},
		emit: func(fired []witTypes.Tuple2[weir_plugin_types.KeyedWindow, []byte]) []witTypes.Result[[]weir_plugin_types.Output, string] {
			out := make([]witTypes.Result[[]weir_plugin_types.Output, string], len(fired))
			for i, f := range fired {
				out[i] = result(emit(agg, window(f.F0), f.F1))
			}
			return out
		},
	}
}

type windowHooks struct {
	accumulate func([]weir_plugin_types.Pane) []witTypes.Result[weir_plugin_types.PaneResult, string]
	merge      func(weir_plugin_types.KeyedWindow, []byte, []byte) ([]byte, error)
	emit       func([]witTypes.Tuple2[weir_plugin_types.KeyedWindow, []byte]) []witTypes.Result[[]weir_plugin_types.Output, string]
}

func result[T any](v T, err error) witTypes.Result[T, string] {
	if err != nil {
		return witTypes.Err[T, string](err.Error())
	}
	return witTypes.Ok[T, string](v)
}

func window(w weir_plugin_types.KeyedWindow) Window {
	return Window{Key: w.Key.SomeOr(nil), Start: w.Start, End: w.End}
}

// fold is a pane's accumulator after its events, and the events that failed, by index.
func fold[A any](agg Aggregator[A], p weir_plugin_types.Pane) (weir_plugin_types.PaneResult, error) {
	w := window(p.Window)
	var acc A
	if p.Acc.IsSome() {
		var err error
		if acc, err = decode[A](p.Acc.Some()); err != nil {
			return weir_plugin_types.PaneResult{}, err
		}
	} else if err := call(func() error { acc = agg.Create(w); return nil }); err != nil {
		return weir_plugin_types.PaneResult{}, err
	}
	var errors []failure
	for i, e := range p.Events {
		r := event(e)
		err := call(func() (err error) {
			next, err := agg.Add(acc, &r)
			if err == nil {
				acc = next
			}
			return err
		})
		if err != nil {
			errors = append(errors, failure{F0: uint32(i), F1: err.Error()})
		}
	}
	raw, err := encode(acc)
	return weir_plugin_types.PaneResult{Acc: raw, Errors: errors}, err
}

func merge[A any](agg Aggregator[A], w Window, a, b []byte) (raw []byte, err error) {
	x, err := decode[A](a)
	if err != nil {
		return nil, err
	}
	y, err := decode[A](b)
	if err != nil {
		return nil, err
	}
	err = call(func() (err error) {
		merged, err := agg.Merge(x, y, w)
		if err == nil {
			raw, err = encode(merged)
		}
		return err
	})
	return raw, err
}

func emit[A any](agg Aggregator[A], w Window, raw []byte) (out []weir_plugin_types.Output, err error) {
	acc, err := decode[A](raw)
	if err != nil {
		return nil, err
	}
	var records []Record
	if err := call(func() (err error) { records, err = agg.Emit(w, acc); return err }); err != nil {
		return nil, err
	}
	for _, r := range records {
		key, ts := r.Key, r.Timestamp
		if key == nil {
			key = w.Key
		}
		if ts == 0 {
			ts = w.End - 1
		}
		headers := make([]weir_plugin_types.Header, len(r.Headers))
		for i, h := range r.Headers {
			headers[i] = weir_plugin_types.Header{Key: h.Key, Value: h.Value}
		}
		out = append(out, weir_plugin_types.Output{
			Key: option(key), Value: option(r.Value), Headers: headers, Timestamp: ts,
		})
	}
	return out, nil
}

func option(b []byte) witTypes.Option[[]byte] {
	if b == nil {
		return witTypes.None[[]byte]()
	}
	return witTypes.Some(b)
}

func event(e weir_plugin_types.Event) Record {
	headers := make([]Header, len(e.Headers))
	for i, h := range e.Headers {
		headers[i] = Header{h.Key, h.Value}
	}
	return Record{
		Key: e.Key.SomeOr(nil), Value: e.Value.SomeOr(nil), Headers: headers,
		Timestamp: e.Timestamp, Topic: e.Topic, Partition: e.Partition, Offset: e.Offset,
	}
}

// decode reads an accumulator: a JSON value ([ParseJSON]) when A is `any`, else with
// encoding/json.
func decode[A any](raw []byte) (acc A, err error) {
	if p, ok := any(&acc).(*any); ok {
		*p, err = ParseJSON(raw)
	} else {
		err = json.Unmarshal(raw, &acc)
	}
	if err != nil {
		err = fmt.Errorf("stored accumulator does not decode: %w", err)
	}
	return acc, err
}

func encode[A any](acc A) (raw []byte, err error) {
	err = call(func() error { raw = Marshal(acc); return nil })
	if err != nil {
		err = fmt.Errorf("accumulator does not encode: %w", err)
	}
	return raw, err
}
