"""Figures and the HTML report, built from stored result files only (no models).

:mod:`~dejavu.report.collect` loads results, :mod:`~dejavu.report.plots` draws the
paper's figures, :mod:`~dejavu.report.html` writes ``report.html``.
"""
