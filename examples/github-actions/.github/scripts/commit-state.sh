#!/usr/bin/env bash
# Commits the state psk wrote (psk.state.json, and its journal if psk was
# cut off) onto the branch, after `psk apply` ran in another job of the
# same run. The branch may have moved while psk worked (any merge): the
# commit is rebased onto it and pushed again, a few times. When it still
# cannot land (the branch is protected, or someone else changed the state),
# the run fails and says how to restore the state from the artifact the
# apply job kept: the freshly sealed PSKs are never only on the runner.
#
# Environment: MESSAGE (the commit message), ARTIFACT (the artifact that
# holds the state), RUN_ID, GITHUB_REPOSITORY, optionally BRANCH (default
# main), REMOVE (files the commit deletes, e.g. a spent plan) and GH_TOKEN
# (for the push; the checkout keeps no credentials).
set -euo pipefail

: "${MESSAGE:?}" "${ARTIFACT:?}" "${RUN_ID:?}" "${GITHUB_REPOSITORY:?}"
branch=${BRANCH:-main}

git config user.name "github-actions[bot]"
git config user.email "41898282+github-actions[bot]@users.noreply.github.com"

# The token reaches git for the fetch and push below only, never the
# repository's config.
remote() {
  if [ -n "${GH_TOKEN:-}" ]; then
    local auth
    auth=$(printf 'x-access-token:%s' "$GH_TOKEN" | base64 | tr -d '\n')
    echo "::add-mask::$auth"
    git -c "http.extraheader=AUTHORIZATION: basic $auth" "$@"
  else
    git "$@"
  fi
}

restore="gh run download $RUN_ID --repo $GITHUB_REPOSITORY --name $ARTIFACT --dir . && git add psk.state.json && { [ ! -e psk.state.json.journal ] || git add -f psk.state.json.journal; } && git commit -m 'psk: restore the state of run $RUN_ID' && git push"

fail() {
  local text="The new state did not reach $branch: $1. It is kept in the artifact $ARTIFACT of run $RUN_ID (90 days). Apply nothing until it is restored; from a clone of $branch, run: $restore"
  echo "::error title=psk state not committed::$text"
  if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    local fence='```'
    printf '### psk: the new state is not in the repository\n\n%s\n\n%ssh\n%s\n%s\n' \
      "$1. It is kept in the artifact $ARTIFACT of this run (90 days). Apply nothing until it is restored; from a clone of $branch, run:" \
      "$fence" "$restore" "$fence" >> "$GITHUB_STEP_SUMMARY"
  fi
  exit 1
}

[ -e psk.state.json ] || fail "the artifact holds no psk.state.json"
git add psk.state.json
if [ -e psk.state.json.journal ]; then git add -f psk.state.json.journal; fi
for f in ${REMOVE:-}; do git rm -q --cached --ignore-unmatch -- "$f"; done
if git diff --cached --quiet; then
  echo "The state did not change."
  exit 0
fi
git commit -q -m "$MESSAGE"

why="the push was refused"
for attempt in 1 2 3 4 5; do
  if remote push -q origin "HEAD:refs/heads/$branch"; then
    echo "The new state is on $branch ($(git rev-parse --short HEAD))."
    exit 0
  fi
  # Most often the branch moved during the apply: put this commit on top
  # of what landed, and push again.
  remote fetch -q origin "$branch" || { why="fetching $branch failed"; continue; }
  if ! git rebase -q FETCH_HEAD; then
    git rebase --abort || true
    fail "rebasing onto $branch conflicts (psk.state.json was changed there too)"
  fi
  sleep "$attempt"
done
fail "$why after 5 attempts (is $branch protected against pushes from GitHub Actions?)"
