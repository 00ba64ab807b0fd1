#!/usr/bin/env bash
# Fails if sotto-server can link sotto-e2ee (the crate that holds group
# secrets). The server must only depend on sotto-delivery (public state).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! cargo metadata --no-deps --format-version 1 | grep -q '"name":"sotto-server"'; then
  echo "check-no-secrets: no sotto-server package yet; nothing to check"
  exit 0
fi
tree="$(cargo tree -p sotto-server -e normal --prefix none)"
if grep -q '^sotto-e2ee ' <<<"$tree"; then
  echo "check-no-secrets: FAIL: sotto-server depends on sotto-e2ee:" >&2
  cargo tree -p sotto-server -e normal -i sotto-e2ee >&2 || true
  exit 1
fi
echo "check-no-secrets: ok: sotto-server does not depend on sotto-e2ee"
