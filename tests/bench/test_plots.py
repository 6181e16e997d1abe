"""Figures: one colour per method, the same in every figure."""

from matplotlib.colors import to_hex

from hessopt.bench.methods import all_methods
from hessopt.bench.render.plots import method_colors


def test_every_method_of_the_registry_gets_its_own_colour():
    names = [m.name for m in all_methods()]
    colors = {to_hex(c) for c in method_colors(names).values()}
    assert len(colors) == len(names)
