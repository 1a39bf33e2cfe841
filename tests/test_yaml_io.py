"""core.yaml_io: what safe_load lets through and we refuse, and what we still read."""
import pytest

from core.yaml_io import MAX_EXPANDED_NODES, YamlError, parse_yaml


def test_anchors_shared_a_few_times_read_as_copies():
    data = parse_yaml("base: &lr {lr: 0.1, wd: 0}\nbackbone: *lr\nhead: {<<: *lr, lr: 0.2}\n")
    assert data == {"base": {"lr": 0.1, "wd": 0}, "backbone": {"lr": 0.1, "wd": 0}, "head": {"lr": 0.2, "wd": 0}}


def test_aliases_of_aliases_that_expand_past_the_limit_are_refused_before_building_them():
    # level i holds 10 aliases of level i - 1: 10^(levels) values once expanded, from 12 lines
    levels = 7
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    assert 10 ** levels > MAX_EXPANDED_NODES
    with pytest.raises(YamlError, match="expand to more than 1,000,000 values"):
        parse_yaml("\n".join(lines), where="bomb.yml")
    assert len(parse_yaml("\n".join(lines[:4]))["a3"]) == 10       # 10^4 values: a legitimate, if odd, file


def test_nesting_duplicate_keys_and_too_many_aliases_name_the_line():
    with pytest.raises(YamlError, match="deeper than 100 levels"):
        parse_yaml("a: " + "[" * 500 + "]" * 500)
    with pytest.raises(YamlError, match=r"duplicate key 'lr' \(first at line 1\)") as err:
        parse_yaml("lr: 1\nwd: 0\nlr: 2\n", where="recipe.yml")
    assert "recipe.yml line 3" in str(err.value)
    with pytest.raises(YamlError, match="more than 1000 aliases"):
        parse_yaml("a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]")
