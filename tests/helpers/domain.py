"""Values outside the diamonds model's domain (as the shipped config and the fitted Pipeline
give it), with what the 400 says of each: the service's and the clients' domain tests."""

from __future__ import annotations

CUTS = "'Fair', 'Good', 'Very Good', 'Premium', 'Ideal'"
# (field, value, what the 400 says of it); the diamonds model's domain, as the shipped
# config and the fitted Pipeline give it.
OUTSIDE = [
    ("cut", "Superb", f"'Superb' is not one of {CUTS}"),
    ("cut", "ideal", f"'ideal' is not one of {CUTS}"),
    ("carat", -5, "-5 is out of the model's range (it takes at least 0.1 and at most 6)"),
]
IDS = ["unknown-category", "wrong-case", "negative-carat"]
