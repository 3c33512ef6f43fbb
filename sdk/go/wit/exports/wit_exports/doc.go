// Package wit_exports holds the exports of weir's contract, one world per build tag
// (weir_filter, weir_transform, weir_window); `weir build` links the plugin's world.
package wit_exports
