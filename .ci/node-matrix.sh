#!/usr/bin/env bash
# The suite on more Node lines, run by .ci/run after the main suite:
#   .ci/node-matrix.sh VERSION...
# For each version: the official Node.js binary as npm hosts it (the package node-linux-<arch>,
# which the `node` npm package installs; no install script runs), a copy of this tree,
# `npm ci --strict-allow-scripts` under that Node (better-sqlite3 compiles against the headers in
# the same package), then `npm test`. The run's tests count into the final line like the main run.
# Time limits (seconds): CI_NODE_INSTALL_TIMEOUT (default 420) and CI_NODE_SUITE_TIMEOUT (1800: the suite runs both test
# projects, sqlite and postgres; 771 s on Node 20 on 2026-12-02, and Node 22 ran past 900 s).
set -uo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
: "${CI_CHECKS:?run from .ci/run, or set CI_CHECKS to a file for the check lines}"
OUT=$(dirname "$CI_CHECKS")
ARCH=$(node -p process.arch)
INSTALL_TIMEOUT=${CI_NODE_INSTALL_TIMEOUT:-420}
SUITE_TIMEOUT=${CI_NODE_SUITE_TIMEOUT:-1800}

for version in "$@"; do
  dir=$(mktemp -d -t "simmeter-node$version.XXXXXX")
  # mktemp makes the directory 0700; a test runs the CLI as `nobody` (read-only access checks), and
  # nobody must be able to reach this node binary and tree, as with the system node on Node 20.
  chmod 755 "$dir"
  echo "== Node $version (in $dir)"
  if check "Node $version from the npm registry (node-linux-$ARCH@$version)" \
    timeout 300 npm install --silent --no-save --no-audit --no-fund --ignore-scripts \
    --prefix "$dir/node" "node-linux-$ARCH@$version"; then
    nodedir=$dir/node/node_modules/node-linux-$ARCH
    mkdir "$dir/tree"
    # Tracked and new (not ignored) files: what a commit of this tree would hold.
    git ls-files -z --cached --others --exclude-standard |
      tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$dir/tree"
    (
      cd "$dir/tree" || exit 1
      export PATH="$nodedir/bin:$PATH" npm_config_nodedir="$nodedir"
      check "Node $version: node --version is v$version" test "$(node --version)" = "v$version" ||
        exit 1
      check "Node $version: npm ci --strict-allow-scripts" \
        timeout "$INSTALL_TIMEOUT" npm ci --no-audit --no-fund --strict-allow-scripts || exit 1
      rm -f .vitest-results.json
      timeout --kill-after=30 "$SUITE_TIMEOUT" npm test
      status=$?
      [ "$status" -eq 124 ] && echo "npm test on Node $version: timed out after $SUITE_TIMEOUT s"
      [ -f .vitest-results.json ] && cp .vitest-results.json "$OUT/vitest-node$version.json"
      record_suite "npm test on Node $version" "$OUT/vitest-node$version.json" "$status"
    )
  fi
  rm -rf "$dir"
done
exit 0
