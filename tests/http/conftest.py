from tests.serving.api.server import edit_server  # noqa: F401  (the fixture)
