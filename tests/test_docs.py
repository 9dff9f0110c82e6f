"""The docs list every config key with its current type and default."""

from pathlib import Path

from nntrain.config import keys_table_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_config_reference_lists_every_key_as_the_schema_says():
    reference = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert keys_table_markdown() in reference, (
        "docs/config.md is out of date: paste in keys_table_markdown()'s table"
    )
