"""Build, check and write Kaggle submissions; a file is written only once it matches sampleSubmission.csv.

Kaggle rejects (or, worse, silently mis-scores) a file whose header, ids, order or values differ from
the sample, and only after an upload that counts against the daily limit; every check here happens first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from competition.atomic import atomic_path
from competition.competitions.base import Competition, parse_id
from competition.errors import CompetitionError

# Log loss charges -log(p) for the true class: a confident mistake at p=1e-15 costs ~34.5, enough to
# undo hundreds of good answers, while clipping at 1e-3 caps it at ~6.9 and costs a right answer at most
# -log(0.999) = 0.001. Competitions scored on hard labels ignore it.
DEFAULT_CLIP = 1e-3
# Six decimals keep any clip >= 1e-6 exact, so what Kaggle scores is what was validated.
FLOAT_FORMAT = "%.6f"
RES_CSV = "res.csv"  # the origins' format: headerless `id,label` with hard labels
_SHOW = 5  # how many ids an error lists before "and N more"


# ---- ids ------------------------------------------------------------------------------------------
def _norm_id(value: object) -> object:
    """Compare ids as numbers where they are numbers: 7, 7.0, '7' and np.int64(7) are the same image."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return parse_id(str(value).strip())


def _few(values: Sequence) -> str:
    shown = ", ".join(map(str, values[:_SHOW]))
    return shown + (f" (and {len(values) - _SHOW} more)" if len(values) > _SHOW else "")


def _id_problems(got: list, want: list, what: str, sample_name: str) -> list[str]:
    """Why the ids `got` are not exactly the ids `want`: count, missing, extra and repeated ids."""
    problems = []
    if len(got) != len(want):
        problems.append(f"{what} has {len(got)} rows, {sample_name} has {len(want)} (one per test image)")
    got_set, want_set = set(got), set(want)
    missing = [i for i in want if i not in got_set]
    extra = [i for i in dict.fromkeys(got) if i not in want_set]
    counts = pd.Series(got, dtype=object).value_counts()
    repeated = [f"{i} (x{n})" for i, n in counts[counts > 1].items()]
    if missing:
        problems.append(f"{len(missing)} id(s) of {sample_name} missing: {_few(missing)}")
    if extra:
        problems.append(f"{len(extra)} id(s) not in {sample_name}: {_few(extra)}")
    if repeated:
        problems.append(f"duplicated id(s): {_few(repeated)}")
    return problems


# ---- validation -----------------------------------------------------------------------------------
def _numeric_labels(competition: Competition, classes: list[str], hard: bool) -> bool:
    """Whether this competition submits numbers (probabilities or 0/1) rather than class names.

    Asked of the competition's own `submission_frame`, so that no competition name is hard-coded here.
    """
    probe = competition.submission_frame(
        [0], np.full((1, len(classes)), 1 / len(classes)), classes, hard=hard
    )
    return all(pd.api.types.is_numeric_dtype(probe[c]) for c in probe.columns[1:])


