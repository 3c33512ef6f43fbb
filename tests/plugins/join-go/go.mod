module join

go 1.24

// weir:world transform
