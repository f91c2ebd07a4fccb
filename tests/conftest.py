pytest_plugins = ["tests.support.fixtures", "tests.support.core_fixtures"]


def pytest_configure(config: object) -> None:
    """One onnxruntime export of the test model for the whole run (and every process it starts,
    also those whose environment drops the PEITU_ variables: the user's cache folder, where
    exports go by default, is a temporary one too), never in the real ~/.cache."""
    import os
    import tempfile

    os.environ["PEITU_LANG"] = "zh"  # the CLI's words, whatever this machine's locale
    if "PEITU_EMBEDDING__EXPORT_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="peitu-test-cache-")
        os.environ["XDG_CACHE_HOME"] = folder
        os.environ["PEITU_EMBEDDING__EXPORT_DIR"] = os.path.join(folder, "peitu", "encoders")
        _MADE_HERE.append(folder)


_MADE_HERE: list[str] = []


def pytest_unconfigure(config: object) -> None:
    import shutil

    for folder in _MADE_HERE:
        shutil.rmtree(folder, ignore_errors=True)
