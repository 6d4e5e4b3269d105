"""`python -m services.registry`: serve the registry API on REGISTRY_PORT."""

from services.registry.app import create_app
from shared.worker import serve

if __name__ == "__main__":
    serve(create_app, name="registry", port_of=lambda s: s.registry_port)
