package weir

import (
	"fmt"

	"weir/wit/imports/weir_plugin_tables"
)

// TableRow is the current row of the pipeline's table named table under key (the text of the
// row's key field: a string's characters, a number's JSON text), as JSON bytes, or nil when the
// table has no such row. The stage must be granted the table (`tables = ["customers"]` on the
// stage): asking for another fails the record.
func TableRow(table string, key string) []byte {
	v := weir_plugin_tables.Get(table, []byte(key))
	if v.IsNone() {
		return nil
	}
	return v.Some()
}

// TableJSON is [TableRow] parsed as JSON ([ParseJSON]), or nil.
func TableJSON(table string, key string) (any, error) {
	raw := TableRow(table, key)
	if raw == nil {
		return nil, nil
	}
	v, err := ParseJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("a row of table `%s` is not the expected JSON: %w", table, err)
	}
	return v, nil
}
