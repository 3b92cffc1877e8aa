#!/bin/bash
# Entrypoint of the PostgreSQL stand-in image built by `cargo xtask standins`.
#
# Honours the environment contract of the official postgres image:
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required unless
#   POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_DB (default: the user),
#   PGDATA (default /var/lib/postgresql/data), POSTGRES_INITDB_ARGS,
#   POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), the *_FILE variants of the
#   first three, and *.sh / *.sql files in /docker-entrypoint-initdb.d/.
# The server ends up as PID 1 (every step below `exec`s), so `podman stop` reaches it.
set -Eeuo pipefail

# file_env VAR [DEFAULT]: VAR, or the contents of the file named by VAR_FILE.
file_env() {
	local var="$1" file_var="${1}_FILE" def="${2:-}"
	if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		echo >&2 "error: both $var and $file_var are set (but are exclusive)"
		exit 1
	fi
	local val="$def"
	if [ -n "${!var:-}" ]; then
		val="${!var}"
	elif [ -n "${!file_var:-}" ]; then
		val="$(< "${!file_var}")"
	fi
	export "$var"="$val"
	unset "$file_var"
}

# `postgres -c fsync=off` style: options only means "run the server with these options".
if [ "$#" -eq 0 ] || [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
	exec "$@"
fi

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

if [ "$(id -u)" = '0' ]; then
	# As root: prepare the folders, then run this script again as the postgres user.
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres "$PGDATA"
	chmod 700 "$PGDATA"
	chown postgres:postgres /var/run/postgresql
	chmod 3777 /var/run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	file_env POSTGRES_USER postgres
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_DB "$POSTGRES_USER"
	export POSTGRES_HOST_AUTH_METHOD="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
	export POSTGRES_INITDB_ARGS="${POSTGRES_INITDB_ARGS:-}"

	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
		cat >&2 <<-'EOM'
			Error: Database is uninitialized and superuser password is not specified.
			       You must specify POSTGRES_PASSWORD to a non-empty value for the
			       superuser. For example, "-e POSTGRES_PASSWORD=password" on "podman run".

			       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
			       connections without a password. This is *not* recommended.
		EOM
		exit 1
	fi

	# The password goes through a file descriptor, never onto a command line.
	if [ -n "$POSTGRES_PASSWORD" ]; then
		eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"$POSTGRES_INITDB_ARGS"
	else
		eval 'initdb --username="$POSTGRES_USER" '"$POSTGRES_INITDB_ARGS"
	fi

	# Our own pg_hba.conf: local socket trusted, every TCP connection (127.0.0.1 included) by
	# POSTGRES_HOST_AUTH_METHOD.
	{
		echo '# written by the stand-in entrypoint'
		echo 'local all all trust'
		echo "host all all all $POSTGRES_HOST_AUTH_METHOD"
		echo 'local replication all trust'
		echo "host replication all all $POSTGRES_HOST_AUTH_METHOD"
	} > "$PGDATA/pg_hba.conf"
	printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"

	# A temporary server on the unix socket only: nobody outside can connect before we are done.
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" -w start

	psql_init=(psql -v ON_ERROR_STOP=1 --no-psqlrc --host=/var/run/postgresql --username="$POSTGRES_USER" --no-password)
	if [ "$POSTGRES_DB" != 'postgres' ]; then
		exists="$("${psql_init[@]}" --dbname=postgres --set db="$POSTGRES_DB" --tuples-only --no-align <<-'EOSQL'
			SELECT 1 FROM pg_database WHERE datname = :'db' ;
		EOSQL
		)"
		if [ -z "$exists" ]; then
			"${psql_init[@]}" --dbname=postgres --set db="$POSTGRES_DB" <<-'EOSQL'
				CREATE DATABASE :"db" ;
			EOSQL
			echo
		fi
	fi

	shopt -s nullglob
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sh) echo "$0: running $f"; bash "$f" ;;
			*.sql) echo "$0: running $f"; "${psql_init[@]}" --dbname="$POSTGRES_DB" -f "$f"; echo ;;
			*) echo "$0: ignoring $f" ;;
		esac
	done
	shopt -u nullglob

	pg_ctl -D "$PGDATA" -m fast -w stop
	unset PGPASSWORD

	echo
	echo 'PostgreSQL init process complete; ready for start up.'
	echo
else
	echo
	echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
	echo
fi

exec "$@"
