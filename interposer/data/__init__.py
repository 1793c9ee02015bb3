"""Files the package reads at run time, shipped in the wheel as package data.

``cnfs-interposer.rules.yaml`` is a link to the rule file ``python -m alerts``
generates for the chart (charts/interposer/rules/), so the chart and
``interposer stack`` load the same rules from one generated file; building
the wheel copies the file itself.
"""
