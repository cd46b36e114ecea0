from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from marshmallow import ValidationError

from service.config import ConfigError, load_config, validate_config
from service.domain.command import (
    COMMAND_SCHEMA,
    LeadIdentity,
    LeadUpdateCommand,
    as_text,
    complete_names,
    make_command_id,
    normalise_email,
    normalise_phone,
    parse_number,
)
from tests.support import base_config, write_config


def test_identity_priority_gives_the_lead_key() -> None:
    assert LeadIdentity(id="P1", email="a@b.co", phone="+14155550100").key == "id:P1"
    assert LeadIdentity(email="a@b.co", phone="+14155550100").key == "email:a@b.co"
    assert LeadIdentity(phone="+14155550100").key == "phone:+14155550100"
    with pytest.raises(ValueError):
        LeadIdentity()


def test_email_and_phone_normalisation() -> None:
    assert normalise_email("  Jane.Doe@Example.COM ") == "jane.doe@example.com"
    assert normalise_phone("(415) 555-0100") == "+14155550100"
    assert normalise_phone("+44 20 7946 0958") == "+442079460958"
    assert normalise_phone("020 7946 0958", "GB") == "+442079460958"


def test_command_id_is_deterministic() -> None:
    assert make_command_id("typeform", "evt1") == "typeform:evt1"
    assert make_command_id("x", None, b"{}") == make_command_id("x", None, b"{}")
    assert make_command_id("x", None, b"{}") != make_command_id("x", None, b"{ }")


def test_command_round_trips_through_the_wire_format() -> None:
    command = LeadUpdateCommand(
        command_id="generic:1",
        source="generic",
        event_type="form.submitted",
        occurred_at=datetime(2026, 11, 22, 10, tzinfo=UTC),
        lead=LeadIdentity(email="jane@example.com"),
        changes={"first_name": "Jane", "value": 5000, "note": None},
        metadata={"utm_source": "google"},
        providers=("leadsquared",),
    )
    data = command.to_dict()
    assert data["schema"] == "lead-update/v1"
    assert data["post_updated_lead"] is True
    assert LeadUpdateCommand.from_dict(data) == command


@pytest.mark.parametrize(
    "command",
    [
        LeadUpdateCommand(
            command_id="generic:1",
            source="generic",
            event_type="form.submitted",
            occurred_at=datetime(2026, 11, 22, 10, 0, 5, 123456, tzinfo=timezone(timedelta(hours=-5))),
            lead=LeadIdentity(id="P1", email="jane@example.com", phone="+14155550100"),
            changes={"first_name": "Jane", "value": 5000.5, "note": None, "status": "won"},
            metadata={"utm_source": "google", "nested": {"a": [1, 2]}},
            providers=("leadsquared", "octanist"),
            post_updated_lead=False,
        ),
        LeadUpdateCommand(
            command_id="typeform:sha256:ab",
            source="typeform",
            event_type="form_response",
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
            lead=LeadIdentity(phone="+442079460958"),
        ),
    ],
)
def test_the_direct_wire_format_is_the_schema_dump(command: LeadUpdateCommand) -> None:
    # `to_dict` skips marshmallow's dump for speed; it must give exactly what the schema gives.
    assert command.to_dict() == COMMAND_SCHEMA.dump(command)
    assert command.to_json() == json.dumps(
        COMMAND_SCHEMA.dump(command), sort_keys=True, separators=(",", ":")
    )
    assert LeadUpdateCommand.from_json(command.to_json()) == command


def test_wire_format_rejects_unknown_fields_and_bad_values() -> None:
    data = {
        "schema": "lead-update/v1",
        "command_id": "c",
        "source": "s",
        "event_type": "e",
        "occurred_at": "2026-11-22T10:00:00Z",
        "lead": {"email": "jane@example.com"},
        "changes": {"favourite_colour": "red", "value": "lots"},
    }
    with pytest.raises(ValidationError) as error:
        LeadUpdateCommand.from_dict(data)
    assert "changes" in error.value.messages


