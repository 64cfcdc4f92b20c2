"""A πRL run's ``metrics.jsonl`` when the run is resumed from a checkpoint.

A learner stopped after its last checkpoint has already logged the updates (and the evaluations of the
policy versions) that came after it; resumed, it does those updates again. So that the log reads as one
run, the records past the checkpoint are dropped before the resumed learner writes its first one, and
the resumed learner's clock starts where the checkpoint's update left it (``wall_s`` counts the time the
run trained, not the time it was stopped).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from lerobot_pirl.plot import read_metrics


def past_checkpoint(record: dict, update: int, policy_version: int) -> bool:
    """Whether a record describes what happened after the checkpoint of ``update`` / ``policy_version``:
    a later update, or an evaluation of a later policy version (evaluations of the checkpoint's own version
    or earlier are kept: they measured weights the resumed run has)."""
    if record.get("kind") == "update":
        return not isinstance(record.get("update"), int) or record["update"] > update
    if record.get("kind") == "eval":
        version = record.get("policy_version")
        return not isinstance(version, int) or version > policy_version
    return False


def wall_at_update(records: list[dict], update: int) -> float:
    """The ``wall_s`` a run had logged by the end of ``update`` (its latest update record up to it; 0.0
    without one)."""
    return max(
        (
            float(r["wall_s"])
            for r in records
            if r.get("kind") == "update"
            and isinstance(r.get("update"), int)
            and r["update"] <= update
            and isinstance(r.get("wall_s"), int | float)
        ),
        default=0.0,
    )


def trim_for_resume(path: Path, update: int, policy_version: int) -> list[dict]:
    """Drop the records of ``path`` past the checkpoint (:func:`past_checkpoint`; an unreadable line is
    dropped too), rewriting the file atomically; returns the records kept (none without a file)."""
    return keep_records(path, lambda r: not past_checkpoint(r, update, policy_version))


def keep_records(path: Path, keep: Callable[[dict], bool]) -> list[dict]:
    """Rewrite ``path`` atomically with only its records that ``keep`` accepts (an unreadable line is
    dropped); returns them (none without a file)."""
    if not path.is_file():
        return []
    kept = [r for r in read_metrics(path) if keep(r)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)
    return kept


def evaluated_versions(records: list[dict]) -> set[int]:
    """The policy versions the records hold an evaluation of (a resumed learner skips an actor's evaluation
    of one of them: a fresh actor evaluates the checkpoint's version again)."""
    return {
        r["policy_version"]
        for r in records
        if r.get("kind") == "eval" and isinstance(r.get("policy_version"), int)
    }
