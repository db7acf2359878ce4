"""scripts/mutation_score.py: mutmut's statuses become a score per module, equivalent mutants left out."""
from tests.conftest import load_script


def test_score_per_module_counts_timeouts_as_killed_and_leaves_out_equivalents(tmp_path):
    script = load_script("mutation_score")
    found = {"lib.a.x_f__mutmut_1": "killed", "lib.a.x_f__mutmut_2": "timeout", "lib.a.x_g__mutmut_1": "survived",
             "lib.a.xǁCǁm__mutmut_1": "survived", "lib.b.x_h__mutmut_1": "no tests"}
    assert script.module_of("lib.a.xǁCǁm__mutmut_1") == "lib/a.py"
    (tmp_path / "eq.txt").write_text("# why each is equivalent\nlib.a.x_g__mutmut_1  # same behaviour\n\n")
    equivalent = script.equivalents(tmp_path / "eq.txt")
    assert equivalent == {"lib.a.x_g__mutmut_1"} and script.equivalents(None) == set()
    lines = script.table(found, equivalent)
    assert lines[1].split() == ["lib/a.py", "4", "1", "2", "1", "0", "66.7%"]
    assert lines[2].split() == ["lib/b.py", "1", "0", "0", "0", "1", "0.0%"]
    assert lines[3].split() == ["total", "5", "1", "2", "1", "1", "50.0%"]
