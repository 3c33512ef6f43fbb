package weir

import "weir/internal/jsonvalue"

// An Object is a JSON object that keeps its keys in order (as serde_json's preserve_order map
// does), so a value read, changed and written keeps its shape: Get, Set (a new key goes last),
// Delete, Keys, Len.
type Object = jsonvalue.Object

// NewObject is an empty object.
func NewObject() *Object { return jsonvalue.NewObject() }

// ParseJSON reads one JSON value as serde_json does: nil, bool, a number (int64 when it is a
// whole number that fits, else uint64, else float64), string, []any or *Object.
func ParseJSON(data []byte) (any, error) { return jsonvalue.Parse(data) }

// Marshal writes v as compact JSON, byte for byte as serde_json writes the same value: keys in
// their order, floats in their shortest form (1.0, 1e21), no HTML or non-ASCII escaping. Values
// other than JSON's own (nil, bool, numbers, string, []any, *Object) go through encoding/json
// (whose floats differ: 1000 for 1000.0); one it cannot write panics, failing the record.
func Marshal(v any) []byte { return jsonvalue.Marshal(v) }

// Number is v as a float64, if v is a JSON number (int64, uint64, float64 or json.Number).
func Number(v any) (float64, bool) { return jsonvalue.Number(v) }

// Equal is whether two JSON values are the same: numbers by value (1 is 1.0), objects whatever
// their keys' order.
func Equal(a, b any) bool { return jsonvalue.Equal(a, b) }
