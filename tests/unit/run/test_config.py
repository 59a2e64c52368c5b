"""Bad input is refused in validate's checks, naming the field and the fix."""
from __future__ import annotations

import pytest

from sciops.run import config
from sciops.run.form import form_params, readme_table
from sciops.run.values import parse_memory_mb
from sciops.errors import ConfigError
from sciops.phases.checks import check

BAD = [
    # (conf overrides, field named, words the message must hold)
    ({"project": ""}, "project", "required"),
    ({"project": "no/slash"}, "project", "safe project name"),
    ({"project": ".."}, "project", "safe project name"),
    ({"project": "has space"}, "project", "safe project name"),
    ({"project": "x;rm -rf ~"}, "project", "safe project name"),
    ({"project": "$(reboot)"}, "project", "safe project name"),
    ({"project": "missing"}, "project", "no project folder"),
    ({"macro": "no_such_macro"}, "macro", "neither a shipped macro"),
    ({"macro": "/etc/passwd"}, "macro", "no absolute paths"),
    ({"macro": "../other/src/x.ijm"}, "macro", "no absolute paths"),
    ({"macro": "src/missing.ijm"}, "macro", "neither a shipped macro"),
    ({"file_pattern": "/abs/*.tif"}, "file_pattern", "inside input/"),
    ({"file_pattern": "../*.tif"}, "file_pattern", "inside input/"),
    ({"file_pattern": "*.png"}, "file_pattern", "no file in"),
    ({"file_pattern": " , "}, "file_pattern", "is empty"),
    ({"images_per_task": -3}, "images_per_task", "at least 0"),
    ({"images_per_task": 10**6}, "images_per_task", "at most 100000"),
    ({"images_per_task": "many"}, "images_per_task", "valid integer"),
    ({"max_attempts": 0}, "max_attempts", "at least 1"),
    ({"image_timeout_s": 0}, "image_timeout_s", "at least 1"),
    ({"stall_seconds": -1}, "stall_seconds", "at least 1"),
    ({"memory": "lots"}, "memory", "not a memory size"),
    ({"memory": "12"}, "memory", "at least '512M'"),
    ({"backend": "kubernetes"}, "backend", "unknown backend"),
    ({"launcher": "napari"}, "launcher", "unknown launcher"),
    ({"slots": -2}, "slots", "at least 0 (got -2): local backend"),
    ({"macro_args": {"bad key": 1}}, "macro_args", "must be a word"),
    ({"macro_args": {"k": "a\tb"}}, "macro_args", "tabs or newlines"),
    ({"images_per_tsk": 5}, "images_per_tsk", "unknown parameter"),
    # a storage root or connection the deployment does not allow is refused before it is opened
    ({"storage_root": "projects/here"}, "storage_root", "not a storage root this deployment allows"),
    ({"storage_root": "s3://Bad_Bucket"}, "storage_root", "SCIOPS_ALLOWED_STORAGE_ROOTS"),
    ({"storage_root": "ftp://host/x"}, "storage_root", "not a storage root this deployment allows"),
    ({"aws_conn_id": "my conn"}, "aws_conn_id", "not one a run may use"),
    ({"sync_from": "lan/proj"}, "sync_from", "absolute path"),
    ({"sync_to": "../up"}, "sync_to", "absolute path"),
    ({"sync_to": "/etc/hostname/results"}, "sync_to", "cannot be written"),
    ({"budget_usd": 0}, "budget_usd", "more than 0 (got 0)"),
    ({"hourly_rate_usd": -1}, "hourly_rate_usd", "at least 0"),
    ({"slack_conn_id": "a;b"}, "slack_conn_id", "not an Airflow connection id"),
    ({"backend": "parallelcluster", "scheduler": "sge"}, "scheduler", "does not go with backend"),
]


