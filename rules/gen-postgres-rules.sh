#!/usr/bin/env bash
# Generates rules/postgres.toml from a real PostgreSQL catalog.
#
#   bash rules/gen-postgres-rules.sh rules/postgres.toml     # write the file
#   bash rules/gen-postgres-rules.sh                         # print to stdout
#
# The server is chosen with the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE);
# defaults: 127.0.0.1, 5432, postgres, postgres.
#
# What it emits:
# - every function in pg_catalog and information_schema with its pg_proc.provolatile
#   class (for an overloaded name, the most volatile overload wins);
# - the SQL-standard keyword "functions" (current_date, current_user, coalesce, …) that
#   are not pg_proc entries but parse as calls;
# - curated overrides, each with a reason: functions the catalog calls stable whose
#   answer depends on the pooled connection or the transaction that runs them;
# - the volatile system relations.
# Every curated name is checked against the catalog, so a typo fails the run.
set -euo pipefail

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}" PGDATABASE="${PGDATABASE:-postgres}"
out="${1:-/dev/stdout}"

psql_rows() { psql -X -v ON_ERROR_STOP=1 -At -F $'\t' -c "$1"; }

# name <TAB> reason: stable in the catalog, volatile for a connection pooler.
overrides=$(cat <<'EOF'
pg_backend_pid	the backend process id differs between pooled origin connections
inet_client_addr	the client address is warpdrive's, and differs per pooled connection
inet_client_port	the client port differs per pooled origin connection
inet_server_addr	the server address can differ per pooled origin connection
inet_server_port	the server port can differ per pooled origin connection
txid_current	assigns a transaction id: each call is a new transaction's id
txid_current_if_assigned	reads the running transaction's id
pg_current_xact_id	assigns a transaction id: each call is a new transaction's id
pg_current_xact_id_if_assigned	reads the running transaction's id
txid_current_snapshot	depends on the transactions running at the moment
pg_current_snapshot	depends on the transactions running at the moment
current_setting	reads session settings, not all of which are part of the cache key
pg_my_temp_schema	the temporary schema belongs to one origin connection
pg_is_other_temp_schema	the temporary schema belongs to one origin connection
pg_trigger_depth	depends on the trigger nesting of the running statement
pg_conf_load_time	changes when the server reloads its configuration
pg_jit_available	depends on the origin connection's JIT settings
EOF
)

# Everything in the pg_stat_* function family reads live statistics.
stat_reason="reads live server statistics, which change without any write through warpdrive"

keyword_clock="SQL keyword function: moves with the clock, fixed within a transaction"
keyword_session="SQL keyword function: depends on the session's role, database or search_path, all part of the cache key"
keyword_syntax="SQL syntax that reads like a call (not a pg_proc entry); its arguments are analysed on their own"
keywords=$(cat <<EOF
array	immutable	$keyword_syntax
coalesce	immutable	$keyword_syntax
greatest	immutable	$keyword_syntax
grouping	immutable	$keyword_syntax
least	immutable	$keyword_syntax
nullif	immutable	$keyword_syntax
row	immutable	$keyword_syntax
current_date	stable	$keyword_clock
current_time	stable	$keyword_clock
current_timestamp	stable	$keyword_clock
localtime	stable	$keyword_clock
localtimestamp	stable	$keyword_clock
current_catalog	stable	$keyword_session
current_role	stable	$keyword_session
current_schema	stable	$keyword_session
current_user	stable	$keyword_session
session_user	stable	$keyword_session
system_user	stable	$keyword_session
user	stable	$keyword_session
EOF
)

# Relations whose rows change without a write warpdrive sees, or differ per session.
relations=$(cat <<'EOF'
pg_stat_*	statistics views: change without any write through warpdrive
pg_statio_*	I/O statistics views: change without any write through warpdrive
pg_locks	the lock table changes with every transaction on the server
pg_prepared_xacts	prepared transactions come and go without a write through warpdrive
pg_prepared_statements	lists the statements of one origin connection
pg_cursors	lists the cursors of one origin connection
pg_settings	shows the settings of the origin connection that runs the query
pg_file_settings	changes when the configuration files change
pg_hba_file_rules	changes when pg_hba.conf changes
pg_ident_file_mappings	changes when pg_ident.conf changes
pg_backend_memory_contexts	memory of the origin connection that runs the query
pg_replication_slots	replication state changes continuously
pg_replication_origin_status	replication state changes continuously
pg_shmem_allocations	shared memory use changes continuously
pg_sequences	last_value moves with nextval(), which is not a write warpdrive sees
EOF
)

