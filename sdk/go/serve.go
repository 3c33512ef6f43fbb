package weir

import (
	"bytes"
	"fmt"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"weir/wit/exports/export_wit_world"
	"weir/wit/imports/weir_plugin_types"
)

// The contract's exports, served by the registered function. The batch encoding stays here,
// as it does inside the Rust SDK.
func init() {
	export_wit_world.Serve(export_wit_world.Hooks{
		Init: func() error {
			defer collect()
			return configure()
		},
		Filter: func(batch weir_plugin_types.Batch) weir_plugin_types.Verdicts {
			defer collect()
			return filterBatch(batch)
		},
		Transform: func(batch weir_plugin_types.Batch) weir_plugin_types.OutBatch {
			defer collect()
			return transformBatch(batch)
		},
		Accumulate: func(panes []weir_plugin_types.Pane) []witTypes.Result[weir_plugin_types.PaneResult, string] {
			defer collect()
			return registered.window.accumulate(panes)
		},
		Merge: func(w weir_plugin_types.KeyedWindow, a, b []byte) ([]byte, error) {
			defer collect()
			return registered.window.merge(w, a, b)
		},
		Emit: func(fired []witTypes.Tuple2[weir_plugin_types.KeyedWindow, []byte]) []witTypes.Result[[]weir_plugin_types.Output, string] {
			defer collect()
			return registered.window.emit(fired)
		},
	})
}

type failure = witTypes.Tuple2[uint32, string]

// records reads a batch's records, their bytes still in its arena.
func records(batch weir_plugin_types.Batch) []Record {
	arena := batch.Arena
	slice := func(s weir_plugin_types.Span) []byte { return arena[s.Start : s.Start+s.Len : s.Start+s.Len] }
	option := func(s witTypes.Option[weir_plugin_types.Span]) []byte {
		if s.IsNone() {
			return nil
		}
		return slice(s.Some())
	}
	out := make([]Record, len(batch.Events))
	for i, e := range batch.Events {
		refs := batch.Headers[e.Headers.Start : e.Headers.Start+e.Headers.Len]
		headers := make([]Header, len(refs))
		for j, h := range refs {
			headers[j] = Header{string(slice(h.Key)), slice(h.Value)}
		}
		out[i] = Record{
			Key: option(e.Key), Value: option(e.Value), Headers: headers,
			Timestamp: e.Timestamp, Topic: batch.Topics[e.Topic],
			Partition: e.Partition, Offset: e.Offset,
		}
	}
	return out
}

// call runs f, turning a panic into the record's error.
func call(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

func filterBatch(batch weir_plugin_types.Batch) weir_plugin_types.Verdicts {
	all := records(batch)
	keep := make([]bool, len(all))
	var errors []failure
	for i := range all {
		err := call(func() (err error) {
			keep[i], err = registered.filter(&all[i])
			return err
		})
		if err != nil {
			keep[i] = false
			errors = append(errors, failure{F0: uint32(i), F1: err.Error()})
		}
	}
	return weir_plugin_types.Verdicts{Keep: keep, Errors: errors}
}

func transformBatch(batch weir_plugin_types.Batch) weir_plugin_types.OutBatch {
	all := records(batch)
	var out outBatch
	var errors []failure
	for i := range all {
		var made []Record
		err := call(func() (err error) {
			made, err = registered.transform(&all[i], &State{rec: uint32(i)})
			return err
		})
		if err != nil {
			errors = append(errors, failure{F0: uint32(i), F1: err.Error()})
			continue
		}
		for _, m := range made {
			out.add(uint32(i), &all[i], &m)
		}
	}
	return weir_plugin_types.OutBatch{
		Arena: out.arena, Headers: out.headers, Outputs: out.outputs, Errors: errors,
	}
}

// outBatch is an out-batch being written.
type outBatch struct {
	arena   []byte
	headers []weir_plugin_types.HeaderRef
	outputs []weir_plugin_types.OutputRef
}

func (o *outBatch) span(data []byte) weir_plugin_types.Span {
	s := weir_plugin_types.Span{Start: uint32(len(o.arena)), Len: uint32(len(data))}
	o.arena = append(o.arena, data...)
	return s
}

// part is an output's key or value: its input's, none, or new bytes.
func (o *outBatch) part(next, before []byte) weir_plugin_types.Part {
	switch {
	case (next == nil) == (before == nil) && bytes.Equal(next, before):
		return weir_plugin_types.MakePartSame()
	case next == nil:
		return weir_plugin_types.MakePartAbsent()
	default:
		return weir_plugin_types.MakePartBytes(o.span(next))
	}
}

func (o *outBatch) add(input uint32, in, out *Record) {
	headers := witTypes.None[weir_plugin_types.Span]()
	if !sameHeaders(in.Headers, out.Headers) {
		start := uint32(len(o.headers))
		for _, h := range out.Headers {
			o.headers = append(o.headers, weir_plugin_types.HeaderRef{
				Key: o.span([]byte(h.Key)), Value: o.span(h.Value),
			})
		}
		headers = witTypes.Some(weir_plugin_types.Span{Start: start, Len: uint32(len(out.Headers))})
	}
	o.outputs = append(o.outputs, weir_plugin_types.OutputRef{
		Input: input, Key: o.part(out.Key, in.Key), Value: o.part(out.Value, in.Value),
		Headers: headers, Timestamp: out.Timestamp,
	})
}

func sameHeaders(a, b []Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}
