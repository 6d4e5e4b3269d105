"""What the tests, the demo and the bench share to talk to a hub from outside: a small hub
client (`devkit.client`) and a webhook receiver (`devkit.receiver`).

Not part of the services: nothing under `services/` or `shared/` imports it (import-linter
contract "The services and shared do not import the devkit")."""
