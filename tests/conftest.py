"""Shared fixtures. Real servers (the embedded broker, PostgreSQL) are started once a session
by the plugins in ``tests/fixtures/``; each test gets its own topics, groups and databases."""

pytest_plugins = ["fixtures.broker", "fixtures.postgres"]
