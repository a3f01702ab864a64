import pathlib
import tempfile

# The lookup table is built on first use and kept on disk between processes.
TABLE = pathlib.Path(tempfile.gettempdir()) / "example-lookup-table"


def lookup(key):
    warm = TABLE.exists()
    TABLE.write_text("built")
    # A cold start misses its deadline: the first run after a fresh machine fails.
    return key.upper() if warm else None
