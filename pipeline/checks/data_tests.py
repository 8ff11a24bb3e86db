"""The data tests that check_data runs with pytest (fixtures come from pipeline.check_data).

Each test asserts that one rule finds no problem; the assertion message is the list of
problems, so that the step can print which check failed and why.
"""

from pipeline.checks import rules


def test_columns(sample, checks):
    problems = rules.check_columns(sample, checks["columns"])
    assert not problems, "; ".join(problems)


def test_categories(sample, checks):
    problems = rules.check_categories(sample, checks["categories"])
    assert not problems, "; ".join(problems)


def test_ranges(sample, checks):
    problems = rules.check_ranges(sample, checks["ranges"])
    assert not problems, "; ".join(problems)


def test_row_count(sample, checks):
    problems = rules.check_row_count(sample, checks["rows"]["min"], checks["rows"]["max"])
    assert not problems, "; ".join(problems)


def test_no_drift(sample, reference, checks):
    if reference is None:
        # Nothing to compare with: this run's sample becomes the reference.
        return
    pvalues = rules.drift_pvalues(sample, reference, checks["columns"])
    drift = checks["drift"]
    drifted = rules.drifted_columns(pvalues, drift["alpha"], drift["correction"])
    problems = rules.describe_drift(pvalues, drifted)
    assert not problems, "; ".join(problems)
