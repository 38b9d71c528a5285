"""scripts/sort_errors.py: the problem draw and the classification of a sorting answer's first wrong label."""

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import sort_errors  # noqa: E402


def test_problems_have_the_cell_lengths():
    for nums in sort_errors.problems(4, 6, 50, seed=1):
        assert len(nums) == 6 and max(len(str(x)) for x in nums) == 4


def test_classify_names_the_first_wrong_label():
    nums = [305, 7, 41, 41, 309]  # labels a..e; sorted: b, c, d, a, e
    assert sort_errors.classify(nums, "b,c,d,a,e") is None
    assert sort_errors.classify(nums, "b,d,c,a,e") == "an equal number (tie order)"
    assert sort_errors.classify(nums, "a,b,c,d,e") == "a number of another length"
    assert sort_errors.classify(nums, "b,c,d,e,a") == "same length, first differs at digit 2 from the top"
    assert sort_errors.classify([50, 10], "a,b") == "same length, first differs at digit 0 from the top"
    assert sort_errors.classify(nums, "b,c") == "too few or too many labels"
    assert sort_errors.classify(nums, "b,c,d,a,z") == "a label not in the problem"
    assert sort_errors.classify(nums, ValueError("no EOS")) == "no answer (error)"
