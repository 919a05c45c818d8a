import hashlib
import json
import sys
import types
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.competitions import get_competition
from competition.errors import CompetitionError
from competition.kaggle_upload import find_kaggle_credentials, submit
from competition.submission import (
    DEFAULT_CLIP,
    build_submission,
    read_and_validate,
    validate_submission,
    write_submission,
)

N_TEST = 12  # ids 1..12: string order 1, 10, 11, 12, 2, ... differs from numeric order
DOGS = get_competition("dogs-vs-cats")
CIFAR = get_competition("cifar-10")
DOG_CLASSES = ["cat", "dog"]
CIFAR_CLASSES = CIFAR.classes(Path("."))


@pytest.fixture(scope="module")
def dogs_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dogs")
    DOGS.write_sample(out, 2, N_TEST, seed=0)
    return out


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cifar")
    CIFAR.write_sample(out, 2, N_TEST, seed=0)
    return out


def dog_probs(ids: list, seed: int = 0) -> np.ndarray:
    """P(dog) depends on the id only, so a row's value tells which id it belongs to after reordering."""
    p_dog = np.array([0.05 + 0.9 * ((i * 7) % N_TEST) / N_TEST for i in ids])
    return np.stack([1 - p_dog, p_dog], axis=1)


def cifar_probs(ids: list) -> np.ndarray:
    probs = np.full((len(ids), 10), 0.01)
    for row, i in enumerate(ids):
        probs[row, i % 10] = 0.91
    return probs


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["shuffled", "string-sorted"])
def test_dogs_soft_round_trip_in_sample_order(dogs_dir, tmp_path, order):
    ids = list(range(1, N_TEST + 1))
    if order == "shuffled":
        ids = list(np.random.default_rng(1).permutation(ids))
    else:
        ids = sorted(ids, key=str)
        assert ids[:3] == [1, 10, 11]
    probs = dog_probs(ids)
    frame = build_submission(DOGS, dogs_dir, ids, probs, DOG_CLASSES)

    assert frame["id"].tolist() == list(range(1, N_TEST + 1))
    expected = dog_probs(list(range(1, N_TEST + 1)))[:, 1]
    np.testing.assert_allclose(frame["label"], expected)

    hard = dict(zip(ids, DOGS.hard_labels(probs, DOG_CLASSES)))
    paths = write_submission(frame, tmp_path / "sub.csv", hard, {"model": "r18"})
    lines = paths["csv"].read_text().splitlines()
    assert lines[0] == "id,label"
    assert lines[1] == f"1,{expected[0]:.6f}"
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, N_TEST + 1))
    back = read_and_validate(paths["csv"], DOGS, dogs_dir)
    np.testing.assert_allclose(back["label"], expected, atol=1e-6)


def test_rows_follow_the_sample_not_a_sort(dogs_dir, tmp_path):
    """Whatever order sampleSubmission.csv lists, the submission follows it, not numeric or string order."""
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    order = [3, 12, 1, 7, 2, 11, 4, 10, 5, 9, 6, 8]
    pd.DataFrame({"id": order, "label": 0}).to_csv(data / "sampleSubmission.csv", index=False)
    ids = list(range(1, N_TEST + 1))
    frame = build_submission(DOGS, data, ids, dog_probs(ids), DOG_CLASSES)
    assert frame["id"].tolist() == order
    np.testing.assert_allclose(frame["label"], dog_probs(order)[:, 1])


def test_clipping_bounds_probabilities(dogs_dir):
    ids = list(range(1, N_TEST + 1))
    probs = dog_probs(ids)
    probs[0], probs[1] = [1.0, 0.0], [0.0, 1.0]
    frame = build_submission(DOGS, dogs_dir, ids, probs, DOG_CLASSES)
    assert frame["label"][0] == pytest.approx(DEFAULT_CLIP)
    assert frame["label"][1] == pytest.approx(1 - DEFAULT_CLIP)
    assert frame["label"].between(DEFAULT_CLIP, 1 - DEFAULT_CLIP).all()
    custom = build_submission(DOGS, dogs_dir, ids, probs, DOG_CLASSES, clip=0.05)
    assert custom["label"].min() == pytest.approx(0.05)


