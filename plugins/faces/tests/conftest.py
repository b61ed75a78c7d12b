import pytest

from convgen import plugins


@pytest.fixture(autouse=True)
def fresh_registries():
    """Each test sees freshly loaded plugins and registries."""
    plugins.reset()
    yield
    plugins.reset()
