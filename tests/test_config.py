"""Settings: TOML file, environment (which wins), validation with readable messages."""

from pathlib import Path

import pytest

from vesalius.config import ConfigError, DuplicatePolicy, load_settings, mask_url


def test_defaults() -> None:
    settings = load_settings(env={})
    assert settings.ae_title == "VESALIUS"
    assert settings.dicom_port == 11112
    assert settings.http_port == 8080
    assert settings.data_dir == Path("./vesalius-data")
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_database_url.endswith("vesalius-data/index.sqlite")
    assert settings.duplicate_policy is DuplicatePolicy.KEEP_FIRST


def test_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "vesalius.toml"
    config.write_text(
        'ae_title = "FROMFILE"\ndicom_port = 4242\n'
        '[[remote_ae]]\nname = "ws"\nae_title = "WS1"\nhost = "10.0.0.5"\nport = 104\n'
    )
    settings = load_settings(env={"VESALIUS_CONFIG": str(config), "VESALIUS_DICOM_PORT": "5555"})
    assert settings.ae_title == "FROMFILE"
    assert settings.dicom_port == 5555  # the environment wins
    [remote] = settings.remote_ae
    assert (remote.name, remote.ae_title, remote.host, remote.port) == (
        "ws",
        "WS1",
        "10.0.0.5",
        104,
    )
    assert settings.find_remote_ae("WS1") is remote


def test_remote_aes_from_the_environment() -> None:
    settings = load_settings(
        env={"VESALIUS_REMOTE_AE": '[{name="a", ae_title="A", host="h", port=11112}]'}
    )
    assert settings.remote_ae[0].ae_title == "A"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VESALIUS_DICOM_PORT": "seventy"}, "dicom_port"),
        ({"VESALIUS_DICOM_PORT": "70000"}, "dicom_port"),
        ({"VESALIUS_AE_TITLE": "A" * 17}, "not a valid AE title"),
        ({"VESALIUS_DATABASE_URL": "oracle://x"}, "unsupported database"),
        ({"VESALIUS_REMOTE_AE": "[{"}, "must be a TOML value"),
        ({"VESALIUS_DUPLICATE_POLICY": "sometimes"}, "duplicate_policy"),
        ({"VESALIUS_CONFIG": "/nonexistent/vesalius.toml"}, "does not exist"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_broken_toml_and_unknown_keys(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("ae_title = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, env={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('colour = "blue"\n')
    with pytest.raises(ConfigError, match="colour"):
        load_settings(unknown, env={})
    duplicate = tmp_path / "dup.toml"
    duplicate.write_text(
        '[[remote_ae]]\nname="a"\nae_title="A"\nhost="h"\nport=1\n'
        '[[remote_ae]]\nname="a"\nae_title="B"\nhost="h"\nport=2\n'
    )
    with pytest.raises(ConfigError, match="repeated: a"):
        load_settings(duplicate, env={})


def test_passwords_are_masked() -> None:
    assert mask_url("mysql+pymysql://u:secret@h/db") == "mysql+pymysql://u:***@h/db"
    settings = load_settings(env={"VESALIUS_DATABASE_URL": "postgresql+psycopg://u:pw@db/x"})
    assert "pw" not in str(settings.masked())


def test_unknown_variables_are_reported_not_fatal() -> None:
    from vesalius.config import unknown_environment

    env = {"VESALIUS_DICOM_PROT": "1", "VESALIUS_TEST_X": "1", "VESALIUS_AE_TITLE": "A"}
    assert load_settings(env=env).ae_title == "A"
    assert unknown_environment(env) == ["VESALIUS_DICOM_PROT"]


def test_a_removed_setting_is_ignored_with_a_note(tmp_path: Path) -> None:
    """dicom_engine (the pynetdicom-based engine, removed) is no typo: not refused, but noted."""
    from vesalius.config import unknown_environment

    config = tmp_path / "old.toml"
    config.write_text('ae_title = "OLD"\ndicom_engine = "pynetdicom"\n')
    env = {"VESALIUS_DICOM_ENGINE": "pynetdicom"}
    notes: list[str] = []
    settings = load_settings(config, env=env, notes=notes)
    assert settings.ae_title == "OLD"
    assert "dicom_engine" not in settings.model_dump()
    assert notes == [
        f"dicom_engine (in {config}) was removed in this version and is ignored: "
        "the asyncio engine is the only one. Delete it from the file.",
        "VESALIUS_DICOM_ENGINE: dicom_engine was removed in this version and is ignored: "
        "the asyncio engine is the only one.",
    ]
    assert unknown_environment(env) == []  # said once, by the note
    assert load_settings(env={}, notes=notes) and len(notes) == 2  # nothing set, nothing said
