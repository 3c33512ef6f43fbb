package weir

import (
	"fmt"

	"weir/wit/imports/weir_plugin_tables"
)

// TableRow is the row of the pipeline's table named table under key (the text of the row's
// key field: a string's characters, a number's JSON text) for the record being processed, as
// JSON bytes, or nil when the table has no such row: the latest row, or for a table kept
// `as_of = "event-time"`, the one current at the record's time. The stage must be granted the
// table (`tables = ["customers"]` on the stage): asking for another fails the record.
func (s *State) TableRow(table string, key string) []byte {
	v := weir_plugin_tables.Get(s.rec, table, []byte(key))
	if v.IsNone() {
		return nil
	}
	return v.Some()
}

// TableJSON is [State.TableRow] parsed as JSON ([ParseJSON]), or nil.
func (s *State) TableJSON(table string, key string) (any, error) {
	raw := s.TableRow(table, key)
	if raw == nil {
		return nil, nil
	}
	v, err := ParseJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("a row of table `%s` is not the expected JSON: %w", table, err)
	}
	return v, nil
}
