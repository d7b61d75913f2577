"""``urbanfabric review`` and ``urbanfabric corrections check`` on an exported job folder."""

from __future__ import annotations

import json

import pandas as pd

from urbanfabric.cli.main import main

from tests.unit.outputs.review_table import table


def _job(tmp_path, monkeypatch):
    monkeypatch.delenv("URBANFABRIC_MODEL_STORE", raising=False)  # the shipped configs of the tree
    folder = tmp_path / "job-7"
    folder.mkdir()
    table().to_parquet(folder / "buildings.parquet")
    monkeypatch.chdir(tmp_path)
    return folder


def test_review_then_corrections(tmp_path, monkeypatch, capsys):
    folder = _job(tmp_path, monkeypatch)
    assert main(["review", str(folder), "--attribute", "roof_shape", "--n", "15", "--select", "random"]) == 0
    package = tmp_path / "out" / "job-7" / "review" / "roof_shape"
    assert "15 of 100 buildings to review for roof_shape" in capsys.readouterr().out
    assert json.loads((package / "package.json").read_text())["selection"].startswith("random")
    assert main(["review", str(folder), "--attribute", "roof_shape", "--n", "15"]) == 0
    assert json.loads((package / "package.json").read_text())["selection"].startswith("least certain")
    capsys.readouterr()
    assert json.loads((package / "package.json").read_text())["labels"] == ["flat", "gable", "hip"]
    csv = pd.read_csv(package / "review.csv", dtype=str)
    csv["label"] = ["flat", "gable", "hip"] * 5
    csv.to_csv(package / "review.csv", index=False)
    # The attribute comes from package.json; every row is good.
    assert main(["corrections", "check", str(package / "review.csv"), "--job", str(folder)]) == 0
    clean = pd.read_parquet(package / "corrections.parquet")
    assert len(clean) == 15 and set(clean["attribute"]) == {"roof_shape"} and set(clean["job_id"]) == {"job-7"}
    # One unknown class: exit 1, the row named, the others kept.
    csv.loc[2, "label"] = "dome"
    csv.to_csv(package / "review.csv", index=False)
    assert main(["corrections", "check", str(package / "review.csv"), "--job", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "'dome' is not a class of the roof_shape model" in out and "(row 3)" in out
    report = json.loads((package / "corrections_report.json").read_text())
    assert report["accepted"] == 14 and report["rejected"] == 1 and report["problems"][0]["row"] == 3


def test_bad_input_is_one_line_naming_the_field(tmp_path, monkeypatch, capsys):
    folder = _job(tmp_path, monkeypatch)
    assert main(["review", str(folder), "--attribute", "facade_material"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("urbanfabric review: model_versions:") and "Traceback" not in err
    assert main(["review", str(tmp_path), "--attribute", "height"]) == 2
    assert "job:" in capsys.readouterr().err
    labels = tmp_path / "labels.csv"
    labels.write_text("building_id,label\nb00,flat\n")
    assert main(["corrections", "check", str(labels), "--job", str(folder)]) == 2
    assert "attribute: no --attribute given" in capsys.readouterr().err
    assert main(["corrections", "check", str(labels), "--job", str(folder), "--attribute", "roof_shape"]) == 2
    assert "label: labels.csv: 1 usable labels" in capsys.readouterr().err


def test_the_review_deployment_offers_the_attributes():
    from prefect.utilities.callables import parameter_schema

    from flows.review import review
    from urbanfabric.outputs.review import ATTRIBUTES

    # What the Prefect form of the deployment shows, and validates a run against.
    schema = parameter_schema(review.fn).model_dump()
    assert schema["required"] == ["job_id"]
    assert schema["properties"]["attribute"]["enum"] == list(ATTRIBUTES)
    assert schema["properties"]["n"]["default"] == 200
    assert schema["properties"]["select"]["enum"] == ["uncertainty", "random"]
