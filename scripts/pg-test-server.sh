#!/usr/bin/env bash
# A throwaway PostgreSQL server for the store tests, sourced by scripts/test.sh: a cluster in a
# temporary directory (run by the `postgres` user when this runs as root), listening on a free
# local port with TLS (a self-signed certificate for `localhost`) and password authentication,
# stopped and deleted when the calling shell exits. Exports LOSSC_TEST_PG (a superuser URL) and
# LOSSC_TEST_PG_CA (the certificate, to verify the server by).
# Installs Debian's `postgresql` if no server binaries are found.

pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postgresql openssl
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi

pg_dir="$(mktemp -d /tmp/lossc-pg.XXXXXX)"
pg_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
pg_password="$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$pg_dir"
  as_pg=(runuser -u postgres --)
fi
printf '%s\n' "$pg_password" > "$pg_dir/pwfile"
openssl req -new -x509 -days 2 -nodes -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" \
  -keyout "$pg_dir/server.key" -out "$pg_dir/server.crt" 2>/dev/null
chmod 600 "$pg_dir/server.key" "$pg_dir/pwfile"
[ "$(id -u)" = 0 ] && chown postgres "$pg_dir/server.key" "$pg_dir/server.crt" "$pg_dir/pwfile"

"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --pwfile="$pg_dir/pwfile" \
  --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$pg_dir/initdb.log" 2>&1 \
  || { cat "$pg_dir/initdb.log" >&2; exit 1; }
cat >> "$pg_dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pg_dir'
ssl = on
ssl_cert_file = '$pg_dir/server.crt'
ssl_key_file = '$pg_dir/server.key'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w start >/dev/null \
  || { cat "$pg_dir/server.log" >&2; exit 1; }

lossc_pg_stop() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap lossc_pg_stop EXIT

export LOSSC_TEST_PG="postgres://postgres:$pg_password@127.0.0.1:$pg_port/postgres"
export LOSSC_TEST_PG_CA="$pg_dir/server.crt"
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') for the store tests on 127.0.0.1:$pg_port ($pg_dir)"
