#!/usr/bin/env bash
# Re-fetches the dashboard's plotting library, uPlot, from the npm registry into
# crates/orchestrator/src/dashboard/assets/ (the files are committed: building the orchestrator
# needs neither npm nor a network). Run it to check the committed files, or, with a new VERSION
# and INTEGRITY (`npm view uplot@VERSION dist.integrity`), to update them; then update the
# sha256 sums in crates/orchestrator/src/dashboard/assets.rs, which its unit test checks.
#
#   scripts/fetch-uplot.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.6.32
INTEGRITY=sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==
ASSETS=crates/orchestrator/src/dashboard/assets

command -v npm >/dev/null || { echo "fetch-uplot: npm is needed (Debian: apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$VERSION" >/dev/null)
tarball="$tmp/uplot-$VERSION.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "fetch-uplot: uplot-$VERSION.tgz is $got, not the pinned $INTEGRITY" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$tmp"
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$ASSETS/"
cp "$tmp/package/LICENSE" "$ASSETS/uPlot.LICENSE"
echo "fetch-uplot: uPlot $VERSION in $ASSETS:"
(cd "$ASSETS" && sha256sum uPlot.iife.min.js uPlot.min.css uPlot.LICENSE)
