// Package weir is for writing weir plugins in Go.
//
// A plugin is a main package that registers one function when it starts:
//
//	package main
//
//	import "weir"
//
//	var config struct {
//		Min float64 `json:"min"`
//	}
//
//	var amount = weir.MustPointer("/amount")
//
//	func init() {
//		weir.Config(&config)
//		weir.Filter(func(r *weir.Record) (bool, error) {
//			order, err := r.JSON()
//			if err != nil {
//				return false, err
//			}
//			value, _ := amount.Get(order)
//			n, isNumber := weir.Number(value)
//			return isNumber && n > config.Min, nil
//		})
//	}
//
//	func main() {}
//
// [Filter] functions say whether to keep a record; [Transform] functions return the records a
// record becomes (none, one or many) and may keep state per key; an [Aggregator] folds the
// records of a key in an event-time window, and [Aggregate] makes it the plugin. A function's error fails that
// record alone (so does a panic): the pipeline's error policy decides what becomes of it, and its
// state writes are dropped. `weir build` compiles the package to a component; main is not run.
//
// JSON values are what serde_json makes of them in the Rust SDK: numbers are int64, uint64 or
// float64, objects keep their keys' order ([Object]), and [Marshal] writes them as serde_json
// does, so a Go build of a plugin writes the same bytes as its Rust build.
package weir

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"weir/wit/imports/weir_plugin_host"
	"weir/wit/imports/weir_plugin_types"
)

// A Record is a key, a value and headers, with the time and place it was read from. A nil
// Value is a tombstone (a delete, on a compacted topic).
type Record struct {
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp int64
	Topic     string
	Partition int32
	Offset    int64
}

// A Header is one of a record's headers: a name and bytes.
type Header struct {
	Key   string
	Value []byte
}

// JSON is the record's value parsed as JSON.
func (r *Record) JSON() (any, error) {
	if r.Value == nil {
		return nil, errors.New("record has no value (tombstone)")
	}
	v, err := ParseJSON(r.Value)
	if err != nil {
		return nil, fmt.Errorf("value is not the expected JSON: %w", err)
	}
	return v, nil
}

// Header is the value of the first header called name, or nil.
func (r *Record) Header(name string) []byte {
	for _, h := range r.Headers {
		if h.Key == name {
			return h.Value
		}
	}
	return nil
}

// WithJSON is a copy of the record whose value is v written as JSON ([Marshal]).
func (r Record) WithJSON(v any) Record {
	r.Value = Marshal(v)
	return r
}

// WithKey is a copy of the record with another key.
func (r Record) WithKey(key []byte) Record {
	r.Key = key
	return r
}

// WithoutValue is the record as a tombstone: same key, headers and timestamp, no value.
func (r Record) WithoutValue() Record {
	r.Value = nil
	return r
}

// One registered the plugin's function.
type plugin struct {
	kind      string
	filter    func(*Record) (bool, error)
	transform func(*Record, *State) ([]Record, error)
	window    windowHooks
	config    any
}

var registered plugin

func register(kind string) {
	if registered.kind != "" {
		panic(fmt.Sprintf("a plugin has one weir.Filter, weir.Transform or weir.Aggregate; a %s would be a second", kind))
	}
	registered.kind = kind
}

// Filter makes f the plugin: it says whether to keep each record.
func Filter(f func(r *Record) (bool, error)) {
	register("filter")
	registered.filter = f
}

// Transform makes f the plugin: it returns what each record becomes (nil drops it). state is
// the record's keyed state.
func Transform(f func(r *Record, state *State) ([]Record, error)) {
	register("transform")
	registered.transform = f
}

// Config fills into (a pointer to a struct, usually) from the stage's configuration when the
// plugin starts, with encoding/json: a field the struct does not have is an error. If into has
// a `Check() error` method, it is called next, and its error fails the start too.
func Config(into any) {
	registered.config = into
}

// A Checker checks a configuration once it is read; see [Config].
type Checker interface {
	Check() error
}

func configure() error {
	if registered.kind == "" {
		return errors.New("the plugin has no weir.Filter, weir.Transform or weir.Aggregate")
	}
	if registered.config == nil {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(weir_plugin_host.Config()))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(registered.config); err != nil {
		return fmt.Errorf("bad config: %w", err)
	}
	if c, ok := registered.config.(Checker); ok {
		if err := c.Check(); err != nil {
			return fmt.Errorf("bad config: %w", err)
		}
	}
	return nil
}

// A Level is how much a log line matters.
type Level = weir_plugin_types.Level

// The levels of [Log].
const (
	Trace Level = weir_plugin_types.Level_Trace
	Debug Level = weir_plugin_types.Level_Debug
	Info  Level = weir_plugin_types.Level_Info
	Warn  Level = weir_plugin_types.Level_Warn
	Error Level = weir_plugin_types.Level_Error
)

// Log writes a line to weir's log, tagged with the stage. (What a plugin prints goes there
// too, at info, or warn for stderr.)
func Log(level Level, format string, args ...any) {
	weir_plugin_host.Log(level, fmt.Sprintf(format, args...))
}
