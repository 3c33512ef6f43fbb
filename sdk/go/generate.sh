#!/usr/bin/env bash
# Regenerate the Go SDK's bindings to weir's contract (sdk/go/wit) from wit/weir.wit, with
# wit-bindgen's Go generator, and vendor the runtime package they use (sdk/go/pkg).
#
# Run it after changing wit/weir.wit: a unit test of `weir build` fails while sdk/go/wit/weir.wit
# differs from it. Plugin authors never run it: the bindings ship inside weir.
#
# The interface packages (types, host, digest, state) are the same for every world; each world's
# exports go in one package under a build tag (`weir_filter`, ...) that `weir build` sets.
set -euo pipefail

VERSION=0.63.0
root=$(cd "$(dirname "$0")/../.." && pwd)
sdk=$root/sdk/go
tools=${WEIR_TOOLCHAINS:-$HOME/.cache/weir/toolchains}/wit-bindgen
bindgen=$tools/bin/wit-bindgen
if ! "$bindgen" --version 2>/dev/null | grep -q "$VERSION"; then
    echo "generate.sh: installing wit-bindgen-cli $VERSION (Go generator) into $tools"
    cargo install --locked --root "$tools" wit-bindgen-cli --version "$VERSION" \
        --no-default-features --features go
fi

# gofmt (from the Go toolchain `weir build` installs) formats what wit-bindgen writes.
gofmt_dir=$(ls -d "${WEIR_TOOLCHAINS:-$HOME/.cache/weir/toolchains}"/go/lib/python3*/site-packages/go/bin 2>/dev/null | head -1)
[ -n "$gofmt_dir" ] && export PATH="$gofmt_dir:$PATH"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for world in filter transform window; do
    "$bindgen" go --quiet --pkg-name weir/wit -w "$world" "$root/wit/weir.wit" \
        --out-dir "$work/$world" >/dev/null 2>&1
done

# The hooks the exports call (export_wit_world) are written by hand: keep them.
hooks=$sdk/wit/exports/export_wit_world/world.go
cp "$hooks" "$work/hooks.go"
rm -rf "$sdk/wit" "$sdk/pkg"
mkdir -p "$sdk/wit/exports/wit_exports" "$(dirname "$hooks")"
cp "$work/hooks.go" "$hooks"
cp -r "$work/filter/imports" "$sdk/wit/imports"
# Only the exports use the world's own type aliases.
rm -rf "$sdk/wit/imports/wit_world"
for world in filter transform window; do
    {
        echo "//go:build weir_$world"
        echo
        cat "$work/$world/exports/wit_exports/wit_exports.go"
    } >"$sdk/wit/exports/wit_exports/$world.go"
done
cat >"$sdk/wit/exports/wit_exports/doc.go" <<'GO'
// Package wit_exports holds the exports of weir's contract, one world per build tag
// (weir_filter, weir_transform, weir_window); `weir build` links the plugin's world.
package wit_exports
GO
cp "$root/wit/weir.wit" "$sdk/wit/weir.wit"

# The runtime package the bindings import (go.bytecodealliance.org/pkg), as wit-bindgen ships it.
src=$(ls -d "$HOME"/.cargo/registry/src/*/wit-bindgen-go-"$VERSION"/src/pkg | head -1)
mkdir -p "$sdk/pkg"
cp -r "$src/go.mod" "$src/LICENSE" "$src/wit" "$sdk/pkg/"
echo "generate.sh: sdk/go/wit and sdk/go/pkg regenerated from wit/weir.wit"
