module json-filter

go 1.24

// weir:world filter
