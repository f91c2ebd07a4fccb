pytest_plugins = ["tests.support.fixtures", "tests.support.core_fixtures"]
