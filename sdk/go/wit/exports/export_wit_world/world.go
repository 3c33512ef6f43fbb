// Package export_wit_world is where wit-bindgen's exports call the plugin: each function hands
// the call to the weir package, which sets the hooks when it starts. The weir package cannot be
// imported from here (it imports this), hence hooks rather than calls.
package export_wit_world

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"weir/wit/imports/weir_plugin_types"
)

// Hooks are the weir package's handlers of the contract's exports.
type Hooks struct {
	Init       func() error
	Filter     func(weir_plugin_types.Batch) weir_plugin_types.Verdicts
	Transform  func(weir_plugin_types.Batch) weir_plugin_types.OutBatch
	Accumulate func([]weir_plugin_types.Pane) []witTypes.Result[weir_plugin_types.PaneResult, string]
	Merge      func(weir_plugin_types.KeyedWindow, []byte, []byte) ([]byte, error)
	Emit       func([]witTypes.Tuple2[weir_plugin_types.KeyedWindow, []byte]) []witTypes.Result[[]weir_plugin_types.Output, string]
}

var hooks Hooks

// Serve makes `h` the handlers of the exports.
func Serve(h Hooks) { hooks = h }

func Init() witTypes.Result[witTypes.Unit, string] {
	if err := hooks.Init(); err != nil {
		return witTypes.Err[witTypes.Unit, string](err.Error())
	}
	return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
}

func Filter(batch weir_plugin_types.Batch) weir_plugin_types.Verdicts {
	return hooks.Filter(batch)
}

func Transform(batch weir_plugin_types.Batch) weir_plugin_types.OutBatch {
	return hooks.Transform(batch)
}

func Accumulate(panes []weir_plugin_types.Pane) []witTypes.Result[weir_plugin_types.PaneResult, string] {
	return hooks.Accumulate(panes)
}

func Merge(window weir_plugin_types.KeyedWindow, a []byte, b []byte) witTypes.Result[[]byte, string] {
	merged, err := hooks.Merge(window, a, b)
	if err != nil {
		return witTypes.Err[[]byte, string](err.Error())
	}
	return witTypes.Ok[[]byte, string](merged)
}

func Emit(fired []witTypes.Tuple2[weir_plugin_types.KeyedWindow, []byte]) []witTypes.Result[[]weir_plugin_types.Output, string] {
	return hooks.Emit(fired)
}
