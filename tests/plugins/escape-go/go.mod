module escape

go 1.24

// weir:world filter
