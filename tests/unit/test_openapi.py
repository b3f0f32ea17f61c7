"""/openapi.json stays true to the routes the web tier really serves."""
from mschedule.webserver import MasterBridge, build_app
from mschedule.webserver.openapi import OPENAPI


def served_routes():
    app = build_app(MasterBridge("tcp://127.0.0.1:1"))
    return {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}


def documented_routes():
    return {(method, path) for path, ops in OPENAPI["paths"].items() for method in ops}


def test_every_route_is_documented_and_every_documented_route_exists():
    assert served_routes() == documented_routes()


def test_every_reference_resolves():
    schemas = OPENAPI["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    for ref in refs(OPENAPI):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


def test_path_parameters_are_declared():
    for path, ops in OPENAPI["paths"].items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)


def test_task_request_fields_match_validation():
    from mschedule.utils.taskspec import TASK_FIELDS

    assert set(OPENAPI["components"]["schemas"]["TaskRequest"]["properties"]) == set(TASK_FIELDS)


def test_error_schema_is_what_every_error_answers():
    error = OPENAPI["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "field"] and error["properties"]["field"]["nullable"] is True
