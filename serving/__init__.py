"""The decision API: catalog, eligibility, contact policy, scoring, arbitration, metrics."""
