"""Federation: the site indexer (push), the central index (receive, search), remote PACS.

- :mod:`.records`: the study record of seed 004, read and checked (pure functions).
- :mod:`.central`: the central index: site keys, pushes applied idempotently, search.
- :mod:`.indexer`: a site pushing its study records to the central index.
"""
