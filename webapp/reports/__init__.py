"""Reports of a comparison: one plain, JSON-able document per experiment (or per runs picked across
experiments) that every format is made from (HTML, PDF, CSV, JSON, Markdown) with the comparison core's
figures, tables and samples grid; and its import, which turns a document back into an experiment."""
