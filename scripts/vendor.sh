#!/usr/bin/env bash
# Fetch the front-end toolkits from the npm registry into static/vendor/ (committed, so
# `make run` needs no Node). Bump a version here and run `make vendor`.
set -euo pipefail
BOOTSTRAP=5.3.9
HTMX=2.0.11
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "bootstrap@$BOOTSTRAP" "htmx.org@$HTMX" >/dev/null)
tar -xzf "$work/bootstrap-$BOOTSTRAP.tgz" -C "$work" && mv "$work/package" "$work/bootstrap"
tar -xzf "$work/htmx.org-$HTMX.tgz" -C "$work" && mv "$work/package" "$work/htmx"
rm -rf static/vendor && mkdir -p static/vendor/bootstrap static/vendor/htmx
cp "$work/bootstrap/dist/css/bootstrap.min.css" "$work/bootstrap/dist/css/bootstrap.min.css.map" \
   "$work/bootstrap/dist/js/bootstrap.bundle.min.js" "$work/bootstrap/dist/js/bootstrap.bundle.min.js.map" \
   "$work/bootstrap/LICENSE" static/vendor/bootstrap/
cp "$work/htmx/dist/htmx.min.js" "$work/htmx/LICENSE" static/vendor/htmx/
cat > static/vendor/VERSIONS.txt <<TXT
bootstrap $BOOTSTRAP  (MIT, static/vendor/bootstrap/LICENSE)
htmx.org $HTMX  (0BSD, static/vendor/htmx/LICENSE)
TXT
echo "vendored: bootstrap $BOOTSTRAP, htmx $HTMX"
