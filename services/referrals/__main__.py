"""`python -m services.referrals`: serve the referrals API on REFERRALS_PORT."""

from services.referrals.app import create_app
from shared.worker import serve

if __name__ == "__main__":
    serve(create_app, name="referrals", port_of=lambda s: s.referrals_port)