def test_dogs_hard_labels_are_ints(dogs_dir, tmp_path):
    ids = list(range(N_TEST, 0, -1))
    probs = dog_probs(ids)
    frame = build_submission(DOGS, dogs_dir, ids, probs, DOG_CLASSES, hard=True)
    assert pd.api.types.is_integer_dtype(frame["label"])
    expected = (dog_probs(list(range(1, N_TEST + 1)))[:, 1] >= 0.5).astype(int)
    assert frame["label"].tolist() == expected.tolist()
    assert set(expected) == {0, 1}
    paths = write_submission(frame, tmp_path / "hard.csv", frame["label"].tolist(), {})
    assert paths["csv"].read_text().splitlines()[1] == f"1,{expected[0]}"
    read_and_validate(paths["csv"], DOGS, dogs_dir)


def test_cifar_class_names(cifar_dir, tmp_path):
    ids = sorted(range(1, N_TEST + 1), key=str)
    frame = build_submission(CIFAR, cifar_dir, ids, cifar_probs(ids), CIFAR_CLASSES)
    assert frame["id"].tolist() == list(range(1, N_TEST + 1))
    assert frame["label"].tolist() == [CIFAR_CLASSES[i % 10] for i in range(1, N_TEST + 1)]
    paths = write_submission(frame, tmp_path / "cifar.csv", frame["label"].tolist(), {})
    assert paths["csv"].read_text().splitlines()[:2] == ["id,label", f"1,{CIFAR_CLASSES[1]}"]
    read_and_validate(paths["csv"], CIFAR, cifar_dir)


# ---- res.csv and sidecar --------------------------------------------------------------------------
def test_res_csv_headerless_hard_labels(dogs_dir, cifar_dir, tmp_path):
    ids = list(np.random.default_rng(2).permutation(range(1, N_TEST + 1)))
    probs = dog_probs(ids)
    frame = build_submission(DOGS, dogs_dir, ids, probs, DOG_CLASSES)
    paths = write_submission(
        frame, tmp_path / "d" / "sub.csv", dict(zip(ids, DOGS.hard_labels(probs, DOG_CLASSES))), {}
    )
    assert paths["res"] == tmp_path / "d" / "res.csv"
    lines = paths["res"].read_text().splitlines()
    p_dog = dog_probs(list(range(1, N_TEST + 1)))[:, 1]
    assert lines == [f"{i},{int(p >= 0.5)}" for i, p in zip(range(1, N_TEST + 1), p_dog)]

    frame = build_submission(CIFAR, cifar_dir, ids, cifar_probs(ids), CIFAR_CLASSES)
    paths = write_submission(frame, tmp_path / "c" / "sub.csv", frame["label"].tolist(), {})
    lines = paths["res"].read_text().splitlines()
    assert len(lines) == N_TEST and not lines[0].startswith("id,")
    assert lines[0] == f"1,{CIFAR_CLASSES[1]}"


def test_misaligned_hard_labels_refused_and_nothing_written(dogs_dir, tmp_path):
    ids = list(range(N_TEST, 0, -1))
    probs = dog_probs(ids)
    frame = build_submission(DOGS, dogs_dir, ids, probs, DOG_CLASSES)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CompetitionError, match="row order"):
        write_submission(frame, out / "sub.csv", DOGS.hard_labels(probs, DOG_CLASSES), {})  # prediction order
    with pytest.raises(CompetitionError, match="one per row"):
        write_submission(frame, out / "sub.csv", [0, 1], {})
    assert files_in(out) == []


