"""Tests of hessopt._registry.Registry and of the two registries built on it (methods, problems)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import hessopt._registry as registry_mod
from hessopt._registry import Registry
from hessopt.bench import methods
from hessopt.problems import registry as problems


@dataclass(frozen=True)
class Item:
    name: str
    value: int = 0


def filled(*names: str) -> Registry[Item]:
    reg: Registry[Item] = Registry("widget")
    for i, n in enumerate(names):
        reg.register(Item(n, i))
    return reg


def test_names_and_items_keep_registration_order():
    reg = filled("zeta", "alpha", "mid")
    assert reg.names() == ["zeta", "alpha", "mid"]  # not sorted
    assert [it.value for it in reg.all()] == [0, 1, 2]
    assert list(reg) == ["zeta", "alpha", "mid"] and len(reg) == 3
    # the lists are copies: mutating them leaves the registry alone
    reg.names().append("x")
    reg.all().clear()
    assert reg.names() == ["zeta", "alpha", "mid"] and len(reg.all()) == 3


def test_register_returns_the_item_and_get_finds_it():
    reg: Registry[Item] = Registry("widget")
    it = Item("a", 7)
    assert reg.register(it) is it
    assert reg.get("a") is it and reg["a"] is it and "a" in reg and "b" not in reg


def test_duplicate_name_raises_and_keeps_the_first_entry():
    reg = filled("a", "b")
    first = reg.get("a")
    expected = "widget 'a' is already registered; pass replace=True to overwrite it"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        reg.register(Item("a", 99))
    assert reg.get("a") is first and reg.names() == ["a", "b"]


def test_replace_overwrites_in_place():
    reg = filled("a", "b", "c")
    new = Item("b", 42)
    assert reg.register(new, replace=True) is new
    assert reg.get("b") is new
    assert reg.names() == ["a", "b", "c"]  # position kept, no duplicate
    # replace=True on a new name simply adds it at the end
    reg.register(Item("d"), replace=True)
    assert reg.names() == ["a", "b", "c", "d"]


def test_unknown_name_message_names_it_and_lists_the_choices_in_order():
    reg = filled("b", "a")
    with pytest.raises(ValueError) as info:
        reg.get("nosuch")
    assert str(info.value) == "unknown widget 'nosuch'; known widgets: b, a"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    custom: Registry[Item] = Registry("method", lookup_noun="neural-network method", known_label="known")
    custom.register(Item("adam"))
    with pytest.raises(ValueError, match=r"^unknown neural-network method 'x'; known: adam$"):
        custom.get("x")


def test_get_with_default_and_mapping_style_access():
    reg = filled("a")
    sentinel = object()
    assert reg.get("zz", sentinel) is sentinel and reg.get("zz", None) is None
    with pytest.raises(KeyError):
        reg["zz"]
    reg["b"] = Item("b", 5)  # unchecked set, appended
    reg["a"] = Item("a", 6)  # unchecked overwrite, position kept
    assert reg.names() == ["a", "b"] and reg.get("a").value == 6
    with pytest.raises(ValueError, match="key 'c' must equal the widget's name 'b'"):
        reg["c"] = Item("b")
    del reg["a"]
    assert reg.names() == ["b"]
    with pytest.raises(KeyError):
        del reg["a"]


def test_monkeypatch_setitem_installs_and_removes_an_entry():
    reg = filled("a")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(reg, "tmp", Item("tmp"))
        mp.setitem(reg, "a", Item("a", 100))
        assert reg.names() == ["a", "tmp"] and reg.get("a").value == 100
    assert reg.names() == ["a"] and reg.get("a").value == 0


def test_bad_noun_is_rejected():
    with pytest.raises(ValueError, match="noun must be a non-empty string"):
        Registry("")


def test_module_is_a_leaf():
    imported = []
    for node in ast.walk(ast.parse(Path(registry_mod.__file__).read_text())):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported.append(node.module or "")
    assert "typing" in imported  # the walk saw the imports
    assert not [m for m in imported if m.split(".")[0] == "hessopt"]


# -- the registries keep their public behaviour --------------------------------------------


@pytest.mark.parametrize(
    ("get", "names", "register", "dup_noun", "unknown_prefix"),
    [
        (
            methods.get_method,
            methods.method_names,
            methods.register,
            "method",
            "unknown method 'nosuch'; known methods: ",
        ),
        (
            problems.get_problem,
            problems.problem_names,
            problems.register_problem,
            "problem",
            "unknown problem 'nosuch'; known problems: ",
        ),
    ],
)
def test_module_wrappers_keep_their_messages(get, names, register, dup_noun, unknown_prefix):
    registered = names()
    assert registered, "the built-in entries are registered at import"
    with pytest.raises(ValueError) as info:
        get("nosuch")
    assert str(info.value) == unknown_prefix + ", ".join(registered)
    first = get(registered[0])
    with pytest.raises(ValueError) as info:
        register(first)
    assert str(info.value) == (
        f"{dup_noun} {registered[0]!r} is already registered; pass replace=True to overwrite it"
    )
    assert register(first, replace=True) is first and names() == registered


def test_all_functions_match_names():
    assert [m.name for m in methods.all_methods()] == methods.method_names()
    assert [p.name for p in problems.all_problems()] == problems.problem_names()
    assert methods.method_names()[:3] == ["adam", "adamw", "momentum"]
    assert problems.problem_names()[0] == "quadratic_deep"
