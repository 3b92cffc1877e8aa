#!/bin/bash
# Entrypoint of the Redis stand-in image built by `cargo xtask standins`.
#
# Runs redis-server as PID 1 (so `podman stop` reaches it), listening on every address, with
# persistence off: a throw-away cache for tests. Extra arguments are appended (later options
# win), and `podman run IMAGE --port 7000` style arguments are understood like the official image.
set -Eeuo pipefail

if [ "$#" -eq 0 ] || [ "${1:0:1}" = '-' ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

if [ "$1" != 'redis-server' ]; then
	exec "$@"
fi
shift

# A configuration file must come first on redis-server's command line.
conf=()
if [ "$#" -gt 0 ] && [ "${1%.conf}" != "$1" ]; then
	conf=("$1")
	shift
fi
set -- redis-server "${conf[@]}" --bind 0.0.0.0 --protected-mode no --save "" --appendonly no "$@"

if [ "$(id -u)" = '0' ]; then
	exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
