"""The comparison's core, with no Django in it (in the style of Optuna's plotting): an info step on plain
data (`series`: metric names, downsampling, interpolation; `stats`: smoothing, intervals, bands, Pareto
fronts; `view`: the runs as the charts see them, the summary table, the samples grid, comparability
warnings), then a plot step (`figures`, one module per chart). `webapp.compare.loader` builds its input
from the database; the reports build it from their document."""
