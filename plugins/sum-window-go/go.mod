module sum-window

go 1.24

// weir:world window
