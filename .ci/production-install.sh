#!/usr/bin/env bash
# The production install check, run by .ci/run after `npm ci` (needs the dev install for the build).
# Builds dist/, packs what package.json "files" ships (npm pack), unpacks it into an empty
# directory with the lockfile, installs it as production does (npm ci --omit=dev
# --strict-allow-scripts: no TypeScript, no tsx, no esbuild), and runs the installed CLI against a
# private redis-server, a fresh database and the Stripe emulator (run from the dev tree):
# simmeter --version, a short simmeter start, stripe setup, doctor --json. Each step is one check in
# $CI_CHECKS (see lib.sh); the script stops at the first step that leaves nothing to check.
set -uo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh
: "${CI_CHECKS:?run from .ci/run, or set CI_CHECKS to a file for the check lines}"
ROOT=$PWD

WORK=$(mktemp -d -t simmeter-prod.XXXXXX)
REDIS_PID=""
APP_PID=""
EMU_PID=""
cleanup() {
  if [ -n "$APP_PID" ]; then
    kill -KILL "$APP_PID" 2>/dev/null
    wait "$APP_PID" 2>/dev/null
  fi
  if [ -n "$EMU_PID" ]; then
    kill "$EMU_PID" 2>/dev/null
    wait "$EMU_PID" 2>/dev/null
  fi
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null
    wait "$REDIS_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== production install (in $WORK)"
check "npm run build" npm run --silent build || exit 1
pack() { npm pack --silent --ignore-scripts --pack-destination "$WORK" >/dev/null; }
check "npm pack (what package.json \"files\" ships)" pack || exit 1
APP=$WORK/app
mkdir -p "$APP"
tar -xzf "$WORK"/simmeter-*.tgz -C "$APP" --strip-components=1
cp package-lock.json "$APP/"
cd "$APP" || exit 1

check "production install: npm ci --omit=dev --strict-allow-scripts" \
  npm ci --omit=dev --no-audit --no-fund --strict-allow-scripts || exit 1

# tsx and esbuild must not be there (nothing may run TypeScript at run time), nor the test and
# build tools. TypeScript itself may be: @bull-board/api -> valibot declares it an optional peer,
# and npm keeps such "devOptional" packages unless --omit=optional drops all optional ones (which
# would also drop msgpackr's prebuilt native extension). Nothing in production loads it.
no_dev_packages() {
  local found=0 p
  for p in tsx esbuild vitest drizzle-kit @biomejs/biome fast-check autocannon; do
    if [ -e "node_modules/$p" ]; then
      echo "node_modules/$p is in the production install"
      found=1
    fi
  done
  [ -e node_modules/typescript ] && echo "note: node_modules/typescript is present (an optional peer)"
  return "$found"
}
check "the production install holds no tsx, esbuild or test and build tools" no_dev_packages

only_runtime_files() {
  local bad=0 d
  for d in src test scripts .ci; do
    if [ -e "$d" ]; then
      echo "$d/ was packed"
      bad=1
    fi
  done
  [ -f dist/cli/main.js ] || { echo "dist/cli/main.js was not packed"; bad=1; }
  ls drizzle/*.sql >/dev/null 2>&1 || { echo "drizzle/*.sql (migrations) were not packed"; bad=1; }
  return "$bad"
}
check "the package ships bin/, dist/ and drizzle/, not src/, test/ or scripts/" only_runtime_files

# The CLI gets no environment from CI beyond these: a STRIPE_SECRET_KEY or REDIS_URL in the CI
# environment must not reach a real service.
run_cli() {
  env -i PATH="$PATH" HOME="$WORK" TZ=UTC LOG_LEVEL=warn \
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT" DATABASE_PATH="$WORK/state/simmeter.db" \
    "$@"
}

# A Redis set up as the deployment files set theirs up: AOF, noeviction.
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --save "" --appendonly yes \
  --appendfsync everysec --maxmemory-policy noeviction >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
check "a private redis-server answers on port $REDIS_PORT" wait_port "$REDIS_PORT" ||
  cat "$WORK/redis.log"

version_matches() {
  local want got
  want=$(node -p 'require("./package.json").version')
  got=$(run_cli node bin/simmeter.mjs --version) || return 1
  echo "simmeter --version: $got"
  [ "$got" = "$want" ] || [ "$got" = "simmeter $want" ] || {
    echo "expected $want"
    return 1
  }
}
check "simmeter --version prints package.json's version" version_matches

# Stripe: the emulator, run from the dev tree, stands in (CI has no Stripe account).
EMU_PORT=$(free_port)
(cd "$ROOT" && exec node --import tsx scripts/stripe-emulator.ts --port "$EMU_PORT" \
  --api-key sk_test_ci --accept-any-customer) >"$WORK/emulator.log" 2>&1 &
EMU_PID=$!
check "the Stripe emulator answers on port $EMU_PORT" wait_port "$EMU_PORT" 300 ||
  cat "$WORK/emulator.log"
APP_ENV=(STRIPE_SECRET_KEY=sk_test_ci STRIPE_API_BASE="http://127.0.0.1:$EMU_PORT"
  ALLOW_UNSIGNED=true)

# simmeter start loads what the other commands do not (the receiver, the worker thread), and its
# worker creates the database that doctor then checks: run it until /healthz answers, then stop it.
starts_and_stops() {
  local port admin_port status
  port=$(free_port)
  admin_port=$(free_port)
  # Not through run_cli: $! must be the process itself (env execs node), so SIGTERM reaches it.
  env -i PATH="$PATH" HOME="$WORK" TZ=UTC LOG_LEVEL=warn \
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT" DATABASE_PATH="$WORK/state/simmeter.db" \
    "${APP_ENV[@]}" HOST=127.0.0.1 PORT="$port" ADMIN_HOST=127.0.0.1 \
    ADMIN_PORT="$admin_port" SHUTDOWN_TIMEOUT_MS=5000 \
    node bin/simmeter.mjs start >"$WORK/start.log" 2>&1 &
  APP_PID=$!
  if ! node "$ROOT/.ci/wait-healthz.mjs" 30000 "http://127.0.0.1:$admin_port/healthz" \
    "http://127.0.0.1:$port/healthz"; then
    cat "$WORK/start.log"
    return 1
  fi
  kill -TERM "$APP_PID"
  wait "$APP_PID"
  status=$?
  APP_PID=""
  [ "$status" -eq 0 ] || {
    echo "simmeter start exited $status after SIGTERM"
    cat "$WORK/start.log"
    return 1
  }
}
check "simmeter start from the production install serves /healthz and stops cleanly on SIGTERM" \
  starts_and_stops

check "simmeter stripe setup (against the emulator)" \
  run_cli "${APP_ENV[@]}" node bin/simmeter.mjs stripe setup

# Doctor needs Redis, the database `start` created, and a Stripe API for its Stripe checks. It
# exits 1 when any check fails, so its exit status is printed, not required: what is checked is
# that it runs from the production install, prints valid JSON, and finds Redis and the database ok.
run_cli "${APP_ENV[@]}" node bin/simmeter.mjs doctor --json >"$WORK/doctor.json" 2>"$WORK/doctor.err"
DOCTOR_STATUS=$?
echo "simmeter doctor --json exited $DOCTOR_STATUS (0: no check failed; 1: some check failed)"
cat "$WORK/doctor.json" "$WORK/doctor.err"
check "simmeter doctor --json prints valid JSON" \
  node -e 'JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8"))' "$WORK/doctor.json"
check "simmeter doctor exits 0 or 1 (checks ran), not 2 (configuration) or a crash" \
  test "$DOCTOR_STATUS" -le 1
check "simmeter doctor --json reports the redis and database checks ok" \
  node "$ROOT/.ci/doctor-ok.mjs" "$WORK/doctor.json" redis database
exit 0