@pytest.mark.parametrize("overrides,field,words", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_config_names_field(make_project, overrides, field, words):
    make_project("proj")
    conf = {"project": "proj", **overrides}
    with pytest.raises(ConfigError) as err:
        check(conf)
    assert field in err.value.fields, err.value
    assert words in str(err.value), err.value


def test_empty_input_is_refused(make_project):
    make_project("proj", counts={})
    with pytest.raises(ConfigError) as err:
        check({"project": "proj"})
    assert err.value.fields == ["file_pattern"]


def test_missing_input_folder_is_refused(storage):
    (storage / "proj").mkdir()
    with pytest.raises(ConfigError) as err:
        check({"project": "proj"})
    assert "no input/ folder" in str(err.value)


def test_bad_project_yaml(make_project):
    make_project("proj", project_yaml="images_per_task: [unclosed")
    with pytest.raises(ConfigError) as err:
        check({"project": "proj"})
    assert err.value.fields == ["project.yaml"]


def test_unknown_key_in_project_yaml(make_project):
    make_project("proj", project_yaml="budget: 3\n")
    with pytest.raises(ConfigError) as err:
        check({"project": "proj"})
    assert err.value.fields == ["project.yaml:budget"]


def test_every_problem_reported_at_once(make_project):
    make_project("proj")
    with pytest.raises(ConfigError) as err:
        check({"project": "proj", "images_per_task": -1, "memory": "x", "backend": "nope"})
    assert set(err.value.fields) == {"images_per_task", "memory", "backend"}


def test_precedence_conf_over_project_yaml_over_defaults(make_project):
    make_project("proj", project_yaml="images_per_task: 7\nmemory: 1G\n")
    cfg, project, images, macro = check({"project": "proj", "memory": "3G", "max_attempts": None})
    assert cfg.images_per_task == 7          # project.yaml
    assert cfg.memory_mb == 3072             # conf
    assert cfg.max_attempts == config.DEFAULTS["max_attempts"]  # None = not given
    assert images == ["a.tif", "b.tif"]
    assert macro.name == "count_nuclei.ijm"


def test_project_macro_and_nested_images(make_project):
    root = make_project("proj", counts={"A.TIF": 1, "plate 1/w ü.tif": 2, ".hidden.tif": 1})
    (root / "src" / "mine.ijm").write_text("// @sciops outputs: results.csv\n")
    cfg, project, images, macro = check({"project": "proj", "macro": "src/mine.ijm"})
    assert images == ["A.TIF", "plate 1/w ü.tif"]   # case-insensitive pattern, hidden skipped
    assert macro == (root / "src" / "mine.ijm").resolve()


@pytest.mark.parametrize("text,mb", [("2G", 2048), ("512M", 512), ("1.5GB", 1536), ("4096", 4096), ("1T", 1048576)])
def test_parse_memory(text, mb):
    assert parse_memory_mb(text) == mb


def test_form_defaults_do_not_override_project_yaml(make_project):
    """The form sends every field; a field left at its default must not beat project.yaml."""
    make_project("proj", project_yaml="images_per_task: 7\nsmoke_test: false\nhourly_rate_usd: 1.5\nqueue: q1\n")
    form = {name: default for name, (default, _) in form_params().items()}
    form.update(project="proj", max_attempts=5, hourly_rate_usd=0, queue="")  # the JSON form sends 0 and ""
    cfg, *_ = check(form)
    assert (cfg.images_per_task, cfg.smoke_test, cfg.hourly_rate_usd, cfg.queue) == (7, False, 1.5, "q1")
    assert cfg.max_attempts == 5  # changed in the form: the run wins
    src = config.sources(form, {"images_per_task": 7, "smoke_test": False})
    assert (src["images_per_task"], src["max_attempts"], src["memory"]) == ("project.yaml", "run", "default")
    assert config.given("smoke_test", False) and not config.given("smoke_test", True)
    assert config.given("images_per_task", 26) and not config.given("images_per_task", 0)


def test_form_schema_shows_defaults_and_bounds():
    """What the trigger form draws: real defaults, bounds, enums without a bare null, sections."""
    params = form_params()
    assert set(params) == set(config.FIELDS)
    default, schema = params["images_per_task"]
    assert (default, schema["type"], schema["minimum"], schema["maximum"]) == (0, "integer", 0, 100_000)
    assert params["smoke_test"][0] is True and params["smoke_test"][1]["type"] == "boolean"
    assert params["backend"] == ("local", params["backend"][1]) and "null" not in str(params["backend"][1]["enum"])
    assert params["launcher"][1]["enum"] == list(config.LAUNCHERS)
    sched_default, sched = params["scheduler"]
    assert sched_default is None and sched["values_display"]["None"]  # "not set" has a name in the dropdown
    assert params["budget_usd"][1]["exclusiveMinimum"] == 0
    assert params["project"][1]["pattern"] == config.SAFE_NAME.pattern
    for name, (_, schema) in params.items():
        assert schema["section"] in config.SECTIONS, name
        assert name == "project" or "project.yaml" in schema["description"], name


def test_form_schema_refuses_what_validate_refuses():
    """Airflow validates a run's conf against each Param's schema when the run is created."""
    import jsonschema

    params = form_params()
    for name, bad in (("images_per_task", -1), ("max_attempts", 0), ("backend", "kubernetes"),
                      ("budget_usd", 0), ("queue", "a;b"), ("project", "../x")):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, params[name][1])
        with pytest.raises(ConfigError):
            config.build({"project": "p", name: bad} if name != "project" else {"project": bad})
    with pytest.raises(jsonschema.ValidationError):  # the form is stricter than pydantic's lax "yes" → True
        jsonschema.validate("yes", params["smoke_test"][1])
    for name, (default, schema) in params.items():
        if name != "project":
            jsonschema.validate(default, schema)  # every default passes its own schema


