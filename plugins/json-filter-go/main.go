// json-filter in Go: keep records whose JSON value matches conditions on JSON pointers.
//
//	{"where": [{"path": "/amount", "op": "gt", "value": 100}], "match": "all"}
//
// Ops: eq ne gt ge lt le exists regex in. `match` is `all` (default) or `any`. A tombstone is
// kept unless `"tombstones": "drop"`. The same plugin as the Rust `json-filter`, record for
// record.
package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"

	"weir"
)

var config Config

func init() {
	weir.Config(&config)
	weir.Filter(func(r *weir.Record) (bool, error) {
		if r.Value == nil {
			return config.Tombstones != "drop", nil
		}
		doc, err := r.JSON()
		if err != nil {
			return false, err
		}
		holds := func(c Condition) bool { return c.holds(doc) }
		if config.Match == "any" {
			return slices.ContainsFunc(config.Where, holds), nil
		}
		return !slices.ContainsFunc(config.Where, func(c Condition) bool { return !holds(c) }), nil
	})
}

func main() {}

type Config struct {
	Where      []Condition `json:"where"`
	Match      string      `json:"match"`
	Tombstones string      `json:"tombstones"`
}

type Condition struct {
	Path  string          `json:"path"`
	Op    string          `json:"op"`
	Value json.RawMessage `json:"value"`

	pointer weir.Pointer
	value   any
	regex   *regexp.Regexp
}

// Check reads each condition's path and value once, when the plugin starts.
func (c *Config) Check() error {
	if c.Where == nil {
		return fmt.Errorf("missing field `where`")
	}
	if !slices.Contains([]string{"", "all", "any"}, c.Match) ||
		!slices.Contains([]string{"", "keep", "drop"}, c.Tombstones) {
		return fmt.Errorf("`match` is `all` or `any`, `tombstones` is `keep` or `drop`")
	}
	for i := range c.Where {
		if err := c.Where[i].check(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Condition) check() (err error) {
	if c.pointer, err = weir.ParsePointer(c.Path); err != nil {
		return err
	}
	if !slices.Contains([]string{"eq", "ne", "gt", "ge", "lt", "le", "exists", "regex", "in"}, c.Op) {
		return fmt.Errorf("unknown op `%s` (expected eq ne gt ge lt le exists regex in)", c.Op)
	}
	if c.Op == "exists" {
		return nil
	}
	if c.Value == nil {
		return fmt.Errorf("op `%s` on `%s` needs a `value`", c.Op, c.Path)
	}
	if c.value, err = weir.ParseJSON(c.Value); err != nil {
		return err
	}
	switch c.Op {
	case "regex":
		text, ok := c.value.(string)
		if !ok {
			return fmt.Errorf("op `regex` on `%s` needs a string value", c.Path)
		}
		c.regex, err = regexp.Compile(text)
	case "in":
		if _, ok := c.value.([]any); !ok {
			return fmt.Errorf("op `in` on `%s` needs an array value", c.Path)
		}
	}
	return err
}

func (c *Condition) holds(doc any) bool {
	found, ok := c.pointer.Get(doc)
	if !ok {
		return false
	}
	switch c.Op {
	case "exists":
		return true
	case "eq":
		return same(found, c.value)
	case "ne":
		return !same(found, c.value)
	case "regex":
		text, ok := found.(string)
		return ok && c.regex.MatchString(text)
	case "in":
		return slices.ContainsFunc(c.value.([]any), func(v any) bool { return same(found, v) })
	}
	order, ok := compare(found, c.value)
	if !ok {
		return false
	}
	switch c.Op {
	case "gt":
		return order > 0
	case "ge":
		return order >= 0
	case "lt":
		return order < 0
	default:
		return order <= 0
	}
}

// same is equality where 1 and 1.0 are the same number (and true is not 1).
func same(a, b any) bool {
	x, aNumber := weir.Number(a)
	y, bNumber := weir.Number(b)
	if aNumber || bNumber {
		return aNumber && bNumber && x == y
	}
	return weir.Equal(a, b)
}

// compare orders numbers as numbers and strings as strings; nothing else compares.
func compare(a, b any) (int, bool) {
	x, aNumber := weir.Number(a)
	y, bNumber := weir.Number(b)
	if aNumber && bNumber {
		return cmp.Compare(x, y), true
	}
	s, aString := a.(string)
	t, bString := b.(string)
	if aString && bString {
		return cmp.Compare(s, t), true
	}
	return 0, false
}