def test_sidecar_contents(dogs_dir, tmp_path):
    ids = list(range(1, N_TEST + 1))
    frame = build_submission(DOGS, dogs_dir, ids, dog_probs(ids), DOG_CLASSES)
    paths = write_submission(
        frame, tmp_path / "sub.csv", frame["label"].ge(0.5).astype(int).tolist(), {"folds": [0, 1]}
    )
    assert paths["sidecar"] == tmp_path / "sub.json"
    meta = json.loads(paths["sidecar"].read_text())
    assert meta["folds"] == [0, 1]
    assert meta["file"] == "sub.csv"
    assert meta["rows"] == N_TEST
    assert meta["sha256"] == hashlib.sha256(paths["csv"].read_bytes()).hexdigest()
    assert datetime.fromisoformat(meta["created"]).tzinfo is not None
    assert files_in(tmp_path) == ["res.csv", "sub.csv", "sub.json"]


def test_failed_write_leaves_nothing(dogs_dir, tmp_path):
    ids = list(range(1, N_TEST + 1))
    frame = build_submission(DOGS, dogs_dir, ids, dog_probs(ids), DOG_CLASSES)
    circular: dict = {}
    circular["self"] = circular  # json.dumps fails after the two CSVs were written to temp files
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="Circular"):
        write_submission(frame, out / "sub.csv", frame["label"].ge(0.5).astype(int).tolist(), circular)
    assert files_in(out) == []


# ---- validation failures --------------------------------------------------------------------------
def valid_dogs_frame() -> pd.DataFrame:
    ids = list(range(1, N_TEST + 1))
    return pd.DataFrame({"id": ids, "label": dog_probs(ids)[:, 1]})


def mutate(kind: str) -> pd.DataFrame:
    frame = valid_dogs_frame()
    if kind == "header":
        return frame.rename(columns={"label": "dog"})
    if kind == "missing":
        return frame.drop(index=4).reset_index(drop=True)
    if kind == "extra":
        return pd.concat([frame, pd.DataFrame({"id": [99], "label": [0.5]})], ignore_index=True)
    if kind == "duplicate":
        frame.loc[5, "id"] = 3
        return frame
    if kind == "order":
        return frame.iloc[[1, 0, *range(2, N_TEST)]].reset_index(drop=True)
    if kind == "nan":
        frame.loc[6, "label"] = np.nan
        return frame
    if kind == "range":
        frame.loc[7, "label"] = 1.5
        return frame
    if kind == "rows":
        return frame.iloc[:-2]
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, fragments",
    [
        ("header", ["'id,dog'", "'id,label'"]),
        ("missing", ["missing: 5", "11 rows", "has 12"]),
        ("extra", ["not in sampleSubmission.csv: 99", "13 rows"]),
        ("duplicate", ["1 id(s) of", "missing: 6", "duplicated id(s): 3 (x2)"]),
        ("order", ["order", "line 2 has id 2", "has 1 there"]),
        ("nan", ["NaN label for id(s) 7"]),
        ("range", ["[0, 1]", "8 (1.5)"]),
        ("rows", ["10 rows", "has 12", "missing: 11, 12"]),
    ],
)
def test_validation_failures_name_the_problem(dogs_dir, kind, fragments):
    sample = DOGS.read_sample_submission(dogs_dir)
    with pytest.raises(CompetitionError) as info:
        validate_submission(mutate(kind), sample, DOGS, DOG_CLASSES)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_hard_validation_wants_integers(dogs_dir):
    sample = DOGS.read_sample_submission(dogs_dir)
    frame = valid_dogs_frame()
    with pytest.raises(CompetitionError, match="integers 0, 1"):
        validate_submission(frame, sample, DOGS, DOG_CLASSES, hard=True)
    frame["label"] = (frame["label"] >= 0.5).astype(int)
    validate_submission(frame, sample, DOGS, DOG_CLASSES, hard=True)
    frame.loc[0, "label"] = 2
    with pytest.raises(CompetitionError, match=r"1 \(2\)"):
        validate_submission(frame, sample, DOGS, DOG_CLASSES, hard=True)


