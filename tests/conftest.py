pytest_plugins = ["tests.support.fixtures", "tests.support.core_fixtures"]


def pytest_configure(config: object) -> None:
    """One onnxruntime export of the test model for the whole run (and every process it starts):
    each test's own data folder would otherwise export it again (~5 s)."""
    import os
    import tempfile

    if "PEITU_EMBEDDING__EXPORT_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="peitu-test-encoders-")
        os.environ["PEITU_EMBEDDING__EXPORT_DIR"] = folder
        _MADE_HERE.append(folder)


_MADE_HERE: list[str] = []


def pytest_unconfigure(config: object) -> None:
    import shutil

    for folder in _MADE_HERE:
        shutil.rmtree(folder, ignore_errors=True)
