import funtask_trio as ft

EXPECTED = {
    "ClientError",
    "ConfigError",
    "FuntaskError",
    "ParamError",
    "ParamReader",
    "Params",
    "Result",
    "Run",
    "Server",
    "TaskError",
    "fail",
    "fail_from_error",
    "ok",
    "verify_callback",
}


def test_package_exports_exactly_the_public_names():
    assert set(ft.__all__) == EXPECTED
    public = {name for name in vars(ft) if name.isidentifier() and not name.startswith("_")}
    # Submodules imported as a side effect are not API: only the names in __all__ are.
    assert public - EXPECTED <= {"testing", "client", "cli"}
    for name in EXPECTED:
        assert getattr(ft, name).__doc__, f"{name} has no docstring"


def test_exception_hierarchy():
    assert issubclass(ft.ConfigError, ft.FuntaskError)
    assert issubclass(ft.ParamError, ft.FuntaskError) and issubclass(ft.ParamError, ValueError)
    assert issubclass(ft.TaskError, ft.FuntaskError)
    assert issubclass(ft.ClientError, ft.FuntaskError)
