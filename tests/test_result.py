import datetime as dt
import json

import funtask_trio as ft
from funtask_trio._result import MAX_RESULT_BYTES, JobResult, go_json

FINISHED = dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)


def build(result: ft.Result, duration: float = 1.234) -> JobResult:
    return JobResult.build(
        job_id="j1", task="t", result=result, duration_s=duration, finished=FINISHED
    )


def test_success_body_has_go_field_order_and_omits_empty_fields():
    body = build(ft.ok("Hello, World!").with_data(name="World")).body
    assert body == (
        b'{"jobId":"j1","success":true,"message":"Hello, World!",'
        b'"duration":"1.234s","data":{"name":"World"}}'
    )
    assert build(ft.ok()).body == b'{"jobId":"j1","success":true,"duration":"1.234s"}'


def test_failure_body_carries_error_with_step_and_no_message_field():
    result = ft.Result(success=False, error_code="db_error", message="refused", last_step="conn")
    assert build(result, 0.015).body == (
        b'{"jobId":"j1","success":false,"duration":"15ms",'
        b'"error":{"code":"db_error","message":"refused","step":"conn"}}'
    )
    assert b'"step"' not in build(ft.fail("x", "y")).body


def test_data_is_serialized_as_go_does_sorted_and_html_safe():
    body = build(ft.ok().with_data({"b": 1, "a": "<&>"})).body
    assert b'"data":{"a":"\\u003c\\u0026\\u003e","b":1}' in body
    assert json.loads(body)["data"] == {"a": "<&>", "b": 1}


def test_unserializable_data_becomes_result_serialization_failed():
    result = build(ft.ok().with_data(when=object()))
    assert result.error_code == "result_serialization_failed"
    assert json.loads(result.body)["error"] == {
        "code": "result_serialization_failed",
        "message": "result could not be serialized",
    }
    assert build(ft.ok().with_data(x=float("nan"))).error_code == "result_serialization_failed"


def test_results_over_ten_mib_become_result_too_large():
    result = build(ft.ok().with_data(blob="x" * MAX_RESULT_BYTES))
    assert not result.success and result.error_code == "result_too_large"
    assert json.loads(result.body)["error"]["message"] == "result exceeds maximum size (10 MB)"


def test_with_data_and_with_cause_return_new_results():
    base = ft.ok("m")
    extended = base.with_data({"a": 1}, b=2)
    assert base.data == {} and extended.data == {"a": 1, "b": 2}
    error = RuntimeError("boom")
    assert base.with_cause(error).cause is error and base.cause is None


def test_fail_from_error_uses_error_code_and_user_message_when_present():
    class CodedError(Exception):
        error_code = "db_down"
        user_message = "the database is unavailable"

    coded = ft.fail_from_error(CodedError("internal detail"), "fallback")
    assert (coded.error_code, coded.message) == ("db_down", "the database is unavailable")
    plain = ft.fail_from_error(ValueError("bad"), "fallback")
    assert (plain.success, plain.error_code, plain.message) == (False, "fallback", "bad")
    assert isinstance(plain.cause, ValueError)


def test_go_json_escapes_line_separators():
    assert go_json("a\u2028b") == '"a\\u2028b"'


def test_health_summaries_omit_empty_fields():
    failed = build(ft.Result(success=False, error_code="e", message="m", last_step="s"))
    assert failed.summary() == {
        "jobId": "j1",
        "success": False,
        "error": "e",
        "message": "m",
        "step": "s",
        "duration": "1.234s",
        "finished": "2026-01-01T10:00:00Z",
    }
    assert "message" not in build(ft.ok()).summary()


def test_lone_surrogates_become_replacement_characters_as_in_go():
    result = build(ft.fail("bad", "half a pair: \ud800").with_data(x="\udfff"))
    assert "half a pair: \ufffd" in result.body.decode()
    ok_result = build(ft.ok("fine \ud83d\ude00"))  # a proper pair survives
    assert json.loads(ok_result.body)["message"] == "fine \U0001f600"
