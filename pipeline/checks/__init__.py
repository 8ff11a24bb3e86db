"""Data checks: small pure functions, run as pytest data tests by the check_data step."""
