#!/bin/sh
# Entrypoint of the Relais image: one image, one role per container.
#
#   relais-entrypoint registry|referrals|notifications                 an API (port 8001/8002/8003)
#   relais-entrypoint registry-worker|referrals-worker|notifications-worker   a service's workers alone
#   relais-entrypoint migrate                                          apply the migrations, then exit
#
# Every role reads its settings from the environment (README, "Configuration"); all need
# DATABASE_URL. `exec` makes Python PID 1 of the container, so SIGTERM reaches uvicorn or the
# worker, which stop cleanly. tools/validate_deploy.py checks that each role below runs an
# existing module: keep one role per line, in the form `role) exec python ...`.
set -eu

usage() {
    cat <<'USAGE'
usage: relais-entrypoint COMMAND
  registry | referrals | notifications        serve that service's API (set RELAIS_RUN_WORKERS=false
                                              when its workers run in their own containers)
  registry-worker | referrals-worker | notifications-worker
                                              run that service's workers alone
  migrate                                     apply the database migrations to DATABASE_URL and exit
USAGE
}

if [ "$#" -eq 0 ]; then
    usage >&2
    exit 64
fi
role="$1"
shift

case "$role" in
    -h | --help | help)
        usage
        exit 0
        ;;
esac

if [ -z "${DATABASE_URL:-}" ]; then
    echo "relais-entrypoint: DATABASE_URL is not set (postgresql://user:password@host:5432/db)" >&2
    exit 64
fi

case "$role" in
    registry) exec python -m services.registry "$@" ;;
    referrals) exec python -m services.referrals "$@" ;;
    notifications) exec python -m services.notifications "$@" ;;
    registry-worker) exec python -m services.registry.worker "$@" ;;
    referrals-worker) exec python -m services.referrals.worker "$@" ;;
    notifications-worker) exec python -m services.notifications.worker "$@" ;;
    migrate) exec python -c 'import os; from shared.migrate import upgrade; upgrade(os.environ["DATABASE_URL"])' ;;
    *)
        echo "relais-entrypoint: unknown command '$role'" >&2
        usage >&2
        exit 64
        ;;
esac
