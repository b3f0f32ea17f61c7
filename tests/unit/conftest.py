import pytest

from tests.modes import umask


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def permissive_umask(request):
    """Run the test under a umask that lets new files be read by others (022) or written too (000)."""
    with umask(request.param):
        yield request.param