def validate_submission(
    frame: pd.DataFrame,
    sample: pd.DataFrame,
    competition: Competition,
    classes: list[str],
    hard: bool = False,
    *,
    source: str | Path = "submission",
) -> None:
    """Raise CompetitionError naming the first thing that would make Kaggle reject or mis-score `frame`."""
    sample_name = competition.sample_submission
    if list(map(str, frame.columns)) != list(map(str, sample.columns)):
        raise CompetitionError(
            f"{source}: header is {','.join(map(str, frame.columns))!r} but {sample_name} has "
            f"{','.join(map(str, sample.columns))!r}; the columns must match it exactly, in that order."
        )
    id_col, value_cols = frame.columns[0], list(frame.columns[1:])
    empty_ids = [i + 2 for i in np.flatnonzero(frame[id_col].isna().to_numpy())]
    if empty_ids:
        raise CompetitionError(f"{source}: empty id on CSV line(s) {_few(empty_ids)}; every row needs an id.")

    got = [_norm_id(v) for v in frame[id_col]]
    want = [_norm_id(v) for v in sample[sample.columns[0]]]
    problems = _id_problems(got, want, str(source), sample_name)
    if problems:
        raise CompetitionError(
            "; ".join(problems) + f". Predict exactly the test images listed in {sample_name}."
        )
    if got != want:
        k = next(k for k, (g, w) in enumerate(zip(got, want)) if g != w)
        raise CompetitionError(
            f"{source}: ids are not in the order of {sample_name}: CSV line {k + 2} has id {got[k]}, "
            f"{sample_name} has {want[k]} there. Sort the rows in the sample's order (build_submission does)."
        )

    ids = np.asarray(got, dtype=object)
    for col in value_cols:
        values = frame[col]
        blank = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
        if blank.any():
            raise CompetitionError(f"{source}: empty or NaN {col} for id(s) {_few(list(ids[blank]))}.")

    numeric = _numeric_labels(competition, classes, hard)
    for col in value_cols:
        values = frame[col]
        if numeric and hard:
            allowed = list(range(len(classes)))
            bad = (
                ~values.isin(allowed).to_numpy()
                if pd.api.types.is_integer_dtype(values)
                else np.ones(len(values), bool)
            )
            if bad.any():
                shown = [f"{i} ({v!r})" for i, v in zip(ids[bad], values[bad])]
                raise CompetitionError(
                    f"{source}: hard {col} must be the integers {', '.join(map(str, allowed))} "
                    f"({', '.join(f'{k} = {c}' for k, c in enumerate(classes))}); got {_few(shown)}."
                )
        elif numeric:
            number = pd.to_numeric(values, errors="coerce")
            bad = (number.isna() | (number < 0) | (number > 1)).to_numpy()
            if bad.any():
                shown = [f"{i} ({v!r})" for i, v in zip(ids[bad], values[bad])]
                raise CompetitionError(
                    f"{source}: {col} must be a probability in [0, 1]; got {_few(shown)}. "
                    f"Submit softmax outputs, not logits or class names."
                )
        else:
            bad = ~values.isin(classes).to_numpy()
            if bad.any():
                shown = [f"{i} ({v!r})" for i, v in zip(ids[bad], values[bad])]
                raise CompetitionError(
                    f"{source}: unknown class name(s) in {col}: {_few(shown)}. Valid: {', '.join(classes)}."
                )


# ---- build ----------------------------------------------------------------------------------------
def build_submission(
    competition: Competition,
    data_dir: Path,
    ids: Sequence,
    probs: np.ndarray,
    classes: list[str],
    hard: bool = False,
    clip: float = DEFAULT_CLIP,
) -> pd.DataFrame:
    """The validated submission for `probs` (one row per id, columns in `classes` order), in sample order."""
    ids = list(ids)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape != (len(ids), len(classes)):
        raise CompetitionError(
            f"Predictions have shape {probs.shape}; expected ({len(ids)} ids, {len(classes)} classes: "
            f"{', '.join(classes)})."
        )
    if not 0 <= clip < 0.5:
        raise CompetitionError(
            f"clip must be in [0, 0.5), got {clip}: it bounds probabilities to [clip, 1 - clip]."
        )
    # Clipping would hide logits or unnormalised scores: catch them before it does.
    out_of_range = np.flatnonzero(((probs < 0) | (probs > 1)).any(axis=1))
    if len(out_of_range):
        raise CompetitionError(
            f"Probabilities outside [0, 1] for id(s) {_few([ids[i] for i in out_of_range])}: "
            f"pass softmax outputs, not logits."
        )

    known = competition.classes(data_dir)
    if sorted(classes) != sorted(known):
        raise CompetitionError(
            f"The model's classes ({', '.join(classes)}) are not those of {competition.name} ({', '.join(known)}): "
            f"unknown: {', '.join(sorted(set(classes) - set(known))) or '-'}; "
            f"missing: {', '.join(sorted(set(known) - set(classes))) or '-'}. Was it trained for another competition?"
        )
    frame = competition.submission_frame(ids, probs, classes, hard=hard, clip=clip)
    sample = competition.read_sample_submission(data_dir)
    sample_name = competition.sample_submission
    got = [_norm_id(v) for v in frame.iloc[:, 0]]
    want = [_norm_id(v) for v in sample.iloc[:, 0]]
    problems = _id_problems(got, want, "predictions", sample_name)
    if problems:
        raise CompetitionError(
            f"Predictions do not cover exactly the test ids of {Path(data_dir) / sample_name}: "
            + "; ".join(problems)
            + ". Predict every image of the test folder once (is the test folder complete?)."
        )
    # By position, never by sorting: string-sorted ids (1, 10, 100, 2, ...) would be the wrong order.
    position = {i: k for k, i in enumerate(got)}
    frame = frame.iloc[[position[i] for i in want]].reset_index(drop=True)
    frame[frame.columns[0]] = sample.iloc[:, 0].to_numpy()  # the sample's own id spelling and dtype
    validate_submission(frame, sample, competition, classes, hard)
    return frame