def test_unknown_class_name(cifar_dir):
    sample = CIFAR.read_sample_submission(cifar_dir)
    frame = pd.DataFrame({"id": range(1, N_TEST + 1), "label": "cat"})
    validate_submission(frame, sample, CIFAR, CIFAR_CLASSES)
    frame.loc[2, "label"] = "kitten"
    with pytest.raises(CompetitionError, match=r"unknown class name.*3 \('kitten'\)"):
        validate_submission(frame, sample, CIFAR, CIFAR_CLASSES)


def test_string_ids_match_numeric_sample_ids(dogs_dir):
    frame = valid_dogs_frame()
    frame["id"] = frame["id"].astype(str)
    validate_submission(frame, DOGS.read_sample_submission(dogs_dir), DOGS, DOG_CLASSES)


BUILD_FAILURES = {
    "missing id": (lambda ids, p: (ids[:-1], p[:-1]), "missing: 12"),
    "extra id": (lambda ids, p: (ids + [99], np.vstack([p, p[:1]])), "not in sampleSubmission.csv: 99"),
    "duplicate id": (lambda ids, p: (ids[:-1] + [1], p), "duplicated id(s): 1 (x2)"),
    "wrong row count": (lambda ids, p: (ids[:5], p[:5]), "5 rows"),
    "nan": (
        lambda ids, p: (ids, np.where(np.arange(len(ids))[:, None] == 3, np.nan, p)),
        "NaN label for id(s) 4",
    ),
    "out of range": (lambda ids, p: (ids, p * 3), "outside [0, 1]"),
    "shape": (lambda ids, p: (ids, p[:, :1]), "shape"),
}


@pytest.mark.parametrize("case", sorted(BUILD_FAILURES))
def test_build_failures_write_nothing(dogs_dir, tmp_path, case):
    change, fragment = BUILD_FAILURES[case]
    ids = list(range(1, N_TEST + 1))
    ids, probs = change(ids, dog_probs(ids))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CompetitionError) as info:
        frame = build_submission(DOGS, dogs_dir, ids, probs, DOG_CLASSES)
        write_submission(frame, out / "sub.csv", DOGS.hard_labels(probs, DOG_CLASSES), {})
    assert fragment in str(info.value)
    assert files_in(out) == []


def test_build_wrong_header_and_unknown_class_write_nothing(cifar_dir, tmp_path):
    ids = list(range(1, N_TEST + 1))
    out = tmp_path / "out"
    out.mkdir()
    renamed = [("kitten" if c == "cat" else c) for c in CIFAR_CLASSES]
    probs = cifar_probs(ids)  # id 3 and 13 -> class 3, "kitten" here
    with pytest.raises(CompetitionError, match="unknown: kitten; missing: cat"):
        write_submission(build_submission(CIFAR, cifar_dir, ids, probs, renamed), out / "s.csv", [], {})

    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"ImageId": ids, "Label": "cat"}).to_csv(data / "sampleSubmission.csv", index=False)
    with pytest.raises(CompetitionError, match="'id,label' but sampleSubmission.csv has 'ImageId,Label'"):
        write_submission(build_submission(CIFAR, data, ids, probs, CIFAR_CLASSES), out / "s.csv", [], {})
    assert files_in(out) == []


# ---- re-reading -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe\x00\x81\x00\x00garbage\x00", b"id,label\n1,0.5,3,4,5\n2,0.5\n", b'id,label\n1,"0.5\n'],
)
def test_read_and_validate_rejects_corrupt_csv(dogs_dir, tmp_path, content):
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    with pytest.raises(CompetitionError, match="broken.csv"):
        read_and_validate(path, DOGS, dogs_dir)


def test_read_and_validate_missing_file_and_wrong_order(dogs_dir, tmp_path):
    with pytest.raises(CompetitionError, match="not found"):
        read_and_validate(tmp_path / "nope.csv", DOGS, dogs_dir)
    path = tmp_path / "sorted_as_text.csv"
    frame = valid_dogs_frame()
    frame.iloc[sorted(range(N_TEST), key=lambda k: str(k + 1))].to_csv(path, index=False)
    with pytest.raises(CompetitionError, match="sorted_as_text.csv: ids are not in the order"):
        read_and_validate(path, DOGS, dogs_dir)


