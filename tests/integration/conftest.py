import pytest

from tests.integration.harness import Stack


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def stack(request, tmp_path):
    """Real processes for one test, always stopped; their logs are printed when the test fails."""
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(s.logs())
        s.close()


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory):
    """One master, web tier and agent for a whole module of tests that do not disturb each other."""
    s = Stack(tmp_path_factory.mktemp("stack"))
    try:
        s.up(1)
        yield s
    finally:
        s.close()


@pytest.fixture
def cluster(tmp_path, pg_url):
    """Two masters on one PostgreSQL (the first leading, the second standing by) and a web tier knowing both
    (tests/integration/masters.py): ``(stack, masters)``."""
    from tests.integration.masters import Masters

    stack = Stack(tmp_path)
    masters = Masters(stack, pg_url)
    try:
        masters.up()
        yield stack, masters
    finally:
        stack.close()
