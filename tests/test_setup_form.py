"""The Fivetran dashboard's setup form: a field for every configuration key, and a connection test."""

from __future__ import annotations

import json

import pytest
from conftest import Database

import connector
from configuration import KNOWN_KEYS


def test_form_has_a_field_for_every_key_and_masks_the_password() -> None:
    with open("configuration.json.example") as file:
        keys = set(json.load(file))
    fields = {field.name: field for field in connector.configuration_form().to_response().fields}
    assert set(fields) == keys == set(KNOWN_KEYS)
    for secret in ("PASSWORD", "SSH_PRIVATE_KEY", "SSH_PASSPHRASE"):
        assert fields[secret].text_field == 1, secret  # the SDK's password kind: masked in the dashboard
    assert all(fields[key].required for key in ("HOST", "PORT", "DATABASE", "USERNAME", "PASSWORD"))
    assert not fields["QUERIES"].required


def test_connection_test_counts_tables_and_explains_failures(database: Database, schema: str, source, capfd) -> None:
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.one (id int PRIMARY KEY); CREATE TABLE {schema}.two (note text)")
    result = connector.connection_test(database.configuration(SCHEMAS=schema))
    assert result.success is True
    assert "2 table(s) would be synced" in capfd.readouterr().out
    assert "BATCH_SIZE" in connector.connection_test(database.configuration(BATCH_SIZE="many")).failure


def test_connection_test_explains_a_wrong_password(database: Database) -> None:
    if not database.checks_passwords():
        pytest.skip("the server trusts its clients (pg_hba trust): it takes a wrong password")
    failure = connector.connection_test(
        database.configuration(PASSWORD="wrong-" + database.password, RETRY_SECONDS="0")
    )
    assert failure.success is None and "Authentication failed for USERNAME" in failure.failure
    assert database.password not in failure.failure


def test_an_unknown_key_is_a_warning_in_every_sync_and_in_the_setup_test(
    database: Database, schema: str, source, destination, capfd
) -> None:
    with source.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {schema}.t (id int PRIMARY KEY, changed timestamp)")
    configuration = database.configuration(SCHEMAS=schema, CURSOR_COLUMN=f"{schema}.t:changed")
    hint = "Configuration key 'CURSOR_COLUMN' is not one this connector knows, so it changes nothing (did you mean"
    for _ in range(2):
        destination.sync(configuration)
        assert hint in capfd.readouterr().out
    assert connector.connection_test(configuration).success is True
    assert hint in capfd.readouterr().out


def test_the_connection_test_is_strict_about_names_that_match_nothing(database: Database, schema: str) -> None:
    failure = connector.connection_test(database.configuration(SCHEMAS=schema, TABLES=f"{schema}.typo"))
    assert failure.failure == f"TABLES: '{schema}.typo' matches no table the user can see."