# ---- credentials ----------------------------------------------------------------------------------
@pytest.fixture
def no_credentials(monkeypatch, tmp_path) -> Path:
    """A fake home without any Kaggle credentials, and no KAGGLE_* variables."""
    import os

    for key in list(os.environ):
        if key.startswith("KAGGLE_") or key == "XDG_CONFIG_HOME":
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_credentials_none(no_credentials):
    assert find_kaggle_credentials() is None
    (no_credentials / ".kaggle").mkdir()
    (no_credentials / ".kaggle" / "access_token").write_text("  \n")  # empty token: not credentials
    (no_credentials / ".kaggle" / "kaggle.json").write_text('{"username": "me"}')  # no key
    assert find_kaggle_credentials() is None


def test_credentials_sources_in_order(no_credentials, monkeypatch):
    kaggle_dir = no_credentials / ".kaggle"
    kaggle_dir.mkdir()
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert find_kaggle_credentials() == "KAGGLE_USERNAME and KAGGLE_KEY environment variables"
    (kaggle_dir / "kaggle.json").write_text('{"username": "me", "key": "k"}')
    assert find_kaggle_credentials() == str(kaggle_dir / "kaggle.json")
    (kaggle_dir / "access_token").write_text("tok\n")
    assert find_kaggle_credentials() == str(kaggle_dir / "access_token")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok")
    assert find_kaggle_credentials() == "KAGGLE_API_TOKEN environment variable"


def test_credentials_kaggle_config_dir(no_credentials, monkeypatch, tmp_path):
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "kaggle.json").write_text('{"username": "me", "key": "k"}')
    assert find_kaggle_credentials() is None
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    assert find_kaggle_credentials() == str(config / "kaggle.json")
    # explicit arguments instead of the live environment
    assert find_kaggle_credentials(env={}, home=no_credentials) is None
    assert find_kaggle_credentials(env={"KAGGLE_CONFIG_DIR": str(config)}, home=no_credentials) == str(
        config / "kaggle.json"
    )


# ---- submit ---------------------------------------------------------------------------------------
class FakeKaggleApi:
    calls: list = []
    response_message = "Successfully submitted to Dogs vs. Cats Redux"

    def authenticate(self) -> None:
        self.calls.append(("authenticate",))

    def competition_submit(self, file_name: str, message: str, competition: str) -> types.SimpleNamespace:
        assert Path(file_name).is_file()
        self.calls.append(("submit", file_name, message, competition))
        return types.SimpleNamespace(message=self.response_message)


@pytest.fixture
def fake_kaggle(monkeypatch):
    """The official client replaced in sys.modules, so `from kaggle.api.kaggle_api_extended import ...` finds it."""
    module = types.ModuleType("kaggle.api.kaggle_api_extended")

    class Api(FakeKaggleApi):
        calls: list = []

    module.KaggleApi = Api
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    return Api


@pytest.fixture
def written(dogs_dir, tmp_path) -> Path:
    ids = list(range(1, N_TEST + 1))
    frame = build_submission(DOGS, dogs_dir, ids, dog_probs(ids), DOG_CLASSES)
    return write_submission(
        frame, tmp_path / "sub" / "r18.csv", frame["label"].ge(0.5).astype(int).tolist(), {}
    )["csv"]