def test_config_errors_name_the_bad_key(tmp_path) -> None:
    raw = base_config(tmp_path)
    raw["providers"]["leadsquared"]["acess_key"] = "typo"
    raw["dispatcher"]["concurrency"] = 0
    raw["routes"].append({"source": "generic", "providers": ["nowhere"]})
    with pytest.raises(ConfigError) as error:
        validate_config(raw)
    text = str(error.value)
    assert "providers.leadsquared.acess_key" in text
    assert "dispatcher.concurrency" in text
    assert "unknown provider 'nowhere'" in text


def test_env_overrides_bring_secrets_and_urls(tmp_path) -> None:
    path = write_config(tmp_path, base_config(tmp_path))
    config = load_config(
        path,
        environ={
            "LEADRELAY__PROVIDERS__LEADSQUARED__SECRET_KEY": "1234567890",
            "LEADRELAY__PROVIDERS__LEADSQUARED__BASE_URL": "https://api-us11.leadsquared.com",
            "LEADRELAY__SOURCES__GENERIC__SECRETS": "whsec_YWJjZGVmZ2hpams=,whsec_bG1ub3BxcnN0dQ==",
            "LEADRELAY__DISPATCHER__CONCURRENCY": "3",
        },
    )
    assert config.providers["leadsquared"]["secret_key"] == "1234567890"  # stays a string
    assert config.providers["leadsquared"]["base_url"] == "https://api-us11.leadsquared.com"
    assert config.sources["generic"]["secrets"] == ["whsec_YWJjZGVmZ2hpams=", "whsec_bG1ub3BxcnN0dQ=="]
    assert config["dispatcher"]["concurrency"] == 3


def test_the_bundled_config_is_valid() -> None:
    config = load_config(environ={})
    assert config.route("generic", "form.submitted") == ["leadsquared"]


@pytest.mark.parametrize(
    ("changes", "completed"),
    [
        ({"full_name": "Jane van der Berg"}, {"first_name": "Jane", "last_name": "van der Berg"}),
        ({"full_name": "  Cher "}, {"first_name": "Cher"}),
        ({"first_name": "Jane", "last_name": "Doe"}, {"full_name": "Jane Doe"}),
        ({"first_name": "Jane", "last_name": None}, {"full_name": "Jane"}),
        ({"first_name": "Jane"}, {}),  # a partial update never replaces a full name with half of it
        ({"full_name": None}, {}),  # clearing derives nothing
        ({"full_name": "Jane Doe", "first_name": "J."}, {}),  # given names are never replaced
    ],
)
def test_the_name_rule(changes, completed) -> None:
    assert complete_names(changes) == {**changes, **completed}


def test_numbers_and_text() -> None:
    assert parse_number("1,250.50") == 1250.5 and parse_number(5000.0) == 5000 and parse_number("7") == 7
    for bad in ("high", True, "nan", "inf", ""):
        with pytest.raises(ValueError):
            parse_number(bad)
    assert [as_text(v) for v in (42, 5000.0, 2.5, True, None, "x")] == [
        "42",
        "5000",
        "2.5",
        "true",
        None,
        "x",
    ]


def test_check_config_reports_a_mapping_no_routed_provider_sends(tmp_path, capsys) -> None:
    from service.cli import main as cli_main

    raw = base_config(tmp_path)
    raw["sources"]["meta"] = {"type": "meta_lead_ads"}
    raw["routes"] = [{"source": "*", "providers": ["leadsquared"]}]
    assert cli_main(["--config", str(write_config(tmp_path, raw)), "check-config"]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    # Meta's full name reaches LeadSquared as FirstName/LastName; its street address nowhere.
    assert warnings == [
        "warning: sources.meta: 'street_address' is mapped to 'address', which none of its providers"
        " (leadsquared) sends; map it in a provider's field_map or drop it"
    ]
    raw["providers"]["leadsquared"]["field_map"] = {"address": "mx_Street1"}
    assert cli_main(["--config", str(write_config(tmp_path, raw)), "check-config"]) == 0
    assert "warning:" not in capsys.readouterr().out
    raw["providers"] = {"octanist": {"type": "octanist", "api_key": "octanist-test-key"}}
    raw["routes"] = [{"source": "meta", "providers": ["octanist"]}]
    assert cli_main(["--config", str(write_config(tmp_path, raw)), "check-config"]) == 0
    reported = capsys.readouterr().out
    assert "'full_name' is mapped to 'full_name'" in reported and "'email'" not in reported
