"""The coordination secretariat's dashboard (SPEC 12): a static page in `static/` that reads
the referrals service's own API with an admin key, served by `routes`."""
