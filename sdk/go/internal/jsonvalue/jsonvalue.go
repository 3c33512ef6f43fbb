// Package jsonvalue reads and writes JSON as serde_json does, for the weir package (which
// re-exports it): numbers as int64, uint64 or float64, objects with their keys in order, and
// floats written in their shortest form. It imports nothing of the contract, so its tests run
// natively (go test).
package jsonvalue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
)

// An Object is a JSON object that keeps its keys in order (as serde_json's preserve_order
// map does), so a value read, changed and written keeps its shape.
type Object struct {
	keys   []string
	values map[string]any
}

// NewObject is an empty object.
func NewObject() *Object {
	return &Object{values: map[string]any{}}
}

// Get is the value at key, and whether there is one.
func (o *Object) Get(key string) (any, bool) {
	v, ok := o.values[key]
	return v, ok
}

// Set puts v at key: a new key goes last, an existing one keeps its place.
func (o *Object) Set(key string, v any) *Object {
	if _, ok := o.values[key]; !ok {
		o.keys = append(o.keys, key)
	}
	o.values[key] = v
	return o
}

// Delete takes key out.
func (o *Object) Delete(key string) {
	if _, ok := o.values[key]; !ok {
		return
	}
	delete(o.values, key)
	for i, k := range o.keys {
		if k == key {
			o.keys = append(o.keys[:i], o.keys[i+1:]...)
			return
		}
	}
}

// Keys are the object's keys, in order.
func (o *Object) Keys() []string { return o.keys }

// Len is how many keys the object has.
func (o *Object) Len() int { return len(o.keys) }

// MarshalJSON writes the object as [Marshal] does, for encoding/json's sake.
func (o *Object) MarshalJSON() ([]byte, error) { return Marshal(o), nil }

// number is the JSON number text as serde_json reads it: a whole number as int64 or uint64
// if it fits, else float64.
func number(text string) (any, error) {
	if text == "-0" {
		return math.Copysign(0, -1), nil // serde_json reads it as the float -0.0
	}
	if !strings.ContainsAny(text, ".eE") {
		if i, err := strconv.ParseInt(text, 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(text, 10, 64); err == nil {
			return u, nil
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, fmt.Errorf("number out of range: %s", text)
	}
	return f, nil
}

// Number is v as a float64, if v is a JSON number (int64, uint64, float64 or json.Number).
func Number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	case int:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// Marshal writes v as compact JSON, byte for byte as serde_json writes the same value: keys
// in their order, floats in their shortest form (1.0, 1e21), no HTML or non-ASCII escaping.
// Values other than JSON's own (nil, bool, numbers, string, []any, *Object)
// go through encoding/json; one it cannot write panics.
func Marshal(v any) []byte {
	var b []byte
	return appendJSON(b, v)
}

func appendJSON(b []byte, v any) []byte {
	switch t := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, t)
	case int64:
		return strconv.AppendInt(b, t, 10)
	case int:
		return strconv.AppendInt(b, int64(t), 10)
	case uint64:
		return strconv.AppendUint(b, t, 10)
	case float64:
		return appendFloat(b, t)
	case json.Number:
		return append(b, t...)
	case string:
		return appendString(b, t)
	case []any:
		b = append(b, '[')
		for i, item := range t {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, item)
		}
		return append(b, ']')
	case *Object:
		b = append(b, '{')
		for i, k := range t.keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendJSON(b, t.values[k])
		}
		return append(b, '}')
	default:
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			panic(fmt.Sprintf("cannot write %T as JSON: %v", v, err))
		}
		return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
	}
}

// appendFloat writes f as serde_json does (its ryu formatting): decimal from 1e-5 up to 1e16
// with at least one fractional digit, scientific outside that; NaN and infinities are null.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	abs := math.Abs(f)
	if abs == 0 || (abs >= 1e-5 && abs < 1e16) {
		start := len(b)
		b = strconv.AppendFloat(b, f, 'f', -1, 64)
		if !bytes.ContainsRune(b[start:], '.') {
			b = append(b, ".0"...)
		}
		return b
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // 1.5e-07, 1e+21
	mantissa, exp, _ := strings.Cut(s, "e")
	sign := ""
	if exp[0] == '-' {
		sign = "-"
	}
	exp = strings.TrimLeft(exp[1:], "0")
	return append(b, mantissa+"e"+sign+exp...)
}

// appendString writes s quoted as serde_json does: `"`, `\` and control characters escaped,
// the short forms where JSON has them.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// integers are a and b as big integers when both are whole numbers (int64 or uint64), so
// integers past 2^53 compare exactly.
func integers(a, b any) (*big.Int, *big.Int, bool) {
	whole := func(v any) (*big.Int, bool) {
		switch n := v.(type) {
		case int64:
			return big.NewInt(n), true
		case int:
			return big.NewInt(int64(n)), true
		case uint64:
			return new(big.Int).SetUint64(n), true
		}
		return nil, false
	}
	i, ok := whole(a)
	j, ok2 := whole(b)
	return i, j, ok && ok2
}

// Equal is whether two JSON values are the same: numbers by value (1 is 1.0), objects whatever
// their keys' order.
func Equal(a, b any) bool {
	if x, ok := Number(a); ok {
		if i, j, whole := integers(a, b); whole {
			return i.Cmp(j) == 0
		}
		y, ok := Number(b)
		return ok && x == y
	}
	switch a := a.(type) {
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !Equal(a[i], b[i]) {
				return false
			}
		}
		return true
	case *Object:
		b, ok := b.(*Object)
		if !ok || a.Len() != b.Len() {
			return false
		}
		for _, k := range a.keys {
			w, ok := b.values[k]
			if !ok || !Equal(a.values[k], w) {
				return false
			}
		}
		return true
	default:
		_, bNumber := Number(b)
		return !bNumber && reflect.DeepEqual(a, b)
	}
}
