"""`python -m services.notifications`: serve the notifications API on NOTIFICATIONS_PORT."""

from services.notifications.app import create_app
from shared.worker import serve

if __name__ == "__main__":
    serve(create_app, name="notifications", port_of=lambda s: s.notifications_port)
