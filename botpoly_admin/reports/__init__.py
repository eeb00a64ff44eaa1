"""Reports: what the business and each tenant look like, as plain data.

``stats`` (the overview and a tenant's metrics), ``billing`` (the per-period report
and storage), ``dashboard`` (the dashboard and live-screen snapshots). SQL in, plain
values and dataclasses out: nothing here renders (``cli.views`` does) or writes.
"""
