package weir

import (
	"errors"
	"fmt"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"weir/wit/imports/weir_plugin_state"
)

// State is the keyed state of the record being processed: named values the host keeps per
// record key, checkpointed with the pipeline and restored where the key's partition goes.
type State struct {
	rec uint32
}

// Get is the bytes kept under name, or nil.
func (s *State) Get(name string) []byte {
	v := weir_plugin_state.Get(s.rec, name)
	if v.IsNone() {
		return nil
	}
	return v.Some()
}

// Put keeps value under name.
func (s *State) Put(name string, value []byte) error {
	r := weir_plugin_state.Put(s.rec, name, value, witTypes.None[uint64]())
	if r.IsErr() {
		return errors.New(r.Err())
	}
	return nil
}

// JSON is the value kept under name parsed as JSON ([ParseJSON]), or nil.
func (s *State) JSON(name string) (any, error) {
	raw := s.Get(name)
	if raw == nil {
		return nil, nil
	}
	v, err := ParseJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("state `%s` is not the expected JSON: %w", name, err)
	}
	return v, nil
}

// PutJSON keeps v under name, written as JSON ([Marshal]).
func (s *State) PutJSON(name string, v any) error {
	return s.Put(name, Marshal(v))
}

// Delete forgets what is kept under name.
func (s *State) Delete(name string) {
	weir_plugin_state.Delete(s.rec, name)
}
