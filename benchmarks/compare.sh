#!/usr/bin/env bash
# Save a pytest-benchmark baseline, or compare against the last one and fail on a >15% slowdown.
#
#   benchmarks/compare.sh save      # on main (or before your change): store a baseline
#   benchmarks/compare.sh           # after your change: compare with the newest baseline
#   benchmarks/compare.sh compare 0003 -k admit   # a given baseline id, extra pytest args
#
# Baselines live in benchmarks/.benchmarks/<machine>/ (gitignored) and only mean something on the
# machine that made them.
set -euo pipefail
cd "$(dirname "$0")/.."

threshold="${BENCH_FAIL_THRESHOLD:-mean:15%}"
mode=compare
if [ $# -gt 0 ] && { [ "$1" = save ] || [ "$1" = compare ]; }; then mode="$1"; shift; fi

storage=benchmarks/.benchmarks
common=(benchmarks/ --benchmark-enable --benchmark-only -p no:cacheprovider
        "--benchmark-storage=file://$storage"
        --benchmark-columns=min,mean,median,ops,rounds --benchmark-sort=name)

case "$mode" in
  save)
    exec python -m pytest "${common[@]}" --benchmark-autosave "$@"
    ;;
  compare)
    baseline=()
    if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]{4}$ ]]; then baseline=("--benchmark-compare=$1"); shift
    else baseline=("--benchmark-compare"); fi
    if ! compgen -G "$storage/*/*.json" > /dev/null; then
      echo "no saved baseline in $storage/: run 'benchmarks/compare.sh save' first (e.g. on main)" >&2
      exit 2
    fi
    exec python -m pytest "${common[@]}" "${baseline[@]}" "--benchmark-compare-fail=$threshold" "$@"
    ;;
  *)
    echo "usage: $0 [save|compare [NNNN]] [pytest args...]" >&2
    exit 2
    ;;
esac
