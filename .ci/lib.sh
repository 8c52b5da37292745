# Sourced by the .ci scripts. Every check is one line of JSON in $CI_CHECKS, which
# scripts/ci-summary.mjs adds into the final "N passed, M failed" line.

# record NAME true|false
record() {
  node -e 'process.stdout.write(`${JSON.stringify({ name: process.argv[1], ok: process.argv[2] === "true" })}\n`)' \
    "$1" "$2" >>"$CI_CHECKS"
}

# record_suite NAME VITEST_REPORT EXIT_STATUS: a whole suite run counts as its tests (those of every
# vitest project in the report: sqlite and postgres)
record_suite() {
  node -e 'process.stdout.write(`${JSON.stringify({ name: process.argv[1], vitest: process.argv[2], status: Number(process.argv[3]) })}\n`)' \
    "$1" "$2" "$3" >>"$CI_CHECKS"
}

# check NAME COMMAND [ARG...]: runs the command, records and prints the outcome, returns its status
check() {
  local name=$1 start=$SECONDS status
  shift
  if "$@"; then
    record "$name" true
    echo "ok: $name ($((SECONDS - start)) s)"
  else
    status=$?
    record "$name" false
    echo "FAILED: $name (exit $status, $((SECONDS - start)) s)"
    return "$status"
  fi
}

# free_port: a TCP port nothing listens on right now
free_port() {
  node -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

# wait_port PORT [TENTHS]: until something accepts connections on 127.0.0.1:PORT (default 10 s)
wait_port() {
  local i
  for ((i = 0; i < ${2:-100}; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
