#!/bin/sh
# Entrypoint of the registry stand-in image built by `cargo xtask standins`.
#
# Debian's docker-registry package (distribution 2.8) in place of the official registry:2 image,
# with its command-line contract: a configuration file as the only argument (the default, from
# CMD, is /etc/docker/registry/config.yml) serves it; `serve`, `garbage-collect`, `help` or an
# option go to the registry binary; anything else runs as given. The registry ends up as PID 1
# (`exec`), so a stop signal reaches it.
set -eu

case "${1:-}" in
	*.yml | *.yaml | *.json)
		set -- docker-registry serve "$@"
		;;
	serve | garbage-collect | help | -*)
		set -- docker-registry "$@"
		;;
	'')
		set -- docker-registry serve /etc/docker/registry/config.yml
		;;
esac

exec "$@"
