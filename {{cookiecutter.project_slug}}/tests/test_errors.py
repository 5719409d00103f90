import logging

import pytest

from {{ cookiecutter.package_name }}.errors import mask_url, mask_urls
from {{ cookiecutter.package_name }}.logging_config import MaskSecrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://ml:s3cr@t@db:5432/log", "postgresql+psycopg://ml:***@db:5432/log"),
        ("postgresql://:pw@db/x", "postgresql://:***@db/x"),
        ("https://u:p@host/x?token=abc&a=1", "https://u:***@host/x?token=***&a=1"),
        ("postgresql://ml@db/x", "postgresql://ml@db/x"),
        ("sqlite:////abs/predictions.db", "sqlite:////abs/predictions.db"),
        ("sqlite:///predictions.db", "sqlite:///predictions.db"),
    ],
)
def test_mask_url_hides_the_password_only(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_mask_urls_masks_every_url_in_a_text() -> None:
    text = "Could not parse 'postgresql://a:pw1@h/d'; see http://x:pw2@z/."

    assert mask_urls(text) == "Could not parse 'postgresql://a:***@h/d'; see http://x:***@z/."


def test_every_log_line_is_masked_whoever_logs_it() -> None:
    record = logging.LogRecord(
        "sqlalchemy.engine",
        logging.ERROR,
        __file__,
        1,
        "cannot open %s",
        ("mysql://u:pw@h/db",),
        None,
    )

    assert MaskSecrets().filter(record)
    assert record.getMessage() == "cannot open mysql://u:***@h/db"
