#!/bin/sh
# Waits for the Temporal server, creates the namespace if it is missing and registers
# Nudge's custom search attributes (nudge/naming.py) if they are missing. Safe to run on
# every start: it only adds what is not there, and fails if an attribute exists with
# another type.
#
# Runs in temporalio/admin-tools (docker-compose.yml, service temporal-setup).
# Environment: TEMPORAL_ADDRESS (host:port), TEMPORAL_NAMESPACE, TEMPORAL_NAMESPACE_RETENTION
# (how long closed workflows stay visible, e.g. 720h).
set -eu

ADDRESS=${TEMPORAL_ADDRESS:-temporal:7233}
NAMESPACE=${TEMPORAL_NAMESPACE:-default}
RETENTION=${TEMPORAL_NAMESPACE_RETENTION:-720h}
ATTEMPTS=${SETUP_ATTEMPTS:-60}
PAUSE=${SETUP_PAUSE_SECONDS:-2}

tctl() {
  temporal --address "$ADDRESS" "$@"
}

# retry DESCRIPTION COMMAND...: a fresh server (or its namespace cache) may need a moment.
retry() {
  what=$1
  shift
  attempt=1
  until "$@"; do
    if [ "$attempt" -ge "$ATTEMPTS" ]; then
      echo "temporal-setup: gave up: $what" >&2
      return 1
    fi
    echo "temporal-setup: not yet ($what), attempt $attempt of $ATTEMPTS"
    attempt=$((attempt + 1))
    sleep "$PAUSE"
  done
}

ensure_namespace() {
  if tctl operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; then
    echo "temporal-setup: namespace $NAMESPACE exists"
    return 0
  fi
  tctl operator namespace create --namespace "$NAMESPACE" --retention "$RETENTION" &&
    echo "temporal-setup: namespace $NAMESPACE created (retention $RETENTION)"
}

# Prints the type of a registered search attribute, nothing if it is not registered.
search_attribute_type() {
  tctl operator search-attribute list --namespace "$NAMESPACE" |
    awk -v name="$1" '$1 == name { print $2 }'
}

# ensure_search_attribute NAME TYPE
ensure_search_attribute() {
  name=$1
  type=$2
  current=$(search_attribute_type "$name") || return 1
  if [ -z "$current" ]; then
    tctl operator search-attribute create --namespace "$NAMESPACE" --name "$name" --type "$type" ||
      return 1
    current=$(search_attribute_type "$name") || return 1
    [ -n "$current" ] || return 1
    echo "temporal-setup: search attribute $name ($type) registered"
  fi
  if [ "$current" != "$type" ]; then
    echo "temporal-setup: search attribute $name is $current, Nudge needs $type" >&2
    exit 1
  fi
}

retry "cluster health at $ADDRESS" tctl operator cluster health
retry "namespace $NAMESPACE" ensure_namespace

# Keep in step with nudge.naming.ALL_SEARCH_ATTRIBUTES (tests/test_compose.py checks).
retry "search attribute NudgeTenant" ensure_search_attribute NudgeTenant Keyword
retry "search attribute NudgeKind" ensure_search_attribute NudgeKind Keyword
retry "search attribute NudgeFollowUp" ensure_search_attribute NudgeFollowUp Keyword
retry "search attribute NudgeRecord" ensure_search_attribute NudgeRecord Keyword
retry "search attribute NudgeJourney" ensure_search_attribute NudgeJourney Keyword
retry "search attribute NudgeContact" ensure_search_attribute NudgeContact Keyword
retry "search attribute NudgeCampaign" ensure_search_attribute NudgeCampaign Keyword

echo "temporal-setup: done"
