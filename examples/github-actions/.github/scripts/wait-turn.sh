#!/usr/bin/env bash
# Waits until no psk-apply or psk-rotate run that started before this one
# is still queued, waiting for approval or running, so psk runs read and
# write the state one at a time, in the order they started.
#
# Why not a concurrency group: GitHub keeps at most one pending run per
# group and cancels the pending one when another arrives, so a reviewed
# apply queued behind a rotation could silently vanish. Runs here share no
# group and are never cancelled; each waits its turn, bounded by its job's
# timeout-minutes.
#
# Environment: RUN_ID, GITHUB_REPOSITORY, GH_TOKEN (actions: read).
set -euo pipefail

: "${RUN_ID:?}" "${GITHUB_REPOSITORY:?}"
filter=".workflow_runs[]
  | select(.status != \"completed\" and .id < $RUN_ID)
  | select(.path | test(\"psk-(apply|rotate)[.]yml\"))
  | \"\(.id) \(.name) \(.status)\""

while :; do
  ahead=$(gh api "repos/$GITHUB_REPOSITORY/actions/runs?per_page=100" --jq "$filter")
  if [ -z "$ahead" ]; then
    echo "No earlier psk run is pending: going ahead."
    exit 0
  fi
  printf 'Waiting for earlier psk runs to finish:\n%s\n' "$ahead"
  sleep "${WAIT_INTERVAL:-15}"
done
