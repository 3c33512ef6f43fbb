module running-total

go 1.24

// weir:world transform
