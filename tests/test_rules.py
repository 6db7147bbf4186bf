"""One rule for include and exclude globs: relative path or file name, case ignored."""

from __future__ import annotations

import pytest
from imgrag.pipeline.candidates import Rules


@pytest.mark.parametrize(
    ("include", "exclude", "path", "wanted"),
    [
        (["*.jpg"], [], "a/B.JPG", True),  # include: case ignored
        (["a/*.png"], [], "A/x.png", True),  # include: the relative path counts too
        (["a/*.png"], [], "b/x.png", False),
        (["*.png"], ["RAW/*"], "raw/x.png", False),  # exclude: case ignored
        (["*.png"], ["x.PNG"], "deep/down/x.png", False),  # exclude: the file name counts
        (["*.png"], ["*/skip/*"], "a/skip/x.png", False),
        (["*.png"], ["*/skip/*"], "a/keep/x.png", True),
    ],
)
def test_include_and_exclude_match_path_or_name_ignoring_case(
    include: list[str], exclude: list[str], path: str, wanted: bool
) -> None:
    assert Rules(include=include, exclude=exclude).wants(path) is wanted