version=$(psql_rows "SELECT version()")

# Check the curated names exist here.
missing=""
while IFS=$'\t' read -r name _; do
  [ -n "$name" ] || continue
  n=$(psql_rows "SELECT count(*) FROM pg_proc WHERE proname = '$name'")
  [ "$n" != 0 ] || missing="$missing function:$name"
done <<< "$overrides"
while IFS=$'\t' read -r name _; do
  case "$name" in *'*') continue ;; esac
  n=$(psql_rows "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pg_catalog' AND c.relname = '$name'")
  [ "$n" != 0 ] || missing="$missing relation:$name"
done <<< "$relations"
if [ -n "$missing" ]; then
  echo "gen-postgres-rules: not in this server's catalog:$missing" >&2
  exit 1
fi

# One line per function: name <TAB> class <TAB> reason (empty for the catalog's class).
catalog=$(psql_rows "
  SELECT proname,
         CASE max(CASE provolatile WHEN 'v' THEN 3 WHEN 's' THEN 2 ELSE 1 END)
           WHEN 3 THEN 'volatile' WHEN 2 THEN 'stable' ELSE 'immutable' END
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname IN ('pg_catalog', 'information_schema')
    AND proname = lower(proname)  -- mixed-case names are trigger functions, never called in a query
  GROUP BY proname")

toml_key() {
  if [[ "$1" =~ ^[A-Za-z0-9_-]+$ ]]; then printf '%s' "$1"; else printf '"%s"' "$1"; fi
}

{
  cat <<EOF
# Volatility of PostgreSQL functions and relations, for warpdrive's analyzer.
# Generated; do not edit by hand. Regenerate with:
#   bash rules/gen-postgres-rules.sh rules/postgres.toml
# Classes come from pg_proc.provolatile (i = immutable, s = stable, v = volatile; for an
# overloaded name the most volatile overload). Entries with a reason are curated in the
# generator: SQL keyword functions, and functions the catalog calls stable whose answer
# depends on the pooled connection or the transaction that runs them.

[meta]
dialect = "postgres"
source = "$version; pg_proc via rules/gen-postgres-rules.sh"

[functions]
EOF
  {
    printf '%s\n' "$catalog" | awk -F'\t' '{ print $1 "\t" $2 "\t" }'
    printf '%s\n' "$keywords"
  } | awk -F'\t' -v stat_reason="$stat_reason" -v overrides="$overrides" '
      BEGIN {
        n = split(overrides, lines, "\n")
        for (i = 1; i <= n; i++) { split(lines[i], f, "\t"); if (f[1] != "") why[f[1]] = f[2] }
      }
      {
        name = $1; class = $2; reason = $3
        if (name in why) { class = "volatile"; reason = why[name] }
        else if (name ~ /^pg_stat_/ && class != "volatile") { class = "volatile"; reason = stat_reason }
        # A keyword that is also in pg_proc keeps one entry: the catalog one, with the reason.
        if (name in seen) { if (reason != "" && seenreason[name] == "") { seenreason[name] = reason }; next }
        seen[name] = class; seenreason[name] = reason; order[++count] = name
      }
      END { for (i = 1; i <= count; i++) { n = order[i]; print n "\t" seen[n] "\t" seenreason[n] } }' \
    | LC_ALL=C sort -t$'\t' -k1,1 \
    | while IFS=$'\t' read -r name class reason; do
        if [ -n "$reason" ]; then
          printf '%s = { class = "%s", reason = "%s" }\n' "$(toml_key "$name")" "$class" "$reason"
        else
          printf '%s = "%s"\n' "$(toml_key "$name")" "$class"
        fi
      done
  printf '\n[relations]\n'
  printf '%s\n' "$relations" | LC_ALL=C sort -t$'\t' -k1,1 | while IFS=$'\t' read -r name reason; do
    printf '"%s" = { class = "volatile", reason = "%s" }\n' "$name" "$reason"
  done
} > "$out"