def test_submit_dry_run_needs_no_credentials(no_credentials, fake_kaggle, written, dogs_dir, capsys):
    info = submit(written, "resnet18 5 folds", DOGS, dogs_dir, dry_run=True)
    out = capsys.readouterr().out
    assert DOGS.slug in out and "Dry run" in out and "none found" in out
    assert info["slug"] == "dogs-vs-cats-redux-kernels-edition"
    assert info["rows"] == N_TEST
    assert info["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    assert fake_kaggle.calls == []
    assert "uploads" not in json.loads(written.with_suffix(".json").read_text())


def test_submit_without_credentials_explains_how(no_credentials, fake_kaggle, written, dogs_dir):
    with pytest.raises(CompetitionError) as info:
        submit(written, "resnet18", DOGS, dogs_dir)
    message = str(info.value)
    for hint in (
        "KAGGLE_API_TOKEN",
        "~/.kaggle/access_token",
        "kaggle.json",
        "KAGGLE_CONFIG_DIR",
        "KAGGLE_USERNAME",
        "KAGGLE_KEY",
        "https://www.kaggle.com/settings",
        "Create New Token",
    ):
        assert hint in message
    assert fake_kaggle.calls == []


def test_submit_uploads_and_records(no_credentials, fake_kaggle, written, dogs_dir, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok")
    info = submit(written, "resnet18 5 folds", DOGS, dogs_dir)
    assert fake_kaggle.calls == [
        ("authenticate",),
        ("submit", str(written), "resnet18 5 folds", "dogs-vs-cats-redux-kernels-edition"),
    ]
    assert info["result"] == FakeKaggleApi.response_message
    submit(written, "second", DOGS, dogs_dir)
    meta = json.loads(written.with_suffix(".json").read_text())
    assert meta["rows"] == N_TEST  # what write_submission recorded is kept
    assert [u["message"] for u in meta["uploads"]] == ["resnet18 5 folds", "second"]
    first = meta["uploads"][0]
    assert first["slug"] == DOGS.slug and first["result"] == FakeKaggleApi.response_message
    assert first["sha256"] == meta["sha256"]
    datetime.fromisoformat(first["time"])
    assert "Submitted" in capsys.readouterr().out


def test_submit_failed_upload_not_recorded(no_credentials, fake_kaggle, written, dogs_dir, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok")
    fake_kaggle.response_message = "Could not submit to competition"
    with pytest.raises(CompetitionError, match="failed"):
        submit(written, "resnet18", DOGS, dogs_dir)
    assert "uploads" not in json.loads(written.with_suffix(".json").read_text())


def test_submit_checks_the_file_before_uploading(no_credentials, fake_kaggle, written, dogs_dir, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok")
    lines = written.read_text().splitlines()
    written.write_text("\n".join(lines[:-1]) + "\n")  # last row lost
    with pytest.raises(CompetitionError, match="missing: 12"):
        submit(written, "resnet18", DOGS, dogs_dir)
    assert fake_kaggle.calls == []


def test_submit_refuses_imagefolder(tmp_path, fake_kaggle):
    with pytest.raises(CompetitionError, match="not a Kaggle competition"):
        submit(tmp_path / "sub.csv", "x", get_competition("imagefolder"), tmp_path, dry_run=True)
    assert fake_kaggle.calls == []


def test_submit_names_a_missing_kaggle_dependency(no_credentials, written, dogs_dir, monkeypatch, tmp_path):
    """kaggle 2.2.4 imports `six` without declaring it: the error must name the real culprit."""
    package = tmp_path / "fakesite" / "kaggle"
    (package / "api").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "api" / "__init__.py").write_text("")
    (package / "api" / "kaggle_api_extended.py").write_text("import six_not_installed_here\n")
    for name in [m for m in sys.modules if m == "kaggle" or m.startswith("kaggle.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path / "fakesite"))
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok")
    try:
        with pytest.raises(
            CompetitionError, match="needs 'six_not_installed_here'.*pip install six_not_installed_here"
        ):
            submit(written, "resnet18", DOGS, dogs_dir)
    finally:  # drop the fake packages; monkeypatch then puts back whatever kaggle modules were loaded before
        for name in [m for m in sys.modules if m == "kaggle" or m.startswith("kaggle.")]:
            del sys.modules[name]
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", None)  # kaggle itself absent
    with pytest.raises(CompetitionError, match="pip install kaggle==2.2.4"):
        submit(written, "resnet18", DOGS, dogs_dir)
