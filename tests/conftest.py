import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL server for this test worker (tests/pg.py); skips, saying why, where there is none."""
    from tests import pg

    cluster = pg.cluster_or_skip()
    yield cluster
    cluster.close()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A fresh database of :func:`pg_cluster`: its postgresql:// URL."""
    return pg_cluster.database()
