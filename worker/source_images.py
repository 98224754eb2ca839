"""Reading a study's images from the spool: their headers' view evidence, the chosen image's frozen
identity, and its decoded size against the pixel budget. A file that is gone or whose content is bad
makes the study unusable (or is noted and skipped); one the spool cannot serve now is transient."""

from __future__ import annotations

from typing import Any

from pydicom import Dataset, dcmread

from node.delivery.identity import IdentityError, freeze_identity
from worker.failures import SpoolUnavailable, UnusableStudy
from worker.pixel_budget import pixel_budget_problem
from worker.views import ViewCandidate, candidate_from_dataset


def read_candidates(instances: list[tuple[int, str]]) -> tuple[list[ViewCandidate], list[str]]:
    """View evidence of every instance whose header can be read, and a note per one that cannot."""
    candidates: list[ViewCandidate] = []
    problems: list[str] = []
    for instance_id, path in instances:
        try:
            header = dcmread(path, stop_before_pixels=True)
        except FileNotFoundError:
            problems.append(f"instance {instance_id}: file missing from the spool")
            continue
        except PermissionError as error:
            raise SpoolUnavailable(f"cannot read {path}: {error.strerror}") from error
        except OSError as error:
            if error.errno is None:  # pydicom's own read errors carry no errno: the content is bad
                problems.append(f"instance {instance_id}: not readable as DICOM ({type(error).__name__})")
                continue
            raise SpoolUnavailable(f"cannot read {path}: {error.strerror or error}") from error
        except Exception as error:  # pydicom raises many types for a damaged file
            problems.append(f"instance {instance_id}: not readable as DICOM ({type(error).__name__})")
            continue
        candidates.append(candidate_from_dataset(instance_id, header))
    return candidates, problems


def read_chosen_header(path: str) -> Dataset:
    """The chosen image's header (no pixels), read once for its pixel budget and its frozen identity."""
    try:
        return dcmread(path, stop_before_pixels=True)
    except FileNotFoundError as error:
        raise UnusableStudy("the chosen image left the spool before it was read") from error
    except OSError as error:
        raise SpoolUnavailable(f"cannot read {path}: {error.strerror or error}") from error


def frozen_identity(header: Dataset) -> dict[str, Any]:
    """The chosen image's patient, order and study, frozen for the report (see node.delivery.identity)."""
    try:
        return freeze_identity(header)
    except IdentityError as error:
        raise UnusableStudy(str(error)) from error


def check_pixel_budget(header: Dataset, max_bytes: int) -> None:
    """Refuse, before decoding, an image whose pixels would not fit the worker's memory budget."""
    problem = pixel_budget_problem(header, max_bytes)
    if problem is not None:
        raise UnusableStudy(problem)