# ---- write ----------------------------------------------------------------------------------------
def _aligned_hard_labels(frame: pd.DataFrame, hard_labels: Sequence | Mapping) -> list:
    """Hard labels in the frame's row order, checked against the frame so a misaligned list cannot pass."""
    ids = [_norm_id(v) for v in frame.iloc[:, 0]]
    if isinstance(hard_labels, Mapping):
        by_id = {_norm_id(k): v for k, v in hard_labels.items()}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise CompetitionError(
                f"Hard labels missing for id(s) {_few(missing)}: res.csv needs one per test image."
            )
        labels = [by_id[i] for i in ids]
    else:
        labels = list(hard_labels)
        if len(labels) != len(frame):
            raise CompetitionError(
                f"{len(labels)} hard labels for {len(frame)} submission rows: res.csv needs one per row."
            )
    if frame.shape[1] == 2:
        values = frame.iloc[:, 1]
        if pd.api.types.is_numeric_dtype(values) and set(labels) <= {0, 1}:
            expected = (values.to_numpy(dtype=float) >= 0.5).astype(int).tolist()  # P(positive) -> 0/1
        elif pd.api.types.is_numeric_dtype(values):
            expected = labels  # not a binary probability: nothing to compare with
        else:
            expected = values.tolist()
        wrong = [i for i, a, b in zip(ids, labels, expected) if str(a) != str(b)]
        if wrong:
            raise CompetitionError(
                f"Hard labels disagree with the submission at id(s) {_few(wrong)}: pass them in the "
                f"submission's row order (sampleSubmission.csv order) or as a mapping id -> label."
            )
    return labels


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_submission(
    frame: pd.DataFrame, out_csv: Path, hard_labels: Sequence | Mapping, sidecar: dict
) -> dict[str, Path]:
    """Write the Kaggle CSV, `res.csv` and `<name>.json` beside it, all or none.

    `frame` is build_submission's output; `hard_labels` are in its row order or a mapping id -> label.
    """
    out_csv = Path(out_csv)
    paths = {"csv": out_csv, "res": out_csv.with_name(RES_CSV), "sidecar": out_csv.with_suffix(".json")}
    if len(set(paths.values())) < 3:
        raise CompetitionError(
            f"{out_csv}: pick another name; {RES_CSV} and {out_csv.stem}.json are written beside it."
        )
    labels = _aligned_hard_labels(frame, hard_labels)
    res = pd.DataFrame({"id": frame.iloc[:, 0].to_numpy(), "label": labels})
    # Nested: every temp file is complete before the first rename, and an error anywhere removes them all.
    with (
        atomic_path(paths["csv"]) as tmp_csv,
        atomic_path(paths["res"]) as tmp_res,
        atomic_path(paths["sidecar"]) as tmp_json,
    ):
        frame.to_csv(tmp_csv, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
        res.to_csv(tmp_res, index=False, header=False, lineterminator="\n")
        meta = {
            **sidecar,
            "file": out_csv.name,
            "res": RES_CSV,
            "rows": len(frame),
            "sha256": _sha256(tmp_csv),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        tmp_json.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return paths


# ---- re-read --------------------------------------------------------------------------------------
def read_and_validate(path: Path, competition: Competition, data_dir: Path) -> pd.DataFrame:
    """A submission CSV from disk, checked against the sample as Kaggle will see it."""
    path = Path(path)
    if not path.is_file():
        raise CompetitionError(f"Submission file not found: {path}.")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise CompetitionError(
            f"{path} is not a readable CSV ({e}). Regenerate it from the predictions."
        ) from e
    sample = competition.read_sample_submission(data_dir)
    # hard=False: for numeric labels [0, 1] also admits 0/1 hard labels, so either kind of file passes.
    validate_submission(frame, sample, competition, competition.classes(data_dir), source=path)
    return frame
