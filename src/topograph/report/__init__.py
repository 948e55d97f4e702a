"""Reports and the figures in them: the one place where figures are drawn.

* :mod:`~topograph.report.html` — the self-contained ``report.html`` of a run folder, built from its saved
  artifacts (never from live pipeline objects).
* :mod:`~topograph.report.render` — PNG previews: a point cloud from two viewpoints, a colour-mapped height
  map with its scale bar.
* :mod:`~topograph.report.match_figures` — matches between two views, the match-count matrix.
* :mod:`~topograph.report.svg_charts` — inline SVG bar, line and histogram charts.
* :mod:`~topograph.report.distributions` — histogram + cumulative distribution over a batch's datasets.
* :mod:`~topograph.report.thumbnails` — input thumbnails.
"""
