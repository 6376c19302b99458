import copy

import pytest
import yaml
from pydantic import Field

from resnet_review import config
from resnet_review.config import (
    ParamsError,
    Paths,
    StageParams,
    load_params,
    register_stage_schema,
    stage_schema,
    validate_params,
)


@pytest.fixture
def raw(paths):
    return yaml.safe_load(paths.params.read_text())


def test_the_committed_params_are_valid(raw):
    params = validate_params(raw)
    assert set(params.profiles) == {"smoke", "cpu", "gpu"}
    assert params.budget == params.profiles[params.profile]
    assert {"baseline", "data_overview", "report"} <= set(params.stage_names())


def error_for(raw, mutate) -> str:
    raw = copy.deepcopy(raw)
    mutate(raw)
    with pytest.raises(ParamsError) as err:
        validate_params(raw)
    return str(err.value)


def test_unknown_key_is_named(raw):
    msg = error_for(raw, lambda r: r["profiles"]["cpu"].update(epoch=3))
    assert "profiles.cpu.epoch: Extra inputs are not permitted" in msg


def test_wrong_type_is_named(raw):
    msg = error_for(raw, lambda r: r["train"].update(lr="fast"))
    assert "train.lr:" in msg and "'fast'" in msg


def test_impossible_values_are_named_one_line_each(raw):
    def mutate(r):
        r["profiles"]["smoke"]["epochs"] = -1
        r["profiles"]["smoke"]["test_size"] = 20_000
        r["profiles"]["cpu"]["seeds"] = [0, 0]
    lines = error_for(raw, mutate).splitlines()
    assert any(line.strip().startswith("profiles.smoke.epochs: Input should be greater than 0") for line in lines)
    assert any(line.strip().startswith("profiles.smoke.test_size:") for line in lines)
    assert any("profiles.cpu.seeds" in line and "distinct" in line for line in lines)


def test_unknown_profile_and_stage_keys(raw):
    assert "profile:" in error_for(raw, lambda r: r.update(profile="tpu"))
    assert "baseline.modle" in error_for(raw, lambda r: r["baseline"].update(modle="resnet18"))
    assert "weight_decy" in error_for(raw, lambda r: r["baseline"].update(train={"weight_decy": 0.1}))


def test_stage_override_of_the_shared_recipe(raw):
    raw = copy.deepcopy(raw)
    raw["baseline"]["train"] = {"lr": 0.05}
    params = validate_params(raw)
    recipe = params.stage("baseline").recipe(params.train)
    assert recipe.lr == 0.05 and recipe.optimizer == params.train.optimizer


def test_profile_override_and_missing_file(paths, tmp_path, raw):
    assert raw["profile"] != "smoke"  # the override below must change something
    smoke = load_params(paths.params, profile="smoke")
    assert smoke.profile == "smoke" and smoke.budget.train_size == raw["profiles"]["smoke"]["train_size"]
    with pytest.raises(ParamsError, match="profile must be one of"):
        load_params(paths.params, profile="huge")
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("profile: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_variant_keys_are_checked_one_line_each(raw):
    def add(r):
        r["fpn"]["variants"]["bad"] = {"train_fraction": 0, "img_size": 4, "train": {"lrr": 1}, "colour": "red"}
    msg = error_for(raw, add)
    for key in ("fpn.variants.bad.train_fraction", "fpn.variants.bad.img_size", "fpn.variants.bad.train.lrr",
                "fpn.variants.bad.colour"):
        assert key in msg, msg
    assert "variant name" in error_for(raw, lambda r: r["swish"]["variants"].update({"a/b": {}}))


def test_views_and_corruption_severities_are_checked(raw):
    msg = error_for(raw, lambda r: r["mmff"]["variants"]["top_only"].update({"view": "left"}))
    assert "mmff.variants.top_only.view" in msg and "unknown view 'left'" in msg
    msg = error_for(raw, lambda r: r["profiles"]["cpu"].update({"corruption_severities": [0, 2]}))
    assert "profiles.cpu.corruption_severities" in msg


def test_compression_sections_and_variant_profiles_are_checked(raw):
    def bad(r):
        r["pruning"]["targets"]["x"] = {"method": "random", "amount": 1.5}
        r["quantisation"]["calibration_batches"] = 0
        r["swish"]["variants"]["gelu"]["profiles"] = ["laptop"]
        r["pruning"]["targets"]["magnitude_50"]["profiles"] = ["cuda"]
    msg = error_for(raw, bad)
    for key in ("pruning.targets.x.method", "pruning.targets.x.amount", "quantisation.calibration_batches",
                "swish.variants.gelu.profiles", "pruning.targets.magnitude_50.profiles"):
        assert key in msg, msg
    params = validate_params(raw)
    assert params.stage("pruning").targets["taylor_50"].importance == "taylor"
    assert params.stage("swish").variants["gelu"].profiles == ["gpu"]
    pruning = params.stage("pruning")
    assert list(pruning.targets_under("gpu")) == list(pruning.targets)
    assert "taylor_50" in pruning.targets_under("smoke") and "magnitude_25" not in pruning.targets_under("smoke")
    assert "taylor_50" not in pruning.targets_under("cpu") and "magnitude_50" in pruning.targets_under("cpu")


def test_each_technique_module_registers_the_schema_of_its_sections():
    modules = {"distillation": "distillation", "augmentation": "augmentation", "transfer": "transfer",
               "hparam_tuning": "tuning", "pruning": "compression", "quantisation": "compression",
               "limitations": "limitations", "synergy": "synergy"}
    assert {stage: stage_schema(stage).__module__ for stage in modules} == {
        stage: f"resnet_review.techniques.{module}" for stage, module in modules.items()}
    assert stage_schema("se") is StageParams  # a stage of variants only needs no schema of its own


def test_a_registered_schema_validates_its_section_and_a_second_one_is_refused(raw, monkeypatch):
    monkeypatch.setattr(config, "_STAGE_SCHEMAS", dict(config._STAGE_SCHEMAS))

    @register_stage_schema("my_technique")
    class MyParams(StageParams):
        depth: int = Field(gt=0)

    assert validate_params({**raw, "my_technique": {"depth": 2}}).stage("my_technique").depth == 2
    assert "my_technique.depth: Input should be greater than 0" in error_for(
        raw, lambda r: r.update(my_technique={"depth": 0}))
    assert register_stage_schema("my_technique", MyParams) is MyParams  # the same schema again: a re-import

    class OtherParams(StageParams):
        pass

    with pytest.raises(ValueError, match="stage 'my_technique' already has the schema .*MyParams"):
        register_stage_schema("my_technique", OtherParams)
    with pytest.raises(TypeError, match="must subclass StageParams"):
        register_stage_schema("elsewhere", dict)


def test_errors_name_a_stage_as_dvc_repro_knows_it(paths, tmp_path):
    assert [paths.dvc_stage(s) for s in ("se", "teacher", "hff", "baseline", "pruning")] == [
        "technique@se", "standalone@teacher", "novel@hff", "baseline", "pruning"]
    assert Paths(tmp_path).dvc_stage("se") == "se"  # no dvc.yaml: the name as given
