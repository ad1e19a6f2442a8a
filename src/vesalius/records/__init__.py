"""Research records: each subject's history beside the images (the seeds' XPACS).

:class:`~vesalius.records.service.Records` is the service every protocol calls; the SQL lives in
:mod:`vesalius.index.records`.
"""
