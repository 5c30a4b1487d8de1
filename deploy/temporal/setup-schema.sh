#!/bin/sh
# Creates Temporal's two PostgreSQL databases if missing and migrates their schemas to the
# version this admin-tools image ships. Safe to run on every start: setup-schema -v 0.0
# leaves an existing version alone and update-schema applies only what is missing.
#
# Runs in temporalio/admin-tools (docker-compose.yml, service temporal-schema).
# Environment: POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, and SQL_PASSWORD (read by
# temporal-sql-tool as its --password).
set -eu

: "${POSTGRES_HOST:?}" "${POSTGRES_PORT:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"

SCHEMA_DIR=${TEMPORAL_SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}

sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_HOST" -p "$POSTGRES_PORT" \
    -u "$POSTGRES_USER" "$@"
}

# setup_database DATABASE SCHEMA (SCHEMA: temporal or visibility, a directory under SCHEMA_DIR)
setup_database() {
  db=$1
  schema=$2
  echo "temporal-schema: database $db"
  # Fails when the database exists already; setup-schema below fails if it really is missing.
  if ! sql_tool --db "$db" create-database; then
    echo "temporal-schema: $db not created (it exists already, or see the error above)"
  fi
  sql_tool --db "$db" setup-schema -v 0.0
  sql_tool --db "$db" update-schema -d "$SCHEMA_DIR/$schema/versioned"
}

setup_database temporal temporal
setup_database temporal_visibility visibility

echo "temporal-schema: done"