def test_readme_parameter_table_is_generated():
    from pathlib import Path

    readme = (Path(__file__).parents[3] / "docs" / "parameters.md").read_text()
    begin = "<!-- parameters: generated by sciops.run.form.readme_table() -->\n"
    table = readme[readme.index(begin) + len(begin):readme.index("<!-- parameters: end -->")]
    assert table == readme_table(), "docs/parameters.md's table drifted: paste sciops.run.form.readme_table()"


def test_allowed_storage_roots_are_still_checked(make_project, storage, monkeypatch):
    """A root the deployment lists still has to be well-formed."""
    monkeypatch.setenv("SCIOPS_ALLOWED_STORAGE_ROOTS", "s3://Bad_Bucket,relative/root")
    for root, words in (("s3://Bad_Bucket", "not a valid bucket name"), ("relative/root", "absolute folder path")):
        with pytest.raises(ConfigError) as err:
            config.build({"project": "p", "storage_root": root})
        assert err.value.fields == ["storage_root"] and words in str(err.value), err.value


def test_images_per_task_auto_grows_with_the_run_where_the_slots_are_known():
    from sciops.run.chunking import images_per_task

    assert images_per_task(20_000, 7, 2) == 7                       # given: as given
    assert images_per_task(40, 0, 2) == 25                          # a small run: 25, as before
    assert images_per_task(20_000, 0, None) == 25                   # a cluster: slots unknown
    assert images_per_task(20_000, 0, 2) == 5000                    # 2 slots: 2 tasks each at first


def test_auto_chunks_taper_so_the_slots_end_together():
    from sciops.run.chunking import chunk, chunk_sizes

    assert chunk_sizes(20_000, 0, 2) == [5000] * 3 + [2500, 1250, 625, 313, 312]   # the last wave halves, then ends
    assert chunk_sizes(100_000, 0, 2)[-3:] == [3125, 1563, 1562]
    assert chunk_sizes(20_000, 7, 2) == [7] * 2857 + [1]                 # given: as given
    assert chunk_sizes(20_000, 0, None) == [25] * 800                    # slots unknown: 25
    assert chunk_sizes(40, 0, 2) == [25, 15] and chunk_sizes(0, 0, 2) == []
    for n, slots in ((5000, 16), (1000, 3), (123_457, 7)):
        sizes = chunk_sizes(n, 0, slots)
        body = sizes[:-1]   # the last may hold a crumb too small for a chunk of its own
        assert sum(sizes) == n and min(sizes) >= 25 and body == sorted(body, reverse=True), sizes
    images = [f"i{k}" for k in range(20_000)]
    chunks = chunk(images, chunk_sizes(20_000, 0, 2))
    assert [x for c in chunks for x in c] == images and len(chunks[-1]) == 312
