module weir

go 1.27.1

require go.bytecodealliance.org/pkg v0.4.0

// The runtime package of wit-bindgen's Go bindings, vendored (generate.sh): `weir build` points
// a plugin's module at this copy, so a build needs no network.
replace go.bytecodealliance.org/pkg => ./pkg
